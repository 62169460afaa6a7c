DROP TABLE IF EXISTS copy_writes;
