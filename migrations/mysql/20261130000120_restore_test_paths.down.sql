ALTER TABLE policies DROP COLUMN paths;
--bun:split
ALTER TABLE restore_tests DROP COLUMN paths;
