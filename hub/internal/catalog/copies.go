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

// BackupCopy records that a backup has a copy in another repository than its own.
type BackupCopy struct {
	bun.BaseModel `bun:"table:backup_copies,alias:bc"`

	BackupID     string    `bun:"backup_id,pk"`
	RepositoryID string    `bun:"repository_id,pk"`
	ChunksCopied int64     `bun:"chunks_copied,notnull"`
	BytesCopied  int64     `bun:"bytes_copied,notnull"`
	CopiedAt     time.Time `bun:"copied_at,notnull"`
	// VerifiedAt and VerifyStatus are the outcome of the copy's last verification: "" until it
	// is verified, and again once it is copied anew.
	VerifiedAt   time.Time `bun:"verified_at,nullzero"`
	VerifyStatus string    `bun:"verify_status,notnull"`

	// RepositoryName is filled by BackupCopies.
	RepositoryName string `bun:"repository_name,scanonly"`
}

// RecordCopy records a copy of a backup; recording it again (a copy made anew) updates its
// time, and its verification starts over: not verified yet.
func (c *Catalog) RecordCopy(ctx context.Context, cp *BackupCopy) error {
	return c.recordCopy(ctx, c.db, cp)
}

func (c *Catalog) recordCopy(ctx context.Context, db bun.IDB, cp *BackupCopy) error {
	cp.CopiedAt, cp.VerifiedAt, cp.VerifyStatus = c.now(), time.Time{}, ""
	excluded := map[string]string{DriverSQLite: "EXCLUDED.%[1]s", DriverMySQL: "VALUES(%[1]s)"}[c.driver]
	q := db.NewInsert().Model(cp).
		On(map[string]string{DriverSQLite: "CONFLICT (backup_id, repository_id) DO UPDATE", DriverMySQL: "DUPLICATE KEY UPDATE"}[c.driver])
	for _, col := range []string{"copied_at", "verified_at", "verify_status"} {
		q = q.Set(col + " = " + fmt.Sprintf(excluded, col))
	}
	_, err := q.Exec(ctx)
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

// RecordCopyVerify stores the outcome of verifying the copy of a backup in a repository; a copy
// no longer recorded (deleted meanwhile) is passed over.
func (c *Catalog) RecordCopyVerify(ctx context.Context, backupID, repositoryID, status string, at time.Time) error {
	_, err := c.db.NewUpdate().Model((*BackupCopy)(nil)).Set("verified_at = ?", at.UTC()).Set("verify_status = ?", status).
		Where("backup_id = ?", backupID).Where("repository_id = ?", repositoryID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record verification of the copy of backup %s in repository %s: %w", backupID, repositoryID, err)
	}
	return nil
}

// DamagedCopies counts the copies of successful backups that their last verification found
// damaged.
func (c *Catalog) DamagedCopies(ctx context.Context) (int, error) {
	n, err := c.db.NewSelect().Model((*BackupCopy)(nil)).Join("JOIN backup_jobs AS j ON j.id = bc.backup_id").
		Where("j.status = ?", api.JobSucceeded).Where("bc.verify_status = ?", api.VerifyDamaged).Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count damaged copies: %w", err)
	}
	return int(n), nil
}

// CopiesIn lists the copies held by a repository, by backup id.
func (c *Catalog) CopiesIn(ctx context.Context, repositoryID string) (map[string]BackupCopy, error) {
	var rows []BackupCopy
	if err := c.db.NewSelect().Model(&rows).Where("bc.repository_id = ?", repositoryID).Scan(ctx); err != nil {
		return nil, fmt.Errorf("list copies in repository %s: %w", repositoryID, err)
	}
	out := make(map[string]BackupCopy, len(rows))
	for _, r := range rows {
		out[r.BackupID] = r
	}
	return out, nil
}

// DeleteCopy forgets the copy of a backup in a repository; a copy not recorded → ErrNotFound.
// As for deleting the backup, a protected backup or one something still reads (a restore, an
// instant recovery, a restore test, which may read the copy) → ErrConflict naming why: the
// backup's row is held while this is decided.
func (c *Catalog) DeleteCopy(ctx context.Context, backupID, repositoryID string) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := c.lockRemovableBackup(ctx, tx, backupID, new(BackupJob)); err != nil {
			return err
		}
		if err := refuseBackupUsers(ctx, tx, backupID, c.now()); err != nil {
			return err
		}
		res, err := tx.NewDelete().Model((*BackupCopy)(nil)).Where("backup_id = ?", backupID).Where("repository_id = ?", repositoryID).Exec(ctx)
		if err != nil {
			return fmt.Errorf("delete copy of backup %s in repository %s: %w", backupID, repositoryID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("copy of backup %s in repository %s: %w", backupID, repositoryID, ErrNotFound)
		}
		return nil
	})
}

// CopyRun is one run of a copy policy: what it copied and pruned, and how it ended.
type CopyRun struct {
	bun.BaseModel `bun:"table:copy_runs,alias:cr"`

	ID               string    `bun:"id,pk"`
	PolicyID         string    `bun:"policy_id,notnull"`
	FromRepositoryID string    `bun:"from_repository_id,notnull"`
	ToRepositoryID   string    `bun:"to_repository_id,notnull"`
	Status           string    `bun:"status,notnull"` // running, then succeeded or failed
	BackupsCopied    int       `bun:"backups_copied,notnull"`
	BackupsPresent   int       `bun:"backups_present,notnull"`
	BackupsFailed    int       `bun:"backups_failed,notnull"`
	CopiesPruned     int       `bun:"copies_pruned,notnull"`
	ChunksCopied     int64     `bun:"chunks_copied,notnull"`
	BytesCopied      int64     `bun:"bytes_copied,notnull"`
	Error            string    `bun:"error,nullzero"`
	StartedAt        time.Time `bun:"started_at,notnull"`
	FinishedAt       time.Time `bun:"finished_at,nullzero"`
}

// StartCopyRun records a run that begins now.
func (c *Catalog) StartCopyRun(ctx context.Context, r *CopyRun) error {
	r.StartedAt = c.now()
	if _, err := c.db.NewInsert().Model(r).Exec(ctx); err != nil {
		return fmt.Errorf("record copy run of policy %s: %w", r.PolicyID, err)
	}
	return nil
}

// FinishCopyRun records the outcome of a run, finished now.
func (c *Catalog) FinishCopyRun(ctx context.Context, r *CopyRun) error {
	r.FinishedAt = c.now()
	if _, err := c.db.NewUpdate().Model(r).WherePK().ExcludeColumn("id", "policy_id", "started_at").Exec(ctx); err != nil {
		return fmt.Errorf("record the end of copy run %s: %w", r.ID, err)
	}
	return nil
}

// CopyRuns lists a policy's runs, newest first, at most limit (0: all).
func (c *Catalog) CopyRuns(ctx context.Context, policyID string, limit int) ([]CopyRun, error) {
	var out []CopyRun
	q := c.db.NewSelect().Model(&out).Where("policy_id = ?", policyID).Order("started_at DESC", "id DESC")
	if limit > 0 {
		q = q.Limit(int64(limit))
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("list copy runs of policy %s: %w", policyID, err)
	}
	return out, nil
}

// CopyPolicyStats returns the run statistics of a copy policy: the last finished run's status
// and time, and the last successful one's.
func (c *Catalog) CopyPolicyStats(ctx context.Context, policyID string) (PolicyRunStats, error) {
	var out PolicyRunStats
	var last CopyRun
	err := c.db.NewSelect().Model(&last).Column("status", "finished_at").
		Where("policy_id = ?", policyID).Where("finished_at IS NOT NULL").
		Order("finished_at DESC").Limit(1).Scan(ctx)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return out, fmt.Errorf("last copy run of policy %s: %w", policyID, err)
	}
	out.LastStatus, out.LastFinished = last.Status, last.FinishedAt
	var ok CopyRun
	err = c.db.NewSelect().Model(&ok).Column("finished_at").
		Where("policy_id = ?", policyID).Where("status = ?", "succeeded").
		Order("finished_at DESC").Limit(1).Scan(ctx)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return out, fmt.Errorf("last successful copy run of policy %s: %w", policyID, err)
	}
	out.LastSuccessAt = ok.FinishedAt
	return out, nil
}

// RehomeBackup moves a backup to its copy in repository toRepositoryID, in one transaction: the
// backup's repository becomes toRepositoryID, origin_repository_id remembers the repository it
// leaves (or keeps the one it was first taken into), and the copy's record goes, since the copy
// is now the backup itself. A queued or running backup is refused (ErrConflict), so is a
// protected one (ErrProtected, ErrConflict), and so is one that something still reads where it
// is (a running incremental onto it, a restore, an instant recovery, a copy from it:
// ErrConflict naming it), since the caller removes its indexes there, and so is a copy that
// verification found damaged, or that an attach recorded and no verification read yet
// (api.VerifyPending; ErrConflict); no copy recorded there →
// ErrNotFound. It returns the job as it was before the move (its RepositoryID is the repository
// left) and its disks.
func (c *Catalog) RehomeBackup(ctx context.Context, id, toRepositoryID string) (*BackupJob, []BackupDisk, error) {
	j := new(BackupJob)
	var disks []BackupDisk
	err := c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := c.lockRemovableBackup(ctx, tx, id, j); err != nil {
			return err
		}
		if err := refuseBackupUsers(ctx, tx, id, c.now()); err != nil {
			return err
		}
		// A verification may have found the copy damaged since the caller chose it: its row is
		// read locked, as a plain read in this transaction could see it as it was.
		var status string
		err := tx.QueryRowContext(ctx, "SELECT verify_status FROM backup_copies WHERE backup_id = ? AND repository_id = ?"+c.rowLock(true), id, toRepositoryID).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("copy of backup %s in repository %s: %w", id, toRepositoryID, ErrNotFound)
		} else if err != nil {
			return fmt.Errorf("select copy of backup %s in repository %s: %w", id, toRepositoryID, err)
		}
		if status == api.VerifyDamaged || status == api.VerifyPending {
			return fmt.Errorf("copy of backup %s in repository %s is %s: %w", id, toRepositoryID, status, ErrConflict)
		}
		if _, err := tx.NewDelete().Model((*BackupCopy)(nil)).Where("backup_id = ?", id).Where("repository_id = ?", toRepositoryID).Exec(ctx); err != nil {
			return fmt.Errorf("delete copy of backup %s in repository %s: %w", id, toRepositoryID, err)
		}
		origin := j.OriginRepositoryID
		if origin == "" {
			origin = j.RepositoryID
		}
		if _, err := tx.NewUpdate().Model((*BackupJob)(nil)).
			Set("repository_id = ?", toRepositoryID).Set("origin_repository_id = ?", origin).Set("updated_at = ?", c.now()).
			Where("id = ?", id).Exec(ctx); err != nil {
			return fmt.Errorf("move backup %s to repository %s: %w", id, toRepositoryID, err)
		}
		if err := tx.NewSelect().Model(&disks).Where("job_id = ?", id).Scan(ctx); err != nil {
			return fmt.Errorf("select disks of backup %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return j, disks, nil
}

// CopyWrite is a copy of a backup being written into a repository. While it is unexpired, garbage
// collection of the repository spares every chunk stored or touched since it started
// (OldestWrite) and repo check takes none of the backup's indexes there for an orphan
// (WritingBackupIDs). The copier renews it; one that dies stops renewing, and the run expires.
type CopyWrite struct {
	bun.BaseModel `bun:"table:copy_writes,alias:cw"`

	ID           string    `bun:"id,pk"`
	BackupID     string    `bun:"backup_id,notnull"`
	RepositoryID string    `bun:"repository_id,notnull"`
	StartedAt    time.Time `bun:"started_at,notnull"`
	ExpiresAt    time.Time `bun:"expires_at,notnull"`
}

// ErrCopyWriteExpired: a copy write was not renewed in time (or is unknown), so garbage collection
// may have stopped sparing what it wrote.
var ErrCopyWriteExpired = errors.New("copy write expired")

// BeginCopyWrite records that backup backupID is being copied into repositoryID, for ttl.
func (c *Catalog) BeginCopyWrite(ctx context.Context, backupID, repositoryID string, ttl time.Duration) (*CopyWrite, error) {
	now := c.now()
	r := &CopyWrite{ID: NewID("cw-", now), BackupID: backupID, RepositoryID: repositoryID, StartedAt: now, ExpiresAt: now.Add(ttl)}
	if _, err := c.db.NewInsert().Model(r).Exec(ctx); err != nil {
		return nil, fmt.Errorf("begin copy of backup %s into repository %s: %w", backupID, repositoryID, err)
	}
	return r, nil
}

// RenewCopyWrite extends an unexpired copy write by ttl from now; an expired or unknown one →
// ErrCopyWriteExpired.
func (c *Catalog) RenewCopyWrite(ctx context.Context, id string, ttl time.Duration) error {
	renewed, err := c.renew(ctx, (*CopyWrite)(nil), id, ttl)
	if err != nil {
		return fmt.Errorf("renew copy write %s: %w", id, err)
	}
	if !renewed {
		return fmt.Errorf("copy write %s: %w", id, ErrCopyWriteExpired)
	}
	return nil
}

// renew extends the unexpired row id of model (a table with id and expires_at) by ttl from now,
// and reports whether there was one.
func (c *Catalog) renew(ctx context.Context, model any, id string, ttl time.Duration) (bool, error) {
	now := c.now()
	res, err := c.db.NewUpdate().Model(model).Set("expires_at = ?", now.Add(ttl)).Where("id = ?", id).Where("expires_at > ?", now).Exec(ctx)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// FinishCopyWrite records the copy cp and ends the copy write id, in one transaction, only while
// the run is unexpired: an expired or unknown run → ErrCopyWriteExpired, and nothing is recorded.
func (c *Catalog) FinishCopyWrite(ctx context.Context, id string, cp *BackupCopy) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewDelete().Model((*CopyWrite)(nil)).Where("id = ?", id).Where("expires_at > ?", c.now()).Exec(ctx)
		if err != nil {
			return fmt.Errorf("end copy write %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("copy write %s: %w", id, ErrCopyWriteExpired)
		}
		return c.recordCopy(ctx, tx, cp)
	})
}

// EndCopyWrite forgets a copy write (a copy that failed); an unknown one is not an error.
func (c *Catalog) EndCopyWrite(ctx context.Context, id string) error {
	if _, err := c.db.NewDelete().Model((*CopyWrite)(nil)).Where("id = ?", id).Exec(ctx); err != nil {
		return fmt.Errorf("end copy write %s: %w", id, err)
	}
	return nil
}
