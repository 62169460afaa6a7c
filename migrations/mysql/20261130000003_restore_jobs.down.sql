DROP TABLE IF EXISTS restore_jobs;
