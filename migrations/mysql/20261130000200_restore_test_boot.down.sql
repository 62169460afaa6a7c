ALTER TABLE policies DROP COLUMN boot;
--bun:split
ALTER TABLE restore_tests DROP COLUMN rto_seconds;
--bun:split
ALTER TABLE restore_tests DROP COLUMN boot;
