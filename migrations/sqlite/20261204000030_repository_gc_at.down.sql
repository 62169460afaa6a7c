ALTER TABLE repositories DROP COLUMN gc_at;
