package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// BackupCopy records that a backup has a copy in another repository than its own.
type BackupCopy struct {
	bun.BaseModel `bun:"table:backup_copies,alias:bc"`

	BackupID     string    `bun:"backup_id,pk"`
	RepositoryID string    `bun:"repository_id,pk"`
	ChunksCopied int64     `bun:"chunks_copied,notnull"`
	BytesCopied  int64     `bun:"bytes_copied,notnull"`
	CopiedAt     time.Time `bun:"copied_at,notnull"`

	// RepositoryName is filled by BackupCopies.
	RepositoryName string `bun:"repository_name,scanonly"`
}

// RecordCopy records a copy of a backup; recording it again updates its time and counts.
func (c *Catalog) RecordCopy(ctx context.Context, cp *BackupCopy) error {
	cp.CopiedAt = c.now()
	_, err := c.db.NewInsert().Model(cp).
		On(map[string]string{DriverSQLite: "CONFLICT (backup_id, repository_id) DO UPDATE", DriverMySQL: "DUPLICATE KEY UPDATE"}[c.driver]).
		Set(map[string]string{DriverSQLite: "copied_at = EXCLUDED.copied_at", DriverMySQL: "copied_at = VALUES(copied_at)"}[c.driver]).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("record copy of backup %s in repository %s: %w", cp.BackupID, cp.RepositoryID, err)
	}
	return nil
}

// BackupCopies lists the copies of a backup with their repositories' names, by name.
func (c *Catalog) BackupCopies(ctx context.Context, backupID string) ([]BackupCopy, error) {
	var out []BackupCopy
	err := c.db.NewSelect().Model(&out).ColumnExpr("bc.*").ColumnExpr("r.name AS repository_name").
		Join("JOIN repositories AS r ON r.id = bc.repository_id").
		Where("bc.backup_id = ?", backupID).Order("r.name ASC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list copies of backup %s: %w", backupID, err)
	}
	return out, nil
}
