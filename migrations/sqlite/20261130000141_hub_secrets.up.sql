-- Secrets that hubs sharing the catalog share (the CA), sealed with AES-256-GCM under the hub
-- key each hub is given; the catalog never holds them in clear.
CREATE TABLE IF NOT EXISTS hub_secrets (
  name       TEXT NOT NULL PRIMARY KEY,
  sealed     BLOB NOT NULL,
  created_at TIMESTAMP NOT NULL
);
