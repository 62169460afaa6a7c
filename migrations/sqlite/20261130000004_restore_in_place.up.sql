ALTER TABLE restore_jobs ADD COLUMN vm_context_id TEXT NULL;
--bun:split
CREATE INDEX IF NOT EXISTS restore_jobs_vm_status_idx ON restore_jobs (vm_context_id, status);
