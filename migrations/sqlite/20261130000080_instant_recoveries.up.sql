-- Instant-recovery sessions: a restore point served over NFS to an ESXi host, where the agent
-- of the source mounts it, registers the VM and boots it. pending is the action waiting for
-- the agent ('start', 'stop', 'migrate' or ''), claimed_at when the agent took it;
-- target_datastore the production datastore a migration moves the VM to.
CREATE TABLE IF NOT EXISTS instant_recoveries (
  id            TEXT NOT NULL PRIMARY KEY,
  backup_id     TEXT NOT NULL REFERENCES backup_jobs (id),
  agent_id      TEXT NOT NULL REFERENCES agents (id),
  source_name   TEXT NOT NULL,
  host          TEXT NOT NULL,
  name          TEXT NOT NULL,
  spec          TEXT NOT NULL,
  status        TEXT NOT NULL,
  pending       TEXT NOT NULL DEFAULT '',
  vm_ref        TEXT NULL,
  datastore_ref TEXT NULL,
  target_datastore TEXT NULL,
  error         TEXT NULL,
  claimed_at    TIMESTAMP NULL,
  finished_at   TIMESTAMP NULL,
  created_at    TIMESTAMP NOT NULL,
  updated_at    TIMESTAMP NOT NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS instant_recoveries_agent_pending_idx ON instant_recoveries (agent_id, pending);
--bun:split
CREATE INDEX IF NOT EXISTS instant_recoveries_status_idx ON instant_recoveries (status);
