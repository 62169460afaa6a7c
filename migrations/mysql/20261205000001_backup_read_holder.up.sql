-- Who took a client's hold of a backup (the API token's id; empty for the hub's own reads): only
-- that holder renews or ends it.
ALTER TABLE backup_reads ADD COLUMN holder VARCHAR(64) NOT NULL DEFAULT '';
