-- Leases on the background duties of the hub (scheduler, GC, verify, reaper): of several hubs
-- sharing the catalog, only the holder of a duty's unexpired lease runs it. A hub that dies
-- stops renewing, and its lease expires so that another takes the duty over.
CREATE TABLE IF NOT EXISTS leases (
  name        TEXT NOT NULL PRIMARY KEY,
  holder      TEXT NOT NULL,
  expires_at  TIMESTAMP NOT NULL,
  acquired_at TIMESTAMP NOT NULL
);
