DROP TABLE IF EXISTS restore_tests;
