DROP TABLE IF EXISTS backup_reads;
