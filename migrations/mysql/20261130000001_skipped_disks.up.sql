ALTER TABLE backup_jobs ADD COLUMN skipped_disks TEXT NULL;
