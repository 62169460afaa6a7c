ALTER TABLE restore_jobs ADD COLUMN vm_was_on BOOLEAN NULL;
