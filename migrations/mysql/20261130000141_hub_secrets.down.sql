DROP TABLE IF EXISTS hub_secrets;
