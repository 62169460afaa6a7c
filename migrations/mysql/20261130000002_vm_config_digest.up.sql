ALTER TABLE backup_jobs ADD COLUMN vm_config_digest VARCHAR(64) NULL;
