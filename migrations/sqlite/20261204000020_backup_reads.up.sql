-- Reads of restore points served to clients (image downloads, file-level restores, restores run
-- from the command line). While its row is unexpired, a read keeps its backup from being deleted,
-- pruned or moved, and its copies from being removed; the reader renews expires_at as it goes,
-- and a reader that dies stops renewing.
CREATE TABLE IF NOT EXISTS backup_reads (
  id          TEXT      NOT NULL PRIMARY KEY,
  backup_id   TEXT      NOT NULL REFERENCES backup_jobs (id) ON DELETE CASCADE,
  started_at  TIMESTAMP NOT NULL,
  expires_at  TIMESTAMP NOT NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS backup_reads_backup_idx ON backup_reads (backup_id, expires_at);
