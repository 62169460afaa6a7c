ALTER TABLE backup_jobs DROP COLUMN origin_repository_id;
