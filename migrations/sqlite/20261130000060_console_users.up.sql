-- Local users of the web console. Only a bcrypt hash of each password is stored.
CREATE TABLE IF NOT EXISTS console_users (
  id            TEXT NOT NULL PRIMARY KEY,
  name          TEXT NOT NULL,
  role          TEXT NOT NULL,
  password_hash TEXT NOT NULL,
  created_at    TIMESTAMP NOT NULL,
  updated_at    TIMESTAMP NOT NULL
);
--bun:split
CREATE UNIQUE INDEX IF NOT EXISTS console_users_name_uq ON console_users (name);
--bun:split
-- Signed-in console sessions, keyed by the SHA-256 of the cookie's secret.
CREATE TABLE IF NOT EXISTS console_sessions (
  id_hash    TEXT NOT NULL PRIMARY KEY,
  user_id    TEXT NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
  expires_at TIMESTAMP NOT NULL,
  created_at TIMESTAMP NOT NULL
);
--bun:split
CREATE INDEX IF NOT EXISTS console_sessions_user_idx ON console_sessions (user_id);
