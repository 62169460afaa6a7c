ALTER TABLE restore_jobs ADD COLUMN vm_context_id VARCHAR(64) NULL, ADD KEY restore_jobs_vm_status_idx (vm_context_id, status);
