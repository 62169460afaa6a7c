-- Copy policies: a policy of kind 'copy' copies the backups of its repository (repository_id,
-- the source) into target_repository_id on its schedule, and applies its retention to the
-- copies there. Each run is recorded in copy_runs.
ALTER TABLE policies ADD COLUMN target_repository_id VARCHAR(64) NULL;
--bun:split
CREATE TABLE IF NOT EXISTS copy_runs (
  id                   VARCHAR(64)  NOT NULL,
  policy_id            VARCHAR(64)  NOT NULL,
  from_repository_id   VARCHAR(64)  NOT NULL,
  to_repository_id     VARCHAR(64)  NOT NULL,
  status               VARCHAR(16)  NOT NULL,
  backups_copied       INT          NOT NULL DEFAULT 0,
  backups_present      INT          NOT NULL DEFAULT 0,
  backups_failed       INT          NOT NULL DEFAULT 0,
  copies_pruned        INT          NOT NULL DEFAULT 0,
  chunks_copied        BIGINT       NOT NULL DEFAULT 0,
  bytes_copied         BIGINT       NOT NULL DEFAULT 0,
  error                TEXT         NULL,
  started_at           DATETIME(6)  NOT NULL,
  finished_at          DATETIME(6)  NULL,
  PRIMARY KEY (id),
  KEY copy_runs_policy_idx (policy_id, started_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
