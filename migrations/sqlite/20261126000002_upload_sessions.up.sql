CREATE TABLE IF NOT EXISTS upload_sessions (
  id             TEXT    NOT NULL PRIMARY KEY,
  job_id         TEXT    NOT NULL REFERENCES backup_jobs (id) ON DELETE CASCADE,
  disk_id        TEXT    NOT NULL,
  agent_id       TEXT    NOT NULL,
  repository_id  TEXT    NOT NULL,
  type           TEXT    NOT NULL,
  reason         TEXT    NOT NULL DEFAULT '',
  parent_job_id  TEXT    NULL,
  base_change_id TEXT    NOT NULL DEFAULT '',
  change_id      TEXT    NOT NULL DEFAULT '',
  capacity_bytes INTEGER NOT NULL,
  chunk_size     INTEGER NOT NULL,
  slot_count     INTEGER NOT NULL,
  status         TEXT    NOT NULL,
  created_at     TIMESTAMP NOT NULL,
  updated_at     TIMESTAMP NOT NULL
);
--bun:split
CREATE UNIQUE INDEX IF NOT EXISTS upload_sessions_job_disk_uq ON upload_sessions (job_id, disk_id);
--bun:split
CREATE INDEX IF NOT EXISTS upload_sessions_status_idx ON upload_sessions (status);
--bun:split
CREATE TABLE IF NOT EXISTS upload_slots (
  session_id TEXT      NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
  slot       INTEGER   NOT NULL,
  digest     TEXT      NOT NULL,
  created_at TIMESTAMP NOT NULL,
  updated_at TIMESTAMP NOT NULL,
  PRIMARY KEY (session_id, slot)
);
--bun:split
ALTER TABLE backup_jobs ADD COLUMN notes TEXT NULL;
