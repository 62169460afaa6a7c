-- Local users of the web console. Only a bcrypt hash of each password is stored.
CREATE TABLE IF NOT EXISTS console_users (
  id            VARCHAR(64)  NOT NULL,
  name          VARCHAR(191) NOT NULL,
  role          VARCHAR(16)  NOT NULL,
  password_hash VARCHAR(255) NOT NULL,
  created_at    DATETIME(6)  NOT NULL,
  updated_at    DATETIME(6)  NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY console_users_name_uq (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
--bun:split
-- Signed-in console sessions, keyed by the SHA-256 of the cookie's secret.
CREATE TABLE IF NOT EXISTS console_sessions (
  id_hash    CHAR(64)    NOT NULL,
  user_id    VARCHAR(64) NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id_hash),
  KEY console_sessions_user_idx (user_id),
  CONSTRAINT console_sessions_user_fk FOREIGN KEY (user_id) REFERENCES console_users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
