CREATE TABLE IF NOT EXISTS backup_copies (
  backup_id      VARCHAR(64)  NOT NULL,
  repository_id  VARCHAR(64)  NOT NULL,
  chunks_copied  BIGINT       NOT NULL DEFAULT 0,
  bytes_copied   BIGINT       NOT NULL DEFAULT 0,
  copied_at      DATETIME(6)  NOT NULL,
  PRIMARY KEY (backup_id, repository_id),
  KEY backup_copies_repository_idx (repository_id),
  CONSTRAINT backup_copies_backup_fk FOREIGN KEY (backup_id) REFERENCES backup_jobs (id) ON DELETE CASCADE,
  CONSTRAINT backup_copies_repository_fk FOREIGN KEY (repository_id) REFERENCES repositories (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
