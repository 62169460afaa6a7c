ALTER TABLE repositories ADD COLUMN s3_endpoint VARCHAR(1024) NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_bucket VARCHAR(1024) NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_prefix VARCHAR(1024) NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_region VARCHAR(1024) NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_ca_file VARCHAR(1024) NOT NULL DEFAULT '';
--bun:split
ALTER TABLE repositories ADD COLUMN s3_credentials_file VARCHAR(1024) NOT NULL DEFAULT '';
