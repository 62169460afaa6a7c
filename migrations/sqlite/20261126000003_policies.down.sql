DROP INDEX IF EXISTS backup_jobs_policy_idx;
--bun:split
ALTER TABLE backup_jobs DROP COLUMN policy_id;
--bun:split
DROP TABLE IF EXISTS policies;
