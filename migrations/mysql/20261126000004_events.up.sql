CREATE TABLE IF NOT EXISTS events (
  id             BIGINT       NOT NULL AUTO_INCREMENT,
  type           VARCHAR(32)  NOT NULL,
  occurred_at    DATETIME(6)  NOT NULL,
  vm_context_id  VARCHAR(191) NULL,
  vm_name        VARCHAR(255) NULL,
  agent_id       VARCHAR(64)  NULL,
  actor          VARCHAR(191) NOT NULL DEFAULT '',
  source_address VARCHAR(64)  NULL,
  outcome        VARCHAR(32)  NOT NULL DEFAULT '',
  details        TEXT         NULL,
  PRIMARY KEY (id),
  KEY events_occurred_idx (occurred_at, id),
  KEY events_type_occurred_idx (type, occurred_at, id),
  KEY events_vm_context_occurred_idx (vm_context_id, occurred_at, id),
  KEY events_vm_name_occurred_idx (vm_name, occurred_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
