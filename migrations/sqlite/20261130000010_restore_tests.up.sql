CREATE TABLE IF NOT EXISTS restore_tests (
  id                 TEXT      NOT NULL PRIMARY KEY,
  vm_context_id      TEXT      NOT NULL REFERENCES vm_contexts (context_id),
  vm_name            TEXT      NOT NULL,
  backup_id          TEXT      NOT NULL,
  backup_created_at  TIMESTAMP NOT NULL,
  repository_id      TEXT      NOT NULL,
  repository_name    TEXT      NOT NULL,
  policy_id          TEXT      NULL,
  actor              TEXT      NOT NULL,
  requested_checks   TEXT      NOT NULL,
  checks             TEXT      NULL,
  status             TEXT      NOT NULL,
  bytes_read         INTEGER   NOT NULL DEFAULT 0,
  bytes_total        INTEGER   NOT NULL DEFAULT 0,
  seconds            REAL      NOT NULL DEFAULT 0,
  error              TEXT      NULL,
  created_at         TIMESTAMP NOT NULL,
  started_at         TIMESTAMP NULL,
  heartbeat_at       TIMESTAMP NULL,
  finished_at        TIMESTAMP NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS restore_tests_vm_created_idx ON restore_tests (vm_context_id, created_at);
--bun:split
CREATE INDEX IF NOT EXISTS restore_tests_status_idx ON restore_tests (status);
--bun:split
CREATE INDEX IF NOT EXISTS restore_tests_created_idx ON restore_tests (created_at);
