CREATE TABLE IF NOT EXISTS policies (
  id                      TEXT    NOT NULL PRIMARY KEY,
  name                    TEXT    NOT NULL,
  enabled                 BOOLEAN NOT NULL DEFAULT TRUE,
  vm_names                TEXT    NULL,
  vm_glob                 TEXT    NOT NULL DEFAULT '',
  agent_id                TEXT    NULL,
  repository_id           TEXT    NOT NULL REFERENCES repositories (id),
  schedule                TEXT    NOT NULL,
  timezone                TEXT    NOT NULL DEFAULT 'UTC',
  keep_last               INTEGER NOT NULL DEFAULT 0,
  keep_hourly             INTEGER NOT NULL DEFAULT 0,
  keep_daily              INTEGER NOT NULL DEFAULT 0,
  keep_weekly             INTEGER NOT NULL DEFAULT 0,
  keep_monthly            INTEGER NOT NULL DEFAULT 0,
  keep_yearly             INTEGER NOT NULL DEFAULT 0,
  full_every_incrementals INTEGER NOT NULL DEFAULT 0,
  full_every_days         INTEGER NOT NULL DEFAULT 0,
  last_run_at             TIMESTAMP NULL,
  next_run_at             TIMESTAMP NULL,
  created_at              TIMESTAMP NOT NULL,
  updated_at              TIMESTAMP NOT NULL
);
--bun:split
CREATE UNIQUE INDEX IF NOT EXISTS policies_name_uq ON policies (name);
--bun:split
ALTER TABLE backup_jobs ADD COLUMN policy_id TEXT NULL;
--bun:split
CREATE INDEX IF NOT EXISTS backup_jobs_policy_idx ON backup_jobs (policy_id, created_at);
