-- Instant-recovery sessions: a restore point served over NFS to an ESXi host, where the agent
-- of the source mounts it, registers the VM and boots it. pending is the action waiting for
-- the agent ('start', 'stop', 'migrate' or ''), claimed_at when the agent took it;
-- target_datastore the production datastore a migration moves the VM to.
CREATE TABLE IF NOT EXISTS instant_recoveries (
  id            VARCHAR(64)  NOT NULL,
  backup_id     VARCHAR(64)  NOT NULL,
  agent_id      VARCHAR(64)  NOT NULL,
  source_name   VARCHAR(255) NOT NULL,
  host          VARCHAR(255) NOT NULL,
  name          VARCHAR(255) NOT NULL,
  spec          TEXT         NOT NULL,
  status        VARCHAR(16)  NOT NULL,
  pending       VARCHAR(8)   NOT NULL DEFAULT '',
  vm_ref        VARCHAR(255) NULL,
  datastore_ref VARCHAR(255) NULL,
  target_datastore VARCHAR(255) NULL,
  error         TEXT         NULL,
  claimed_at    DATETIME(6)  NULL,
  finished_at   DATETIME(6)  NULL,
  created_at    DATETIME(6)  NOT NULL,
  updated_at    DATETIME(6)  NOT NULL,
  PRIMARY KEY (id),
  KEY instant_recoveries_agent_pending_idx (agent_id, pending),
  KEY instant_recoveries_status_idx (status),
  CONSTRAINT instant_recoveries_backup_fk FOREIGN KEY (backup_id) REFERENCES backup_jobs (id),
  CONSTRAINT instant_recoveries_agent_fk FOREIGN KEY (agent_id) REFERENCES agents (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
