ALTER TABLE backup_reads DROP COLUMN holder;
