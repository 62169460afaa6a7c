-- Leases on the background duties of the hub (scheduler, GC, verify, reaper): of several hubs
-- sharing the catalog, only the holder of a duty's unexpired lease runs it. A hub that dies
-- stops renewing, and its lease expires so that another takes the duty over.
CREATE TABLE IF NOT EXISTS leases (
  name        VARCHAR(64)  NOT NULL,
  holder      VARCHAR(191) NOT NULL,
  expires_at  DATETIME(6)  NOT NULL,
  acquired_at DATETIME(6)  NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
