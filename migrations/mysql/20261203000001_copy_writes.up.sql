-- Copies being written into a repository. While its row is unexpired, a copy holds back garbage
-- collection's cutoff (to started_at) in the target and its indexes there are not orphans; the
-- copier renews expires_at as it goes, and a copier that dies stops renewing.
CREATE TABLE IF NOT EXISTS copy_writes (
  id             VARCHAR(64)  NOT NULL,
  backup_id      VARCHAR(64)  NOT NULL,
  repository_id  VARCHAR(64)  NOT NULL,
  started_at     DATETIME(6)  NOT NULL,
  expires_at     DATETIME(6)  NOT NULL,
  PRIMARY KEY (id),
  KEY copy_writes_repository_idx (repository_id, expires_at),
  CONSTRAINT copy_writes_backup_fk FOREIGN KEY (backup_id) REFERENCES backup_jobs (id) ON DELETE CASCADE,
  CONSTRAINT copy_writes_repository_fk FOREIGN KEY (repository_id) REFERENCES repositories (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
