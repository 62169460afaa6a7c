package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/sendense/sendense/shared/api"
)

// BackupRead is a read of a restore point served to a client: an image download, a file-level
// restore, a restore run from the command line. While it is unexpired, the backup cannot be
// deleted, pruned or moved, nor its copies removed (refuseBackupUsers). The reader renews it as
// it goes; one that dies stops renewing, and the read expires.
type BackupRead struct {
	bun.BaseModel `bun:"table:backup_reads,alias:br"`

	ID        string    `bun:"id,pk"`
	BackupID  string    `bun:"backup_id,notnull"`
	StartedAt time.Time `bun:"started_at,notnull"`
	ExpiresAt time.Time `bun:"expires_at,notnull"`
}

// BeginBackupRead records that successful backup backupID is being read, for ttl. The backup's
// row is held while this is decided, so a deletion either sees the read or happened before it;
// held exclusively, as two reads begun at once would each hold it shared and then deadlock on
// their insertions (MariaDB):
// no backup, or one that is not a restore point (queued, running, failed) → ErrNotFound or
// ErrConflict, and nothing is recorded.
func (c *Catalog) BeginBackupRead(ctx context.Context, backupID string, ttl time.Duration) (string, error) {
	now := c.now()
	r := &BackupRead{ID: NewID("br-", now), BackupID: backupID, StartedAt: now, ExpiresAt: now.Add(ttl)}
	err := c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var status string
		err := tx.QueryRowContext(ctx, "SELECT status FROM backup_jobs WHERE id = ?"+c.rowLock(true), backupID).Scan(&status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("backup %s: %w", backupID, ErrNotFound)
		case err != nil:
			return fmt.Errorf("select backup %s: %w", backupID, err)
		case status != api.JobSucceeded:
			return fmt.Errorf("backup %s is %s, not a restore point: %w", backupID, status, ErrConflict)
		}
		// The reads of this backup whose reader died go now (the index serves both), an hour
		// after they expired: another hub's clock may be behind this one's. They are found
		// first and removed by id: a removal by range would lock the index's gaps (MariaDB),
		// and reads of two backups in one gap would deadlock on each other's insertions.
		var dead []string
		if err := tx.NewSelect().Model((*BackupRead)(nil)).Column("id").Where("backup_id = ?", backupID).Where("expires_at < ?", now.Add(-time.Hour)).Scan(ctx, &dead); err != nil {
			return fmt.Errorf("find expired reads of backup %s: %w", backupID, err)
		}
		if len(dead) > 0 {
			if _, err := tx.NewDelete().Model((*BackupRead)(nil)).Where("id IN (?)", bun.In(dead)).Exec(ctx); err != nil {
				return fmt.Errorf("forget expired reads of backup %s: %w", backupID, err)
			}
		}
		if _, err := tx.NewInsert().Model(r).Exec(ctx); err != nil {
			return fmt.Errorf("record a read of backup %s: %w", backupID, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return r.ID, nil
}

// RenewBackupRead extends the read id of backup backupID by ttl from now and returns its new
// expiry; an expired or unknown one, or one of another backup → ErrNotFound: the backup may have
// gone meanwhile.
func (c *Catalog) RenewBackupRead(ctx context.Context, backupID, id string, ttl time.Duration) (time.Time, error) {
	now := c.now()
	res, err := c.db.NewUpdate().Model((*BackupRead)(nil)).Set("expires_at = ?", now.Add(ttl)).
		Where("id = ?", id).Where("backup_id = ?", backupID).Where("expires_at > ?", now).Exec(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("renew backup read %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return time.Time{}, fmt.Errorf("backup read %s of backup %s expired or unknown: %w", id, backupID, ErrNotFound)
	}
	return now.Add(ttl), nil
}

// EndBackupRead forgets the read id; an unknown id is not an error. The reads of dead readers
// go with the next read of their backup (BeginBackupRead), or with the backup.
func (c *Catalog) EndBackupRead(ctx context.Context, id string) error {
	if _, err := c.db.NewDelete().Model((*BackupRead)(nil)).Where("id = ?", id).Exec(ctx); err != nil {
		return fmt.Errorf("end backup read %s: %w", id, err)
	}
	return nil
}

// EndBackupReadOf forgets the read id of backup backupID: unknown, or of another backup →
// ErrNotFound. An expired read that is still recorded ends like any other.
func (c *Catalog) EndBackupReadOf(ctx context.Context, backupID, id string) error {
	res, err := c.db.NewDelete().Model((*BackupRead)(nil)).Where("id = ?", id).Where("backup_id = ?", backupID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("end backup read %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("backup read %s of backup %s: %w", id, backupID, ErrNotFound)
	}
	return nil
}
