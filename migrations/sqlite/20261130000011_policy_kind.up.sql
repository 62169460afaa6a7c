ALTER TABLE policies ADD COLUMN kind TEXT NOT NULL DEFAULT 'backup';
--bun:split
ALTER TABLE policies ADD COLUMN checks TEXT NULL;
