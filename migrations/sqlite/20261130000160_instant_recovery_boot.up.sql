ALTER TABLE instant_recoveries ADD COLUMN boot TEXT NULL;
