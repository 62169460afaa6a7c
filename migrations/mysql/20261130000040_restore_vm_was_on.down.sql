ALTER TABLE restore_jobs DROP COLUMN vm_was_on;
