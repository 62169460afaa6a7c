-- Copies being written into a repository. While its row is unexpired, a copy holds back garbage
-- collection's cutoff (to started_at) in the target and its indexes there are not orphans; the
-- copier renews expires_at as it goes, and a copier that dies stops renewing.
CREATE TABLE IF NOT EXISTS copy_writes (
  id             TEXT      NOT NULL PRIMARY KEY,
  backup_id      TEXT      NOT NULL REFERENCES backup_jobs (id) ON DELETE CASCADE,
  repository_id  TEXT      NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
  started_at     TIMESTAMP NOT NULL,
  expires_at     TIMESTAMP NOT NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS copy_writes_repository_idx ON copy_writes (repository_id, expires_at);
