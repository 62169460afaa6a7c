ALTER TABLE backup_disks DROP COLUMN cbt_drift;
--bun:split
ALTER TABLE backup_jobs DROP COLUMN cbt_drift, DROP COLUMN cbt_sample;
