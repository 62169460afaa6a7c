-- Slots an incremental's drift check found changed although CBT called them unchanged. A session
-- with any must record every slot of its disk before it commits, also when the agent that found
-- them stopped and a new one resumes the session.
ALTER TABLE upload_sessions ADD COLUMN drift_count BIGINT NOT NULL DEFAULT 0;
