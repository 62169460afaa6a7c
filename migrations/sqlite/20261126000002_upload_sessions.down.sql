ALTER TABLE backup_jobs DROP COLUMN notes;
--bun:split
DROP TABLE IF EXISTS upload_slots;
--bun:split
DROP TABLE IF EXISTS upload_sessions;
