ALTER TABLE repositories DROP COLUMN s3_credentials_file;
--bun:split
ALTER TABLE repositories DROP COLUMN s3_ca_file;
--bun:split
ALTER TABLE repositories DROP COLUMN s3_region;
--bun:split
ALTER TABLE repositories DROP COLUMN s3_prefix;
--bun:split
ALTER TABLE repositories DROP COLUMN s3_bucket;
--bun:split
ALTER TABLE repositories DROP COLUMN s3_endpoint;
