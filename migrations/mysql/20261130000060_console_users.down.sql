DROP TABLE IF EXISTS console_sessions;
--bun:split
DROP TABLE IF EXISTS console_users;
