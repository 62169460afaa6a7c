CREATE TABLE IF NOT EXISTS backup_copies (
  backup_id      TEXT      NOT NULL REFERENCES backup_jobs (id) ON DELETE CASCADE,
  repository_id  TEXT      NOT NULL REFERENCES repositories (id),
  chunks_copied  INTEGER   NOT NULL DEFAULT 0,
  bytes_copied   INTEGER   NOT NULL DEFAULT 0,
  copied_at      TIMESTAMP NOT NULL,
  PRIMARY KEY (backup_id, repository_id)
);
--bun:split
CREATE INDEX IF NOT EXISTS backup_copies_repository_idx ON backup_copies (repository_id);
