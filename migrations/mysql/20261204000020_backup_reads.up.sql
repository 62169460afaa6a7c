-- Reads of restore points served to clients (image downloads, file-level restores, restores run
-- from the command line). While its row is unexpired, a read keeps its backup from being deleted,
-- pruned or moved, and its copies from being removed; the reader renews expires_at as it goes,
-- and a reader that dies stops renewing.
CREATE TABLE IF NOT EXISTS backup_reads (
  id          VARCHAR(64)  NOT NULL,
  backup_id   VARCHAR(64)  NOT NULL,
  started_at  DATETIME(6)  NOT NULL,
  expires_at  DATETIME(6)  NOT NULL,
  PRIMARY KEY (id),
  KEY backup_reads_backup_idx (backup_id, expires_at),
  CONSTRAINT backup_reads_backup_fk FOREIGN KEY (backup_id) REFERENCES backup_jobs (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
