package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/uptrace/bun"
)

// ErrProtected is returned when deleting a protected backup.
var ErrProtected = errors.New("the backup is protected")

// BackupRow is a job with the names operators know it by.
type BackupRow struct {
	BackupJob      `bun:",extend"`
	VMName         string `bun:"vm_name"`
	InstanceUUID   string `bun:"instance_uuid"`
	RepositoryName string `bun:"repository_name"`
}

// BackupFilter selects backups for listing.
type BackupFilter struct {
	VMContextID  string
	RepositoryID string
	Status       string
	Since        time.Time
	Limit        int
	Offset       int
}

func (c *Catalog) backupQuery(dst any) *bun.SelectQuery {
	return c.db.NewSelect().Model(dst).
		ColumnExpr("j.*").ColumnExpr("vmc.vm_name AS vm_name").ColumnExpr("vmc.instance_uuid AS instance_uuid").ColumnExpr("r.name AS repository_name").
		Join("JOIN vm_contexts AS vmc ON vmc.context_id = j.vm_context_id").
		Join("JOIN repositories AS r ON r.id = j.repository_id")
}

// Backups lists jobs, newest first, with the total number matching.
func (c *Catalog) Backups(ctx context.Context, f BackupFilter) ([]BackupRow, int, error) {
	var out []BackupRow
	q := c.backupQuery(&out)
	if f.VMContextID != "" {
		q = q.Where("j.vm_context_id = ?", f.VMContextID)
	}
	if f.RepositoryID != "" {
		q = q.Where("j.repository_id = ?", f.RepositoryID)
	}
	if f.Status != "" {
		q = q.Where("j.status = ?", f.Status)
	}
	if !f.Since.IsZero() {
		q = q.Where("j.created_at >= ?", f.Since.UTC())
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit)).Offset(int64(f.Offset))
	}
	n, err := q.Order("j.created_at DESC", "j.id DESC").ScanAndCount(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list backups: %w", err)
	}
	return out, int(n), nil
}

// BackupByID returns one job with its names, or ErrNotFound.
func (c *Catalog) BackupByID(ctx context.Context, id string) (*BackupRow, error) {
	out := new(BackupRow)
	if err := scanOne(ctx, c.backupQuery(out).Where("j.id = ?", id), fmt.Sprintf("backup %s", id)); err != nil {
		return nil, err
	}
	return out, nil
}

// ChainEntry is one successful backup of one disk.
type ChainEntry struct {
	BackupDisk `bun:",extend"`
	JobCreated time.Time `bun:"job_created_at"`
	Protected  bool      `bun:"job_protected"`
}

// Chain returns the successful backups of every disk of a VM, oldest first.
func (c *Catalog) Chain(ctx context.Context, vmContextID string) ([]ChainEntry, error) {
	var out []ChainEntry
	err := c.db.NewSelect().Model(&out).
		ColumnExpr("bd.*").ColumnExpr("j.created_at AS job_created_at").ColumnExpr("j.protected AS job_protected").
		Join("JOIN backup_jobs AS j ON j.id = bd.job_id").
		Where("bd.vm_context_id = ?", vmContextID).Where("j.status = ?", api.JobSucceeded).
		Order("bd.disk_id ASC", "j.created_at ASC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("select chain of %s: %w", vmContextID, err)
	}
	return out, nil
}

// lockRemovableBackup reads backup id into j inside tx (locking its row on MySQL) and refuses
// what may not be removed or moved: a queued or running job (ErrConflict), a protected backup
// (ErrProtected, ErrConflict); no such backup → ErrNotFound.
func (c *Catalog) lockRemovableBackup(ctx context.Context, tx bun.Tx, id string, j *BackupJob) error {
	q := tx.NewSelect().Model(j).Where("id = ?", id)
	if c.driver == DriverMySQL {
		q = q.For("UPDATE")
	}
	if err := q.Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("backup %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("select backup %s: %w", id, err)
	}
	switch {
	case j.Status == api.JobQueued || j.Status == api.JobRunning:
		return fmt.Errorf("backup %s is %s; cancel it first: %w", id, j.Status, ErrConflict)
	case j.Protected:
		return fmt.Errorf("backup %s: %w; unprotect it first: %w", id, ErrProtected, ErrConflict)
	}
	return nil
}

// DeleteBackup removes a finished, unprotected backup from the catalog, with the records of the
// restores and instant recoveries made from it, and returns its disks so that the caller can
// remove their indexes (the chunks are reclaimed by garbage collection). A queued or running
// job, a protected backup, or one that a restore or an instant recovery still reads →
// ErrConflict naming why.
func (c *Catalog) DeleteBackup(ctx context.Context, id string) (*BackupJob, []BackupDisk, error) {
	j := new(BackupJob)
	var disks []BackupDisk
	err := c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := c.lockRemovableBackup(ctx, tx, id, j); err != nil {
			return err
		}
		if err := releaseBackupUsers(ctx, tx, id, c.now()); err != nil {
			return err
		}
		if err := tx.NewSelect().Model(&disks).Where("job_id = ?", id).Scan(ctx); err != nil {
			return fmt.Errorf("select disks of backup %s: %w", id, err)
		}
		// vm_disks.job_id must keep naming an existing job: the newest other job of the VM, or
		// NULL when none is left.
		var other string
		err := tx.NewSelect().Model((*BackupJob)(nil)).Column("id").
			Where("vm_context_id = ?", j.VMContextID).Where("id <> ?", id).
			Order("created_at DESC").Limit(1).Scan(ctx, &other)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("select other jobs: %w", err)
		}
		uq := tx.NewUpdate().Model((*VMDisk)(nil)).Set("updated_at = ?", c.now()).Where("job_id = ?", id)
		if other == "" {
			uq = uq.Set("job_id = NULL")
		} else {
			uq = uq.Set("job_id = ?", other)
		}
		if _, err := uq.Exec(ctx); err != nil {
			return fmt.Errorf("repoint disks of backup %s: %w", id, err)
		}
		if _, err := tx.NewDelete().Model((*UploadSlot)(nil)).
			Where("session_id IN (?)", tx.NewSelect().Model((*UploadSession)(nil)).Column("id").Where("job_id = ?", id)).Exec(ctx); err != nil {
			return fmt.Errorf("delete slots of backup %s: %w", id, err)
		}
		for _, m := range []any{(*UploadSession)(nil), (*BackupDisk)(nil)} {
			if _, err := tx.NewDelete().Model(m).Where("job_id = ?", id).Exec(ctx); err != nil {
				return fmt.Errorf("delete backup %s: %w", id, err)
			}
		}
		if _, err := tx.NewDelete().Model((*BackupJob)(nil)).Where("id = ?", id).Exec(ctx); err != nil {
			return fmt.Errorf("delete backup %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return j, disks, nil
}

// releaseBackupUsers deletes the records of the finished restores and instant recoveries of
// backup id, which name it; one still reading it (refuseBackupUsers) → ErrConflict, and nothing
// is deleted. The caller holds the backup's row, so that no new restore starts meanwhile.
func releaseBackupUsers(ctx context.Context, tx bun.Tx, id string, now time.Time) error {
	if err := refuseBackupUsers(ctx, tx, id, now); err != nil {
		return err
	}
	for _, m := range []any{(*RestoreJob)(nil), (*InstantRecovery)(nil)} {
		if _, err := tx.NewDelete().Model(m).Where("backup_id = ?", id).Exec(ctx); err != nil {
			return fmt.Errorf("delete restore records of backup %s: %w", id, err)
		}
	}
	return nil
}

// refuseBackupUsers answers ErrConflict, naming it, when something still reads backup id where it
// is: a restore queued or running, an instant recovery not yet stopped, failed or migrated, an
// incremental being uploaded onto it, a copy being written from it, a restore test queued or
// running. The caller holds the
// backup's row.
func refuseBackupUsers(ctx context.Context, tx bun.Tx, id string, now time.Time) error {
	users := []struct {
		q    *bun.SelectQuery
		what string // the refusal, given the ids found
	}{
		{tx.NewSelect().Model((*RestoreJob)(nil)).Column("id").Where("backup_id = ?", id).
			Where("status IN (?)", bun.In([]string{api.JobQueued, api.JobRunning})),
			"backup %s is being restored (%s); wait for it or cancel it first"},
		{tx.NewSelect().Model((*InstantRecovery)(nil)).Column("id").Where("backup_id = ?", id).
			Where("status NOT IN (?)", bun.In([]string{api.IRStopped, api.IRFailed, api.IRMigrated})),
			"backup %s runs instant recovery %s; stop it first"},
		{tx.NewSelect().Model((*UploadSession)(nil)).ColumnExpr("DISTINCT job_id").Where("parent_job_id = ?", id).
			Where("status IN (?)", bun.In(unfinishedSessions)),
			"backup %s is the parent of running incremental backup %s; wait for it or cancel it first"},
		{tx.NewSelect().Model((*CopyWrite)(nil)).ColumnExpr("DISTINCT repository_id").Where("backup_id = ?", id).
			Where("expires_at > ?", now),
			"backup %s is being copied into repository %s; wait for the copy to end"},
		{tx.NewSelect().Model((*RestoreTest)(nil)).Column("id").Where("backup_id = ?", id).
			Where("status IN (?)", bun.In([]string{api.RestoreTestQueued, api.RestoreTestRunning})),
			"backup %s is being restore-tested (%s); wait for the test to end"},
		// A client's hold is named without its id, which is what renews and ends it.
		{tx.NewSelect().Model((*BackupRead)(nil)).ColumnExpr("DISTINCT CASE WHEN id LIKE ? THEN 'a client hold' ELSE id END", HoldPrefix+"%").
			Where("backup_id = ?", id).Where("expires_at > ?", now),
			"backup %s is being read by a client (%s: a download, a file-level restore); wait for it to end"},
	}
	for _, u := range users {
		var ids []string
		if err := u.q.Scan(ctx, &ids); err != nil {
			return fmt.Errorf("select the users of backup %s: %w", id, err)
		}
		if len(ids) > 0 {
			slices.Sort(ids)
			return fmt.Errorf(u.what+": %w", id, strings.Join(ids, ", "), ErrConflict)
		}
	}
	return nil
}

// SetProtected protects a backup from pruning and deletion, or lifts that protection.
func (c *Catalog) SetProtected(ctx context.Context, id string, protected bool) error {
	res, err := c.db.NewUpdate().Model((*BackupJob)(nil)).Set("protected = ?", protected).Set("updated_at = ?", c.now()).
		Where("id = ?", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("protect backup %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("backup %s: %w", id, ErrNotFound)
	}
	return nil
}

// RecordVerify stores the outcome of verifying a backup.
func (c *Catalog) RecordVerify(ctx context.Context, id, status string, at time.Time) error {
	_, err := c.db.NewUpdate().Model((*BackupJob)(nil)).Set("verified_at = ?", at.UTC()).Set("verify_status = ?", status).
		Where("id = ?", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record verification of backup %s: %w", id, err)
	}
	return nil
}

// VerifySummary returns how many successful backups were found damaged at their last
// verification, and the time of the most recent verification.
func (c *Catalog) VerifySummary(ctx context.Context) (int, time.Time, error) {
	damaged, err := c.db.NewSelect().Model((*BackupJob)(nil)).Where("status = ?", api.JobSucceeded).Where("verify_status = ?", api.VerifyDamaged).Count(ctx)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count damaged backups: %w", err)
	}
	var last BackupJob
	err = c.db.NewSelect().Model(&last).Column("verified_at").Where("verified_at IS NOT NULL").Order("verified_at DESC").Limit(1).Scan(ctx)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, time.Time{}, fmt.Errorf("latest verification: %w", err)
	}
	return int(damaged), last.VerifiedAt, nil
}

// IndexedDisk is one disk result that names an index in a repository.
type IndexedDisk struct {
	JobID        string `bun:"job_id"`
	DiskID       string `bun:"disk_id"`
	InstanceUUID string `bun:"instance_uuid"`
	JobStatus    string `bun:"job_status"`
	DiskStatus   string `bun:"disk_status"`
}

// IndexedDisks lists every disk result of every job in a repository, or copied into it
// (backup_copies), with the job's status: the catalog's side of a consistency check.
func (c *Catalog) IndexedDisks(ctx context.Context, repositoryID string) ([]IndexedDisk, error) {
	var out []IndexedDisk
	err := c.db.NewSelect().Model((*BackupDisk)(nil)).
		ColumnExpr("bd.job_id AS job_id").ColumnExpr("bd.disk_id AS disk_id").ColumnExpr("bd.status AS disk_status").
		ColumnExpr("vmc.instance_uuid AS instance_uuid").ColumnExpr("j.status AS job_status").
		Join("JOIN backup_jobs AS j ON j.id = bd.job_id").
		Join("JOIN vm_contexts AS vmc ON vmc.context_id = j.vm_context_id").
		Where("j.repository_id = ? OR j.id IN (SELECT backup_id FROM backup_copies WHERE repository_id = ?)", repositoryID, repositoryID).
		Scan(ctx, &out)
	if err != nil {
		return nil, fmt.Errorf("list indexed disks: %w", err)
	}
	return out, nil
}

// WritingBackupIDs returns the ids of the backups whose indexes may be being written: queued
// and running jobs, and backups with an unexpired copy write (into any repository).
func (c *Catalog) WritingBackupIDs(ctx context.Context) (map[string]bool, error) {
	var ids, copying []string
	if err := c.db.NewSelect().Model((*BackupJob)(nil)).Column("id").Where("status IN (?)", bun.In([]string{api.JobQueued, api.JobRunning})).Scan(ctx, &ids); err != nil {
		return nil, fmt.Errorf("list active jobs: %w", err)
	}
	if err := c.db.NewSelect().Model((*CopyWrite)(nil)).Column("backup_id").Where("expires_at > ?", c.now()).Scan(ctx, &copying); err != nil {
		return nil, fmt.Errorf("list copies being written: %w", err)
	}
	ids = append(ids, copying...)
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}
