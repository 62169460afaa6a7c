DROP INDEX IF EXISTS copy_runs_policy_idx;
--bun:split
DROP TABLE IF EXISTS copy_runs;
--bun:split
ALTER TABLE policies DROP COLUMN target_repository_id;
