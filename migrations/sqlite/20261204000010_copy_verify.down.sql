ALTER TABLE backup_copies DROP COLUMN verify_status;
--bun:split
ALTER TABLE backup_copies DROP COLUMN verified_at;
