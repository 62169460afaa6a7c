ALTER TABLE repositories ADD COLUMN password_file TEXT NOT NULL DEFAULT '';
