-- The outcome of the last verification of each copy, as backup_jobs records it for the backup in
-- its own repository: '' until verified (and again once a copy run has copied it anew), then ok
-- or damaged. A copy found damaged is copied again by the next run of its policy.
ALTER TABLE backup_copies ADD COLUMN verified_at TIMESTAMP NULL;
--bun:split
ALTER TABLE backup_copies ADD COLUMN verify_status TEXT NOT NULL DEFAULT '';
