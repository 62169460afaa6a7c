ALTER TABLE repositories ADD COLUMN s3_object_lock VARCHAR(16) NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_lock_days INT NOT NULL DEFAULT 0;
