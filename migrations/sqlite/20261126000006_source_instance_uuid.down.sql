DROP INDEX IF EXISTS vm_contexts_instance_uuid_idx;
--bun:split
DROP INDEX IF EXISTS sources_instance_uuid_uq;
--bun:split
ALTER TABLE sources DROP COLUMN instance_uuid;
