DROP INDEX IF EXISTS restore_jobs_created_idx;
--bun:split
DROP INDEX IF EXISTS restore_jobs_status_idx;
--bun:split
DROP INDEX IF EXISTS restore_jobs_agent_status_idx;
--bun:split
DROP TABLE IF EXISTS restore_jobs;
