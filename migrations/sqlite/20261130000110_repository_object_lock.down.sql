ALTER TABLE repositories DROP COLUMN s3_lock_days;
--bun:split
ALTER TABLE repositories DROP COLUMN s3_object_lock;
