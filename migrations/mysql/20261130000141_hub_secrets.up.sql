-- Secrets that hubs sharing the catalog share (the CA), sealed with AES-256-GCM under the hub
-- key each hub is given; the catalog never holds them in clear.
CREATE TABLE IF NOT EXISTS hub_secrets (
  name       VARCHAR(64) NOT NULL,
  sealed     BLOB        NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
