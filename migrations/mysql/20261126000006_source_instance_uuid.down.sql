DROP INDEX vm_contexts_instance_uuid_idx ON vm_contexts;
--bun:split
DROP INDEX sources_instance_uuid_uq ON sources;
--bun:split
ALTER TABLE sources DROP COLUMN instance_uuid;
