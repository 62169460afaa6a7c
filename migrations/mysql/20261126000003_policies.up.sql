CREATE TABLE IF NOT EXISTS policies (
  id                      VARCHAR(64)  NOT NULL,
  name                    VARCHAR(191) NOT NULL,
  enabled                 BOOLEAN      NOT NULL DEFAULT TRUE,
  vm_names                TEXT         NULL,
  vm_glob                 VARCHAR(255) NOT NULL DEFAULT '',
  agent_id                VARCHAR(64)  NULL,
  repository_id           VARCHAR(64)  NOT NULL,
  schedule                VARCHAR(255) NOT NULL,
  timezone                VARCHAR(64)  NOT NULL DEFAULT 'UTC',
  keep_last               INT          NOT NULL DEFAULT 0,
  keep_hourly             INT          NOT NULL DEFAULT 0,
  keep_daily              INT          NOT NULL DEFAULT 0,
  keep_weekly             INT          NOT NULL DEFAULT 0,
  keep_monthly            INT          NOT NULL DEFAULT 0,
  keep_yearly             INT          NOT NULL DEFAULT 0,
  full_every_incrementals INT          NOT NULL DEFAULT 0,
  full_every_days         INT          NOT NULL DEFAULT 0,
  last_run_at             DATETIME(6)  NULL,
  next_run_at             DATETIME(6)  NULL,
  created_at              DATETIME(6)  NOT NULL,
  updated_at              DATETIME(6)  NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY policies_name_uq (name),
  CONSTRAINT policies_repository_fk FOREIGN KEY (repository_id) REFERENCES repositories (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
--bun:split
ALTER TABLE backup_jobs ADD COLUMN policy_id VARCHAR(64) NULL;
--bun:split
CREATE INDEX backup_jobs_policy_idx ON backup_jobs (policy_id, created_at);
