ALTER TABLE backup_jobs DROP COLUMN bytes_total;
--bun:split
ALTER TABLE backup_jobs DROP COLUMN phase;
