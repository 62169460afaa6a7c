-- When garbage collection last completed on each repository (NULL: never): the scheduled
-- collection counts its interval from there, so a hub restarted more often than the interval
-- still collects.
ALTER TABLE repositories ADD COLUMN gc_at TIMESTAMP NULL;
