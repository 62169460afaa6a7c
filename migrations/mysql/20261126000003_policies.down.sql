DROP INDEX backup_jobs_policy_idx ON backup_jobs;
--bun:split
ALTER TABLE backup_jobs DROP COLUMN policy_id;
--bun:split
DROP TABLE IF EXISTS policies;
