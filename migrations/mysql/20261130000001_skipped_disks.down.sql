ALTER TABLE backup_jobs DROP COLUMN skipped_disks;
