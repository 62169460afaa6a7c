ALTER TABLE backup_jobs DROP COLUMN vm_config_digest;
