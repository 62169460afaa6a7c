CREATE TABLE IF NOT EXISTS repositories (
  id         TEXT    NOT NULL PRIMARY KEY,
  name       TEXT    NOT NULL,
  kind       TEXT    NOT NULL,
  path       TEXT    NOT NULL,
  chunk_size INTEGER NOT NULL,
  created_at TIMESTAMP NOT NULL,
  updated_at TIMESTAMP NOT NULL
);
--bun:split
CREATE UNIQUE INDEX IF NOT EXISTS repositories_name_uq ON repositories (name);
--bun:split
CREATE TABLE IF NOT EXISTS agents (
  id               TEXT NOT NULL PRIMARY KEY,
  name             TEXT NOT NULL,
  hostname         TEXT NOT NULL DEFAULT '',
  version          TEXT NOT NULL DEFAULT '',
  status           TEXT NOT NULL,
  cert_serial      TEXT NOT NULL,
  prev_cert_serial TEXT NOT NULL DEFAULT '',
  cert_fingerprint TEXT NOT NULL,
  cert_not_after   TIMESTAMP NOT NULL,
  join_token_id    TEXT NULL,
  last_seen_at     TIMESTAMP NULL,
  revoked_at       TIMESTAMP NULL,
  created_at       TIMESTAMP NOT NULL,
  updated_at       TIMESTAMP NOT NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS agents_status_idx ON agents (status);
--bun:split
CREATE TABLE IF NOT EXISTS join_tokens (
  id          TEXT NOT NULL PRIMARY KEY,
  name        TEXT NOT NULL DEFAULT '',
  secret_hash TEXT NOT NULL,
  expires_at  TIMESTAMP NOT NULL,
  redeemed_at TIMESTAMP NULL,
  agent_id    TEXT NULL,
  revoked_at  TIMESTAMP NULL,
  created_at  TIMESTAMP NOT NULL,
  updated_at  TIMESTAMP NOT NULL
);
--bun:split
CREATE TABLE IF NOT EXISTS api_tokens (
  id           TEXT NOT NULL PRIMARY KEY,
  name         TEXT NOT NULL,
  role         TEXT NOT NULL,
  secret_hash  TEXT NOT NULL,
  last_used_at TIMESTAMP NULL,
  revoked_at   TIMESTAMP NULL,
  created_at   TIMESTAMP NOT NULL,
  updated_at   TIMESTAMP NOT NULL
);
--bun:split
CREATE TABLE IF NOT EXISTS sources (
  id                INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  agent_id          TEXT    NOT NULL REFERENCES agents (id),
  name              TEXT    NOT NULL,
  url               TEXT    NOT NULL DEFAULT '',
  status            TEXT    NOT NULL DEFAULT 'ok',
  last_error        TEXT    NULL,
  last_inventory_at TIMESTAMP NULL,
  created_at        TIMESTAMP NOT NULL,
  updated_at        TIMESTAMP NOT NULL
);
--bun:split
CREATE UNIQUE INDEX IF NOT EXISTS sources_agent_name_uq ON sources (agent_id, name);
--bun:split
CREATE TABLE IF NOT EXISTS vm_contexts (
  context_id     TEXT    NOT NULL PRIMARY KEY,
  source_id      INTEGER NOT NULL REFERENCES sources (id),
  agent_id       TEXT    NOT NULL REFERENCES agents (id),
  instance_uuid  TEXT    NOT NULL,
  bios_uuid      TEXT    NOT NULL DEFAULT '',
  vm_name        TEXT    NOT NULL,
  power_state    TEXT    NOT NULL DEFAULT '',
  guest_os       TEXT    NOT NULL DEFAULT '',
  num_cpu        INTEGER NOT NULL DEFAULT 0,
  memory_mb      INTEGER NOT NULL DEFAULT 0,
  datacenter     TEXT    NOT NULL DEFAULT '',
  cluster        TEXT    NOT NULL DEFAULT '',
  host           TEXT    NOT NULL DEFAULT '',
  folder         TEXT    NOT NULL DEFAULT '',
  is_template    BOOLEAN NOT NULL DEFAULT FALSE,
  cbt_enabled    BOOLEAN NOT NULL DEFAULT FALSE,
  current_status TEXT    NOT NULL,
  gone_at        TIMESTAMP NULL,
  created_at     TIMESTAMP NOT NULL,
  updated_at     TIMESTAMP NOT NULL
);
--bun:split
CREATE UNIQUE INDEX IF NOT EXISTS vm_contexts_source_uuid_uq ON vm_contexts (source_id, instance_uuid);
--bun:split
CREATE INDEX IF NOT EXISTS vm_contexts_vm_name_idx ON vm_contexts (vm_name);
--bun:split
CREATE INDEX IF NOT EXISTS vm_contexts_agent_idx ON vm_contexts (agent_id);
--bun:split
CREATE TABLE IF NOT EXISTS backup_jobs (
  id                  TEXT    NOT NULL PRIMARY KEY,
  vm_context_id       TEXT    NOT NULL REFERENCES vm_contexts (context_id),
  agent_id            TEXT    NOT NULL REFERENCES agents (id),
  repository_id       TEXT    NOT NULL REFERENCES repositories (id),
  requested_type      TEXT    NOT NULL,
  type                TEXT    NOT NULL DEFAULT '',
  status              TEXT    NOT NULL,
  cancel_requested    BOOLEAN NOT NULL DEFAULT FALSE,
  snapshot_name       TEXT    NOT NULL DEFAULT '',
  snapshot_ref        TEXT    NOT NULL DEFAULT '',
  snapshot_created_at TIMESTAMP NULL,
  claimed_at          TIMESTAMP NULL,
  started_at          TIMESTAMP NULL,
  finished_at         TIMESTAMP NULL,
  heartbeat_at        TIMESTAMP NULL,
  bytes_read          INTEGER NOT NULL DEFAULT 0,
  bytes_sent          INTEGER NOT NULL DEFAULT 0,
  bytes_deduplicated  INTEGER NOT NULL DEFAULT 0,
  bytes_zero          INTEGER NOT NULL DEFAULT 0,
  error               TEXT    NULL,
  protected           BOOLEAN NOT NULL DEFAULT FALSE,
  verified_at         TIMESTAMP NULL,
  verify_status       TEXT    NOT NULL DEFAULT '',
  created_at          TIMESTAMP NOT NULL,
  updated_at          TIMESTAMP NOT NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS backup_jobs_vm_created_idx ON backup_jobs (vm_context_id, created_at);
--bun:split
CREATE INDEX IF NOT EXISTS backup_jobs_agent_status_idx ON backup_jobs (agent_id, status);
--bun:split
CREATE INDEX IF NOT EXISTS backup_jobs_status_idx ON backup_jobs (status);
--bun:split
CREATE TABLE IF NOT EXISTS vm_disks (
  id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  vm_context_id   TEXT    NOT NULL REFERENCES vm_contexts (context_id),
  disk_id         TEXT    NOT NULL,
  device_key      INTEGER NOT NULL,
  label           TEXT    NOT NULL DEFAULT '',
  capacity_bytes  INTEGER NOT NULL,
  datastore       TEXT    NOT NULL DEFAULT '',
  vmdk_path       TEXT    NOT NULL DEFAULT '',
  backing_type    TEXT    NOT NULL DEFAULT '',
  provisioning    TEXT    NOT NULL DEFAULT '',
  controller_type TEXT    NOT NULL DEFAULT '',
  controller_bus  INTEGER NOT NULL DEFAULT 0,
  unit_number     INTEGER NOT NULL DEFAULT 0,
  disk_mode       TEXT    NOT NULL DEFAULT '',
  backupable      BOOLEAN NOT NULL DEFAULT TRUE,
  change_id       TEXT    NOT NULL DEFAULT '',
  status          TEXT    NOT NULL,
  gone_at         TIMESTAMP NULL,
  job_id          TEXT    NULL REFERENCES backup_jobs (id),
  created_at      TIMESTAMP NOT NULL,
  updated_at      TIMESTAMP NOT NULL
);
--bun:split
CREATE UNIQUE INDEX IF NOT EXISTS vm_disks_vm_disk_uq ON vm_disks (vm_context_id, disk_id);
--bun:split
CREATE INDEX IF NOT EXISTS vm_disks_job_idx ON vm_disks (job_id);
--bun:split
CREATE TABLE IF NOT EXISTS backup_disks (
  id                 INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  job_id             TEXT    NOT NULL REFERENCES backup_jobs (id) ON DELETE CASCADE,
  vm_context_id      TEXT    NOT NULL,
  disk_id            TEXT    NOT NULL,
  type               TEXT    NOT NULL,
  reason             TEXT    NOT NULL DEFAULT '',
  parent_job_id      TEXT    NULL,
  base_change_id     TEXT    NOT NULL DEFAULT '',
  change_id          TEXT    NOT NULL DEFAULT '',
  capacity_bytes     INTEGER NOT NULL,
  chunk_size         INTEGER NOT NULL,
  slots_total        INTEGER NOT NULL DEFAULT 0,
  slots_changed      INTEGER NOT NULL DEFAULT 0,
  bytes_read         INTEGER NOT NULL DEFAULT 0,
  bytes_sent         INTEGER NOT NULL DEFAULT 0,
  bytes_deduplicated INTEGER NOT NULL DEFAULT 0,
  bytes_zero         INTEGER NOT NULL DEFAULT 0,
  index_path         TEXT    NOT NULL DEFAULT '',
  index_digest       TEXT    NOT NULL DEFAULT '',
  status             TEXT    NOT NULL,
  error              TEXT    NULL,
  started_at         TIMESTAMP NULL,
  finished_at        TIMESTAMP NULL,
  created_at         TIMESTAMP NOT NULL,
  updated_at         TIMESTAMP NOT NULL
);
--bun:split
CREATE UNIQUE INDEX IF NOT EXISTS backup_disks_job_disk_uq ON backup_disks (job_id, disk_id);
--bun:split
CREATE INDEX IF NOT EXISTS backup_disks_vm_disk_idx ON backup_disks (vm_context_id, disk_id);
