CREATE TABLE IF NOT EXISTS restore_jobs (
  id                TEXT      NOT NULL PRIMARY KEY,
  backup_id         TEXT      NOT NULL REFERENCES backup_jobs (id),
  agent_id          TEXT      NOT NULL REFERENCES agents (id),
  source_name       TEXT      NOT NULL,
  target_name       TEXT      NOT NULL,
  spec              TEXT      NOT NULL,
  status            TEXT      NOT NULL,
  cancel_requested  BOOLEAN   NOT NULL DEFAULT FALSE,
  phase             TEXT      NOT NULL DEFAULT '',
  vm_ref            TEXT      NULL,
  bytes_written     INTEGER   NOT NULL DEFAULT 0,
  bytes_total       INTEGER   NOT NULL DEFAULT 0,
  error             TEXT      NULL,
  claimed_at        TIMESTAMP NULL,
  heartbeat_at      TIMESTAMP NULL,
  finished_at       TIMESTAMP NULL,
  created_at        TIMESTAMP NOT NULL,
  updated_at        TIMESTAMP NOT NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS restore_jobs_agent_status_idx ON restore_jobs (agent_id, status);
--bun:split
CREATE INDEX IF NOT EXISTS restore_jobs_status_idx ON restore_jobs (status);
--bun:split
CREATE INDEX IF NOT EXISTS restore_jobs_created_idx ON restore_jobs (created_at);
