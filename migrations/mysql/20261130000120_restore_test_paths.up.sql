ALTER TABLE restore_tests ADD COLUMN paths TEXT NULL;
--bun:split
ALTER TABLE policies ADD COLUMN paths TEXT NULL;
