ALTER TABLE upload_sessions DROP COLUMN drift_count;
