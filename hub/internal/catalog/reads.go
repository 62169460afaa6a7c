package catalog

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
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
	// Holder is who took a client's hold (BeginBackupHold), the only one who renews or ends
	// it; empty for the hub's own reads.
	Holder string `bun:"holder,notnull"`
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
	if err := c.beginRead(ctx, r, false); err != nil {
		return "", err
	}
	return r.ID, nil
}

// HoldPrefix opens the id of a client's hold (BeginBackupHold), and of no other read.
const HoldPrefix = "bh-"

// Bounds on clients' holds: how many of one backup may be live at once, from all holders and
// from one, and how long one may be renewed, so that no client, a viewer included, keeps a
// backup from deletion for ever or takes every hold of it.
const (
	MaxHoldsPerBackup = 32
	MaxHoldsPerHolder = 8
	MaxHoldLife       = 24 * time.Hour
)

// BeginBackupHold is BeginBackupRead for a client that renews the read itself across its requests
// (api.BackupHold): its id, HoldPrefix and 128 random bits, and holder (who asks, never empty)
// are what it is renewed and ended by. A backup with MaxHoldsPerBackup live holds already, or
// MaxHoldsPerHolder of holder's → ErrConflict.
func (c *Catalog) BeginBackupHold(ctx context.Context, backupID, holder string, ttl time.Duration) (*BackupRead, error) {
	if holder == "" {
		return nil, errors.New("begin backup hold: no holder")
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand aborts the program instead
	now := c.now()
	r := &BackupRead{ID: HoldPrefix + hex.EncodeToString(b[:]), BackupID: backupID, StartedAt: now, ExpiresAt: now.Add(ttl), Holder: holder}
	if err := c.beginRead(ctx, r, true); err != nil {
		return nil, err
	}
	return r, nil
}

// beginRead records read r in one transaction with the check of its backup; a client's hold
// (hold) is refused past MaxHoldsPerBackup live ones, or MaxHoldsPerHolder of its holder's.
func (c *Catalog) beginRead(ctx context.Context, r *BackupRead, hold bool) error {
	now, backupID := r.StartedAt, r.BackupID
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
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
		if hold {
			var live []string
			if err := tx.NewSelect().Model((*BackupRead)(nil)).Column("holder").Where("backup_id = ?", backupID).
				Where("id LIKE ?", HoldPrefix+"%").Where("expires_at > ?", now).Scan(ctx, &live); err != nil {
				return fmt.Errorf("count the holds of backup %s: %w", backupID, err)
			}
			if n := len(live); n >= MaxHoldsPerBackup {
				return fmt.Errorf("backup %s has %d client holds, the most at once; end one or let it expire: %w", backupID, n, ErrConflict)
			}
			if n := countOf(live, r.Holder); n >= MaxHoldsPerHolder {
				return fmt.Errorf("backup %s has %d holds of this client, the most one client may have at once; end one or let it expire: %w", backupID, n, ErrConflict)
			}
		}
		if _, err := tx.NewInsert().Model(r).Exec(ctx); err != nil {
			return fmt.Errorf("record a read of backup %s: %w", backupID, err)
		}
		return nil
	})
}

// countOf counts the elements of xs equal to x.
func countOf(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

// RenewBackupRead extends the read id of backup backupID, taken by holder (empty for the hub's
// own reads), by ttl from now and returns its new expiry; an expired or unknown one, one of
// another backup or holder, or a client's hold begun MaxHoldLife ago → ErrNotFound: the backup
// may have gone meanwhile.
func (c *Catalog) RenewBackupRead(ctx context.Context, backupID, id, holder string, ttl time.Duration) (time.Time, error) {
	now := c.now()
	q := c.db.NewUpdate().Model((*BackupRead)(nil)).Set("expires_at = ?", now.Add(ttl)).
		Where("id = ?", id).Where("backup_id = ?", backupID).Where("holder = ?", holder).Where("expires_at > ?", now)
	if strings.HasPrefix(id, HoldPrefix) {
		q = q.Where("started_at > ?", now.Add(-MaxHoldLife))
	}
	res, err := q.Exec(ctx)
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

// EndBackupReadOf forgets the read id of backup backupID taken by holder: unknown, or of
// another backup or holder → ErrNotFound. An expired read that is still recorded ends like any
// other.
func (c *Catalog) EndBackupReadOf(ctx context.Context, backupID, id, holder string) error {
	res, err := c.db.NewDelete().Model((*BackupRead)(nil)).Where("id = ?", id).Where("backup_id = ?", backupID).Where("holder = ?", holder).Exec(ctx)
	if err != nil {
		return fmt.Errorf("end backup read %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("backup read %s of backup %s: %w", id, backupID, ErrNotFound)
	}
	return nil
}
