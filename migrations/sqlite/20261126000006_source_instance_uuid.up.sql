-- A source is identified by its vCenter's instance UUID (about.instanceUuid). Sources recorded
-- before keep NULL until their owning agent's next push brings the UUID.
ALTER TABLE sources ADD COLUMN instance_uuid TEXT NULL;
--bun:split
CREATE UNIQUE INDEX IF NOT EXISTS sources_instance_uuid_uq ON sources (instance_uuid);
--bun:split
-- Pushes look up which agent's source already holds a VM instance UUID.
CREATE INDEX IF NOT EXISTS vm_contexts_instance_uuid_idx ON vm_contexts (instance_uuid);
