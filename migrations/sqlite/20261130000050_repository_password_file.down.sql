ALTER TABLE repositories DROP COLUMN password_file;
