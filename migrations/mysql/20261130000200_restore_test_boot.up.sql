ALTER TABLE restore_tests ADD COLUMN boot TEXT NULL;
--bun:split
ALTER TABLE restore_tests ADD COLUMN rto_seconds DOUBLE NULL;
--bun:split
ALTER TABLE policies ADD COLUMN boot TEXT NULL;
