DROP TABLE IF EXISTS backup_disks;
--bun:split
DROP TABLE IF EXISTS vm_disks;
--bun:split
DROP TABLE IF EXISTS backup_jobs;
--bun:split
DROP TABLE IF EXISTS vm_contexts;
--bun:split
DROP TABLE IF EXISTS sources;
--bun:split
DROP TABLE IF EXISTS api_tokens;
--bun:split
DROP TABLE IF EXISTS join_tokens;
--bun:split
DROP TABLE IF EXISTS agents;
--bun:split
DROP TABLE IF EXISTS repositories;
