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

// ErrInPlaceRestoreActive is returned when a backup is asked for a VM whose in-place restore is
// queued or running.
var ErrInPlaceRestoreActive = errors.New("the VM has an in-place restore queued or running")

// ErrRestoreActive is returned when a restore to the same VM name on the same source is
// already queued or running.
var ErrRestoreActive = errors.New("a restore to this VM name is already queued or running")

// RestoreJob is one restore of a backup as a new VM.
type RestoreJob struct {
	bun.BaseModel `bun:"table:restore_jobs,alias:rj"`

	ID         string `bun:"id,pk"`
	BackupID   string `bun:"backup_id,notnull"`
	AgentID    string `bun:"agent_id,notnull"`
	SourceName string `bun:"source_name,notnull"` // the target source, as its agent names it
	TargetName string `bun:"target_name,notnull"` // the new VM's name (in place: the VM's)
	// VMContextID is the VM an in-place restore overwrites ("" for a restore as a new VM): no
	// backup of it may be queued or running at the same time.
	VMContextID string `bun:"vm_context_id,nullzero"`
	// Spec is the normalised api.RestoreRequest (JSON).
	Spec            string `bun:"spec,notnull"`
	Status          string `bun:"status,notnull"`
	CancelRequested bool   `bun:"cancel_requested,notnull"`
	Phase           string `bun:"phase,notnull"`
	VMRef           string `bun:"vm_ref,nullzero"` // the VM the agent created, while it exists
	// VMWasOn is the power state an in-place restore found the VM in, as its first run
	// reported it before powering it off (nil until then): a resumed run powers it on again.
	VMWasOn      *bool     `bun:"vm_was_on"`
	BytesWritten int64     `bun:"bytes_written,notnull"`
	BytesTotal   int64     `bun:"bytes_total,notnull"`
	Error        string    `bun:"error,nullzero"`
	ClaimedAt    time.Time `bun:"claimed_at,nullzero"`
	HeartbeatAt  time.Time `bun:"heartbeat_at,nullzero"`
	FinishedAt   time.Time `bun:"finished_at,nullzero"`
	CreatedAt    time.Time `bun:"created_at,notnull"`
	UpdatedAt    time.Time `bun:"updated_at,notnull"`
}

// SourceByName returns the source called name (as the agents report it). A name reported by
// more than one agent → ErrConflict: the operator must rename one.
func (c *Catalog) SourceByName(ctx context.Context, name string) (*Source, error) {
	var ss []Source
	if err := c.db.NewSelect().Model(&ss).Where("name = ?", name).Limit(2).Scan(ctx); err != nil {
		return nil, fmt.Errorf("select source %q: %w", name, err)
	}
	switch len(ss) {
	case 0:
		return nil, fmt.Errorf("source %q: %w", name, ErrNotFound)
	case 1:
		return &ss[0], nil
	default:
		return nil, fmt.Errorf("source %q is reported by agents %s and %s: %w", name, ss[0].AgentID, ss[1].AgentID, ErrConflict)
	}
}

// CreateRestoreJob records a queued restore unless one to the same VM name on the same source
// is queued or running (ErrRestoreActive, ErrConflict).
func (c *Catalog) CreateRestoreJob(ctx context.Context, j *RestoreJob) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if j.VMContextID != "" {
			// The same lock CreateJob takes: a backup and an in-place restore of one VM are
			// never both queued or running.
			if _, err := c.lockVM(ctx, tx, j.VMContextID); err != nil {
				return err
			}
			if err := activeBackup(ctx, tx, j.VMContextID); err != nil {
				return err
			}
		}
		var active RestoreJob
		err := tx.NewSelect().Model(&active).Column("id", "status").
			Where("agent_id = ?", j.AgentID).Where("source_name = ?", j.SourceName).Where("target_name = ?", j.TargetName).
			Where("status IN (?)", bun.In([]string{api.JobQueued, api.JobRunning})).Limit(1).Scan(ctx)
		if err == nil {
			return fmt.Errorf("%w: %s is %s: %w", ErrRestoreActive, active.ID, active.Status, ErrConflict)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("check active restores: %w", err)
		}
		now := c.now()
		j.Status, j.CreatedAt, j.UpdatedAt = api.JobQueued, now, now
		if _, err := tx.NewInsert().Model(j).Exec(ctx); err != nil {
			return fmt.Errorf("insert restore job: %w", err)
		}
		return nil
	})
}

// RestoreJobByID returns one restore or ErrNotFound.
func (c *Catalog) RestoreJobByID(ctx context.Context, id string) (*RestoreJob, error) {
	j := new(RestoreJob)
	if err := scanOne(ctx, c.db.NewSelect().Model(j).Where("id = ?", id), "restore "+id); err != nil {
		return nil, err
	}
	return j, nil
}

// AgentRestoreJob returns a restore only when it belongs to the agent (else ErrNotYours).
func (c *Catalog) AgentRestoreJob(ctx context.Context, id, agentID string) (*RestoreJob, error) {
	j, err := c.RestoreJobByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if j.AgentID != agentID {
		return nil, fmt.Errorf("restore %s: %w", id, ErrNotYours)
	}
	return j, nil
}

// RestoreFilter selects restores for listing.
type RestoreFilter struct {
	Status   string
	BackupID string
	Limit    int
	Offset   int
}

// RestoreJobs lists restores, newest first, with the total matching count.
func (c *Catalog) RestoreJobs(ctx context.Context, f RestoreFilter) ([]RestoreJob, int, error) {
	var out []RestoreJob
	q := c.db.NewSelect().Model(&out).Order("created_at DESC", "id DESC")
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.BackupID != "" {
		q = q.Where("backup_id = ?", f.BackupID)
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit)).Offset(int64(f.Offset))
	}
	n, err := q.ScanAndCount(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list restores: %w", err)
	}
	return out, int(n), nil
}

// ClaimRestoreJob hands the agent a restore: first one of its running restores it is not
// working on (it restarted), else the oldest queued one, claimed with a conditional UPDATE so
// that it is claimed exactly once. It returns (nil, false, nil) when there is nothing to do.
func (c *Catalog) ClaimRestoreJob(ctx context.Context, agentID string, busy []string) (*RestoreJob, bool, error) {
	q := c.db.NewSelect().Model((*RestoreJob)(nil)).Where("agent_id = ?", agentID).Where("status = ?", api.JobRunning).Order("created_at ASC").Limit(1)
	if len(busy) > 0 {
		q = q.Where("id NOT IN (?)", bun.In(busy))
	}
	resume := new(RestoreJob)
	err := q.Scan(ctx, resume)
	if err == nil {
		return resume, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("find running restores: %w", err)
	}
	for range 5 { // another claimer may win a candidate; try the next
		cand := new(RestoreJob)
		err := c.db.NewSelect().Model(cand).Where("agent_id = ?", agentID).Where("status = ?", api.JobQueued).Order("created_at ASC").Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("find queued restores: %w", err)
		}
		now := c.now()
		res, err := c.db.NewUpdate().Model((*RestoreJob)(nil)).
			Set("status = ?", api.JobRunning).Set("claimed_at = ?", now).Set("heartbeat_at = ?", now).Set("updated_at = ?", now).
			Where("id = ?", cand.ID).Where("status = ?", api.JobQueued).Where("agent_id = ?", agentID).Exec(ctx)
		if err != nil {
			return nil, false, fmt.Errorf("claim restore %s: %w", cand.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			j, err := c.RestoreJobByID(ctx, cand.ID)
			return j, false, err
		}
	}
	return nil, false, nil
}

// RestoreProgress records a running restore's heartbeat, phase, created VM and bytes; it
// returns the job. A restore that is not running → ErrConflict.
func (c *Catalog) RestoreProgress(ctx context.Context, id, agentID, phase, vmRef string, written, total int64) (*RestoreJob, error) {
	now := c.now()
	q := c.db.NewUpdate().Model((*RestoreJob)(nil)).
		Set("heartbeat_at = ?", now).Set("updated_at = ?", now).Set("phase = ?", phase).
		Set("bytes_written = ?", written).Set("bytes_total = ?", total).
		Where("id = ?", id).Where("agent_id = ?", agentID).Where("status = ?", api.JobRunning)
	if vmRef != "" {
		q = q.Set("vm_ref = ?", vmRef)
	}
	if _, err := q.Exec(ctx); err != nil {
		return nil, fmt.Errorf("record progress of restore %s: %w", id, err)
	}
	j, err := c.AgentRestoreJob(ctx, id, agentID)
	if err != nil {
		return nil, err
	}
	if j.Status != api.JobRunning {
		return j, fmt.Errorf("restore %s is %s: %w", id, j.Status, ErrConflict)
	}
	return j, nil
}

// RecordVMWasOn records the power state a running in-place restore found its VM in. Only the
// first report counts: a resumed run finds the VM off because an earlier run powered it off.
func (c *Catalog) RecordVMWasOn(ctx context.Context, id, agentID string, on bool) error {
	_, err := c.db.NewUpdate().Model((*RestoreJob)(nil)).Set("vm_was_on = ?", on).
		Where("id = ?", id).Where("agent_id = ?", agentID).Where("status = ?", api.JobRunning).Where("vm_was_on IS NULL").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("record the power state of the vm of restore %s: %w", id, err)
	}
	return nil
}

// CancelRestore cancels a queued restore at once, or asks the agent to stop a running one.
func (c *Catalog) CancelRestore(ctx context.Context, id string) (*RestoreJob, error) {
	now := c.now()
	res, err := c.db.NewUpdate().Model((*RestoreJob)(nil)).
		Set("status = ?", api.JobCancelled).Set("cancel_requested = ?", true).Set("finished_at = ?", now).
		Set("error = ?", "cancelled before it started").Set("updated_at = ?", now).
		Where("id = ?", id).Where("status = ?", api.JobQueued).Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("cancel restore %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		res, err = c.db.NewUpdate().Model((*RestoreJob)(nil)).
			Set("cancel_requested = ?", true).Set("updated_at = ?", now).
			Where("id = ?", id).Where("status = ?", api.JobRunning).Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("cancel restore %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			j, err := c.RestoreJobByID(ctx, id)
			if err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("restore %s is %s: %w: %w", id, j.Status, ErrNotCancellable, ErrConflict)
		}
	}
	return c.RestoreJobByID(ctx, id)
}

// FinishRestore ends a running restore of the agent. vmRef is the VM left behind: the restored
// VM on success, "" when the agent removed (or never created) it. The same outcome again is not
// an error; another outcome of a finished restore → ErrConflict.
func (c *Catalog) FinishRestore(ctx context.Context, id, agentID, status, errMsg, vmRef string) (*RestoreJob, error) {
	now := c.now()
	q := c.db.NewUpdate().Model((*RestoreJob)(nil)).
		Set("status = ?", status).Set("finished_at = ?", now).Set("heartbeat_at = ?", now).Set("updated_at = ?", now).
		Set("vm_ref = ?", sql.NullString{String: vmRef, Valid: vmRef != ""}).
		Where("id = ?", id).Where("agent_id = ?", agentID).Where("status = ?", api.JobRunning)
	if status == api.JobSucceeded {
		q = q.Set("phase = ?", api.PhaseFinished)
	}
	if errMsg != "" {
		q = q.Set("error = ?", truncate(errMsg, 4000))
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("finish restore %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	j, err := c.AgentRestoreJob(ctx, id, agentID)
	if err != nil {
		return nil, err
	}
	if n == 0 && j.Status != status {
		return nil, fmt.Errorf("restore %s is %s: %w", id, j.Status, ErrConflict)
	}
	return j, nil
}

// FailStaleRestores fails running restores whose agent has not reported since before cutoff,
// and queued restores whose agent was revoked or has not been seen since before cutoff. The VM
// reference stays on a failed running restore, so that the operator sees what is left behind.
func (c *Catalog) FailStaleRestores(ctx context.Context, cutoff time.Time) ([]RestoreJob, error) {
	cutoff = cutoff.UTC()
	var cands []RestoreJob
	err := c.db.NewSelect().Model(&cands).
		Join("JOIN agents AS a ON a.id = rj.agent_id").
		WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("rj.status = ? AND rj.heartbeat_at < ?", api.JobRunning, cutoff).
				WhereOr("rj.status = ? AND a.status = ?", api.JobQueued, api.AgentRevoked).
				WhereOr("rj.status = ? AND rj.created_at < ? AND (a.last_seen_at IS NULL OR a.last_seen_at < ?)", api.JobQueued, cutoff, cutoff)
		}).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("find stale restores: %w", err)
	}
	var failed []RestoreJob
	for _, j := range cands {
		reason := "the agent stopped reporting progress (timed out)"
		if j.Status == api.JobQueued {
			reason = fmt.Sprintf("not claimed: agent %s was revoked or has not been seen since the restore was queued", j.AgentID)
		}
		now := c.now()
		q := c.db.NewUpdate().Model((*RestoreJob)(nil)).
			Set("status = ?", api.JobFailed).Set("error = ?", reason).Set("finished_at = ?", now).Set("updated_at = ?", now).
			Where("id = ?", j.ID).Where("status = ?", j.Status)
		if j.Status == api.JobRunning {
			q = q.Where("heartbeat_at < ?", cutoff)
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return failed, fmt.Errorf("fail stale restore %s: %w", j.ID, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			continue // it reported, was claimed or finished meanwhile
		}
		j.Status, j.Error, j.FinishedAt = api.JobFailed, reason, now
		failed = append(failed, j)
	}
	return failed, nil
}

// CountRestoresByStatus returns the number of restores per status.
func (c *Catalog) CountRestoresByStatus(ctx context.Context) (map[string]int, error) {
	var rows []struct {
		Status string `bun:"status"`
		N      int    `bun:"n"`
	}
	if err := c.db.NewSelect().Model((*RestoreJob)(nil)).Column("status").ColumnExpr("COUNT(*) AS n").Group("status").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("count restores: %w", err)
	}
	out := map[string]int{api.JobQueued: 0, api.JobRunning: 0, api.JobSucceeded: 0, api.JobFailed: 0, api.JobCancelled: 0}
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out, nil
}

// activeInPlaceRestore refuses (ErrInPlaceRestoreActive, ErrConflict) while an in-place restore
// of the VM is queued or running. The caller holds the VM's lock.
func activeInPlaceRestore(ctx context.Context, tx bun.Tx, contextID string) error {
	var active RestoreJob
	err := tx.NewSelect().Model(&active).Column("id", "status").
		Where("vm_context_id = ?", contextID).Where("status IN (?)", bun.In([]string{api.JobQueued, api.JobRunning})).
		Limit(1).Scan(ctx)
	if err == nil {
		return fmt.Errorf("%w: %s is %s: %w", ErrInPlaceRestoreActive, active.ID, active.Status, ErrConflict)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("check active in-place restores: %w", err)
	}
	return nil
}

// InPlaceRestoredAfter returns the id of the latest in-place restore of the VM that an agent
// ran (claimed) and that ended after the backup backupID finished, or "" when there is none: a
// backup after it must be full. A restore that failed or was cancelled counts too: it may have
// written part of the disks, through a path CBT does not see.
func (c *Catalog) InPlaceRestoredAfter(ctx context.Context, contextID, backupID string) (string, error) {
	var rs []RestoreJob
	err := c.db.NewSelect().Model(&rs).Column("rj.id").
		Join("JOIN backup_jobs AS b ON b.id = ?", backupID).
		Where("rj.vm_context_id = ?", contextID).Where("rj.claimed_at IS NOT NULL").
		Where("rj.status IN (?)", bun.In([]string{api.JobSucceeded, api.JobFailed, api.JobCancelled})).
		Where("(b.finished_at IS NULL OR rj.finished_at >= b.finished_at)").
		Order("rj.finished_at DESC").Limit(1).Scan(ctx)
	if err != nil {
		return "", fmt.Errorf("find in-place restores of vm %s: %w", contextID, err)
	}
	if len(rs) == 0 {
		return "", nil
	}
	return rs[0].ID, nil
}
