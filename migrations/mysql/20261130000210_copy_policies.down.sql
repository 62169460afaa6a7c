DROP TABLE IF EXISTS copy_runs;
--bun:split
ALTER TABLE policies DROP COLUMN target_repository_id;
