-- A backup deleted or pruned in its home repository while it has a copy moves to that copy: its
-- repository_id becomes the copy's repository and origin_repository_id remembers where it came
-- from, so that the copy policy from there keeps applying its retention to it.
ALTER TABLE backup_jobs ADD COLUMN origin_repository_id VARCHAR(64) NULL;
