DROP INDEX IF EXISTS restore_jobs_vm_status_idx;
--bun:split
ALTER TABLE restore_jobs DROP COLUMN vm_context_id;
