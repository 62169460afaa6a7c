DROP TABLE IF EXISTS instant_recoveries;
