CREATE TABLE IF NOT EXISTS upload_sessions (
  id             VARCHAR(64)  NOT NULL,
  job_id         VARCHAR(64)  NOT NULL,
  disk_id        VARCHAR(64)  NOT NULL,
  agent_id       VARCHAR(64)  NOT NULL,
  repository_id  VARCHAR(64)  NOT NULL,
  type           VARCHAR(16)  NOT NULL,
  reason         VARCHAR(255) NOT NULL DEFAULT '',
  parent_job_id  VARCHAR(64)  NULL,
  base_change_id VARCHAR(255) NOT NULL DEFAULT '',
  change_id      VARCHAR(255) NOT NULL DEFAULT '',
  capacity_bytes BIGINT       NOT NULL,
  chunk_size     BIGINT       NOT NULL,
  slot_count     BIGINT       NOT NULL,
  status         VARCHAR(16)  NOT NULL,
  created_at     DATETIME(6)  NOT NULL,
  updated_at     DATETIME(6)  NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY upload_sessions_job_disk_uq (job_id, disk_id),
  KEY upload_sessions_status_idx (status),
  CONSTRAINT upload_sessions_job_fk FOREIGN KEY (job_id) REFERENCES backup_jobs (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
--bun:split
CREATE TABLE IF NOT EXISTS upload_slots (
  session_id VARCHAR(64) NOT NULL,
  slot       BIGINT      NOT NULL,
  digest     CHAR(64)    NOT NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (session_id, slot),
  CONSTRAINT upload_slots_session_fk FOREIGN KEY (session_id) REFERENCES upload_sessions (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
--bun:split
ALTER TABLE backup_jobs ADD COLUMN notes TEXT NULL;
