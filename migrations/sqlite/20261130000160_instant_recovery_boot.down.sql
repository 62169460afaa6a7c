ALTER TABLE instant_recoveries DROP COLUMN boot;
