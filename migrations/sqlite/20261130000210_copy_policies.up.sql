-- Copy policies: a policy of kind 'copy' copies the backups of its repository (repository_id,
-- the source) into target_repository_id on its schedule, and applies its retention to the
-- copies there. Each run is recorded in copy_runs.
ALTER TABLE policies ADD COLUMN target_repository_id TEXT NULL;
--bun:split
CREATE TABLE IF NOT EXISTS copy_runs (
  id                   TEXT      NOT NULL PRIMARY KEY,
  policy_id            TEXT      NOT NULL,
  from_repository_id   TEXT      NOT NULL,
  to_repository_id     TEXT      NOT NULL,
  status               TEXT      NOT NULL,
  backups_copied       INTEGER   NOT NULL DEFAULT 0,
  backups_present      INTEGER   NOT NULL DEFAULT 0,
  backups_failed       INTEGER   NOT NULL DEFAULT 0,
  copies_pruned        INTEGER   NOT NULL DEFAULT 0,
  chunks_copied        INTEGER   NOT NULL DEFAULT 0,
  bytes_copied         INTEGER   NOT NULL DEFAULT 0,
  error                TEXT      NULL,
  started_at           TIMESTAMP NOT NULL,
  finished_at          TIMESTAMP NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS copy_runs_policy_idx ON copy_runs (policy_id, started_at);
