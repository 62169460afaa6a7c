DROP TABLE IF EXISTS backup_copies;
