package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/uptrace/bun"
)

// OpenSession creates the upload session of one disk of a job, or returns the existing one (an
// agent resuming after a restart opens it again). Reopening with other parameters → ErrConflict.
func (c *Catalog) OpenSession(ctx context.Context, s *UploadSession) (*UploadSession, error) {
	ex, err := c.sessionOf(ctx, s.JobID, s.DiskID)
	switch {
	case err == nil:
		return sameSession(ex, s)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, err
	}
	now := c.now()
	s.Status, s.CreatedAt, s.UpdatedAt = api.SessionOpen, now, now
	err = c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		// An incremental's parent must still be a successful backup of the repository when its
		// session is recorded: its row, read with a shared lock, cannot be deleted or moved
		// (DeleteBackup and RehomeBackup lock it exclusively and then refuse while an unfinished
		// session names it) until this session is there to be seen.
		if s.ParentJobID != "" {
			var status, repo string
			err := tx.QueryRowContext(ctx, "SELECT status, repository_id FROM backup_jobs WHERE id = ?"+c.rowLock(false), s.ParentJobID).Scan(&status, &repo)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("the parent backup %s of this incremental was deleted: %w", s.ParentJobID, ErrConflict)
			case err != nil:
				return fmt.Errorf("select parent backup %s: %w", s.ParentJobID, err)
			case status != api.JobSucceeded || repo != s.RepositoryID:
				return fmt.Errorf("the parent backup %s of this incremental is no longer a successful backup in this repository: %w", s.ParentJobID, ErrConflict)
			}
		}
		if _, err := tx.NewInsert().Model(s).Exec(ctx); err != nil {
			return err
		}
		return nil
	})
	if err == nil {
		return s, nil
	}
	if errors.Is(err, ErrConflict) {
		return nil, err
	}
	if !isUniqueViolation(err) {
		return nil, fmt.Errorf("insert upload session: %w", err)
	}
	// Opened at the same moment by another request of the agent.
	if ex, err = c.sessionOf(ctx, s.JobID, s.DiskID); err != nil {
		return nil, err
	}
	return sameSession(ex, s)
}

// sessionOf returns the session of a job's disk; sql.ErrNoRows when it has none.
func (c *Catalog) sessionOf(ctx context.Context, jobID, diskID string) (*UploadSession, error) {
	ex := new(UploadSession)
	err := c.db.NewSelect().Model(ex).Where("job_id = ?", jobID).Where("disk_id = ?", diskID).Scan(ctx)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("select upload session: %w", err)
	}
	return ex, nil
}

// sameSession returns ex, the session a job's disk has, for a reopening s that asks for the same
// geometry and parent; ErrConflict otherwise.
func sameSession(ex, s *UploadSession) (*UploadSession, error) {
	if ex.Type != s.Type || ex.CapacityBytes != s.CapacityBytes || ex.ChunkSize != s.ChunkSize || ex.ParentJobID != s.ParentJobID || ex.ChangeID != s.ChangeID {
		return nil, fmt.Errorf("disk %s of job %s already has a %s session for %d bytes (change id %q): %w", s.DiskID, s.JobID, ex.Type, ex.CapacityBytes, ex.ChangeID, ErrConflict)
	}
	return ex, nil
}

// LiveSession is an upload session with what every request on it must check: the status of
// its job and the VM the job backs up. One query reads it all.
type LiveSession struct {
	UploadSession `bun:",extend"`
	JobStatus     string `bun:"job_status"`
	VMContextID   string `bun:"vm_context_id"`
	InstanceUUID  string `bun:"instance_uuid"`
}

// AgentLiveSession returns the agent's session with its job's status and VM, in one query;
// another agent's session → ErrNotFound.
func (c *Catalog) AgentLiveSession(ctx context.Context, id, agentID string) (*LiveSession, error) {
	s := new(LiveSession)
	q := c.db.NewSelect().Model(s).
		ColumnExpr("upload_session.*").
		ColumnExpr("j.status AS job_status, j.vm_context_id AS vm_context_id, vmc.instance_uuid AS instance_uuid").
		Join("JOIN backup_jobs AS j ON j.id = upload_session.job_id").
		Join("JOIN vm_contexts AS vmc ON vmc.context_id = j.vm_context_id").
		Where("upload_session.id = ?", id).Where("upload_session.agent_id = ?", agentID)
	if err := scanOne(ctx, q, fmt.Sprintf("upload session %s", id)); err != nil {
		return nil, err
	}
	return s, nil
}

// RecordSessionDrift adds n to the slots an open session's drift check found changed although
// CBT called them unchanged (a check sent again counts again: the count is at least the truth).
// A session that is no longer open → ErrConflict.
func (c *Catalog) RecordSessionDrift(ctx context.Context, sessionID string, n int64) error {
	res, err := c.db.NewUpdate().Model((*UploadSession)(nil)).Set("drift_count = drift_count + ?", n).Set("updated_at = ?", c.now()).
		Where("id = ?", sessionID).Where("status = ?", api.SessionOpen).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record CBT drift of session %s: %w", sessionID, err)
	}
	if got, _ := res.RowsAffected(); got != 1 {
		return fmt.Errorf("upload session %s is not open: %w", sessionID, ErrConflict)
	}
	return nil
}

// CountSessionSlots returns how many slots of a session are recorded.
func (c *Catalog) CountSessionSlots(ctx context.Context, sessionID string) (int64, error) {
	n, err := c.db.NewSelect().Model((*UploadSlot)(nil)).Where("session_id = ?", sessionID).Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count slots of session %s: %w", sessionID, err)
	}
	return int64(n), nil
}

// BeginCommit moves an open session to committing, after which it takes no more slots; a
// session already committing stays so (a commit sent again). Any other status → ErrConflict. An
// open session whose drift check found CBT drift (drift_count) must have every slot recorded
// first, or ErrConflict and it stays open: this is decided in one transaction with the move, so
// a drift recorded while the commit was on its way is not missed. It reads the session's row
// with an exclusive lock first, so the slots counted after that are all there will be
// (RecordSlots holds a shared lock of the row while it records).
func (c *Catalog) BeginCommit(ctx context.Context, sessionID string) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var was string
		err := tx.QueryRowContext(ctx, "SELECT status FROM upload_sessions WHERE id = ?"+c.rowLock(true), sessionID).Scan(&was)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("upload session %s: %w", sessionID, ErrNotFound)
		case err != nil:
			return fmt.Errorf("begin commit of session %s: %w", sessionID, err)
		case was == api.SessionCommitting:
			return nil
		case was != api.SessionOpen:
			return fmt.Errorf("upload session %s is %s, neither open nor committing: %w", sessionID, was, ErrConflict)
		}
		var drift, slots int64
		if err := tx.QueryRowContext(ctx, "SELECT drift_count, slot_count FROM upload_sessions WHERE id = ?", sessionID).Scan(&drift, &slots); err != nil {
			return fmt.Errorf("begin commit of session %s: %w", sessionID, err)
		}
		if drift > 0 {
			n, err := tx.NewSelect().Model((*UploadSlot)(nil)).Where("session_id = ?", sessionID).Count(ctx)
			if err != nil {
				return fmt.Errorf("count slots of session %s: %w", sessionID, err)
			}
			if int64(n) < slots {
				return fmt.Errorf("CBT drift was found in upload session %s, so every slot must be read before its commit; %d of %d are recorded: %w",
					sessionID, n, slots, ErrConflict)
			}
		}
		if _, err := tx.NewUpdate().Model((*UploadSession)(nil)).Set("status = ?", api.SessionCommitting).Set("updated_at = ?", c.now()).
			Where("id = ?", sessionID).Exec(ctx); err != nil {
			return fmt.Errorf("begin commit of session %s: %w", sessionID, err)
		}
		return nil
	})
}

// EachSessionSlot calls fn with each recorded slot of a session and its digest, in slot order,
// reading the rows as it goes: a session of millions of slots is never held as rows. An error
// from fn stops the walk and is returned.
func (c *Catalog) EachSessionSlot(ctx context.Context, sessionID string, fn func(slot int64, digest string) error) error {
	rows, err := c.db.NewSelect().Model((*UploadSlot)(nil)).Column("slot", "digest").
		Where("session_id = ?", sessionID).Order("slot ASC").Rows(ctx)
	if err != nil {
		return fmt.Errorf("select slots of session %s: %w", sessionID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var slot int64
		var digest string
		if err := rows.Scan(&slot, &digest); err != nil {
			return fmt.Errorf("read slots of session %s: %w", sessionID, err)
		}
		if err := fn(slot, digest); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read slots of session %s: %w", sessionID, err)
	}
	return nil
}

// SessionSlots returns the recorded slots of a session in slot order.
func (c *Catalog) SessionSlots(ctx context.Context, sessionID string) ([]UploadSlot, error) {
	var out []UploadSlot
	if err := c.db.NewSelect().Model(&out).Where("session_id = ?", sessionID).Order("slot ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("select slots of session %s: %w", sessionID, err)
	}
	return out, nil
}

// CommitSession closes a committing session (BeginCommit) and records the disk's result (not yet
// visible as a backup: the job must succeed first). Committing a committed session returns its
// result.
func (c *Catalog) CommitSession(ctx context.Context, sessionID string, bd *BackupDisk) (*BackupDisk, error) {
	err := c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := c.now()
		res, err := tx.NewUpdate().Model((*UploadSession)(nil)).Set("status = ?", api.SessionCommitted).Set("updated_at = ?", now).
			Where("id = ?", sessionID).Where("status = ?", api.SessionCommitting).Exec(ctx)
		if err != nil {
			return fmt.Errorf("commit session %s: %w", sessionID, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errAlreadyCommitted
		}
		bd.Status, bd.CreatedAt, bd.UpdatedAt = "committed", now, now
		if _, err := tx.NewInsert().Model(bd).Exec(ctx); err != nil {
			return fmt.Errorf("record disk %s of job %s: %w", bd.DiskID, bd.JobID, err)
		}
		if bd.CBTDrift {
			if _, err := tx.NewUpdate().Model((*BackupJob)(nil)).Set("cbt_drift = ?", true).Where("id = ?", bd.JobID).Exec(ctx); err != nil {
				return fmt.Errorf("record CBT drift of job %s: %w", bd.JobID, err)
			}
		}
		return nil
	})
	if errors.Is(err, errAlreadyCommitted) {
		ex := new(BackupDisk)
		if err := c.db.NewSelect().Model(ex).Where("job_id = ?", bd.JobID).Where("disk_id = ?", bd.DiskID).Scan(ctx); err != nil {
			return nil, fmt.Errorf("upload session %s is not open: %w", sessionID, ErrConflict)
		}
		return ex, nil
	}
	if err != nil {
		return nil, err
	}
	return bd, nil
}

var errAlreadyCommitted = errors.New("session already committed")

// unfinishedSessions are the statuses of a session whose chunks no index names yet.
var unfinishedSessions = []string{api.SessionOpen, api.SessionCommitting}

// LatestBackupDisk returns the newest successful backup of a disk in a repository: the parent of
// an incremental. No backup → ErrNotFound.
func (c *Catalog) LatestBackupDisk(ctx context.Context, vmContextID, diskID, repositoryID string) (*BackupDisk, error) {
	bd := new(BackupDisk)
	err := c.db.NewSelect().Model(bd).
		Join("JOIN backup_jobs AS j ON j.id = bd.job_id").
		Where("bd.vm_context_id = ?", vmContextID).Where("bd.disk_id = ?", diskID).
		Where("bd.status = ?", api.JobSucceeded).Where("j.status = ?", api.JobSucceeded).Where("j.repository_id = ?", repositoryID).
		Order("j.created_at DESC").Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("backup of %s/%s: %w", vmContextID, diskID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("select latest backup of %s/%s: %w", vmContextID, diskID, err)
	}
	return bd, nil
}

// BackupDisks returns the per-disk results of a job.
func (c *Catalog) BackupDisks(ctx context.Context, jobID string) ([]BackupDisk, error) {
	var out []BackupDisk
	if err := c.db.NewSelect().Model(&out).Where("job_id = ?", jobID).Order("disk_id ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("select disks of backup %s: %w", jobID, err)
	}
	return out, nil
}

// OpenSessionDigests returns every digest recorded by an open or committing session writing to
// the repository: chunks that garbage collection must keep although no index names them yet.
func (c *Catalog) OpenSessionDigests(ctx context.Context, repositoryID string) ([]string, error) {
	var out []string
	err := c.db.NewSelect().Model((*UploadSlot)(nil)).ColumnExpr("DISTINCT us.digest").
		Join("JOIN upload_sessions AS s ON s.id = us.session_id").
		Where("s.repository_id = ?", repositoryID).Where("s.status IN (?)", bun.In(unfinishedSessions)).
		Scan(ctx, &out)
	if err != nil {
		return nil, fmt.Errorf("select digests of open sessions: %w", err)
	}
	return out, nil
}

// OldestWrite returns when the oldest write into the repository that is still going on began
// (zero when none is): an open or committing upload session, or an unexpired copy write. Every
// chunk such a write stored or touched is younger than that.
func (c *Catalog) OldestWrite(ctx context.Context, repositoryID string) (time.Time, error) {
	var s UploadSession
	err := c.db.NewSelect().Model(&s).Column("created_at").
		Where("repository_id = ?", repositoryID).Where("status IN (?)", bun.In(unfinishedSessions)).
		Order("created_at ASC").Limit(1).Scan(ctx)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, fmt.Errorf("oldest open session: %w", err)
	}
	oldest := s.CreatedAt
	var r CopyWrite
	err = c.db.NewSelect().Model(&r).Column("started_at").
		Where("repository_id = ?", repositoryID).Where("expires_at > ?", c.now()).
		Order("started_at ASC").Limit(1).Scan(ctx)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, fmt.Errorf("oldest copy write: %w", err)
	}
	if !r.StartedAt.IsZero() && (oldest.IsZero() || r.StartedAt.Before(oldest)) {
		oldest = r.StartedAt
	}
	return oldest, nil
}

// rowLock is the clause that makes a SELECT in a transaction lock the rows it reads, shared or
// exclusive, on MySQL. SQLite's transactions here are immediate (one writer at a time): its
// reads need none.
func (c *Catalog) rowLock(exclusive bool) string {
	switch {
	case c.driver != DriverMySQL:
		return ""
	case exclusive:
		return " FOR UPDATE"
	}
	return " LOCK IN SHARE MODE"
}
