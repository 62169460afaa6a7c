ALTER TABLE policies DROP COLUMN cbt_sample;
