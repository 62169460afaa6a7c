CREATE TABLE IF NOT EXISTS events (
  id             INTEGER   NOT NULL PRIMARY KEY AUTOINCREMENT,
  type           TEXT      NOT NULL,
  occurred_at    TIMESTAMP NOT NULL,
  vm_context_id  TEXT      NULL,
  vm_name        TEXT      NULL,
  agent_id       TEXT      NULL,
  actor          TEXT      NOT NULL DEFAULT '',
  source_address TEXT      NULL,
  outcome        TEXT      NOT NULL DEFAULT '',
  details        TEXT      NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS events_occurred_idx ON events (occurred_at, id);
--bun:split
CREATE INDEX IF NOT EXISTS events_type_occurred_idx ON events (type, occurred_at, id);
--bun:split
CREATE INDEX IF NOT EXISTS events_vm_context_occurred_idx ON events (vm_context_id, occurred_at, id);
--bun:split
CREATE INDEX IF NOT EXISTS events_vm_name_occurred_idx ON events (vm_name, occurred_at, id);
