ALTER TABLE policies DROP COLUMN checks;
--bun:split
ALTER TABLE policies DROP COLUMN kind;
