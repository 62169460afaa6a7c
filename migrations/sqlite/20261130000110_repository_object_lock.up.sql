ALTER TABLE repositories ADD COLUMN s3_object_lock TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_lock_days INTEGER NOT NULL DEFAULT 0;
