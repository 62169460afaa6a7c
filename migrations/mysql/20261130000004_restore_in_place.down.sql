ALTER TABLE restore_jobs DROP COLUMN vm_context_id;
