ALTER TABLE repositories ADD COLUMN s3_endpoint TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_bucket TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_prefix TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_region TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_ca_file TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_credentials_file TEXT NOT NULL DEFAULT '';
