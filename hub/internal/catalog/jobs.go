package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/uptrace/bun"
)

// ErrJobActive is returned when a VM already has a queued or running backup job.
var ErrJobActive = errors.New("the VM already has a backup job queued or running")

var errNotStale = errors.New("job is no longer stale")

// ErrNotCancellable is returned when a job has already finished.
var ErrNotCancellable = errors.New("the job has already finished")

// lockVM takes a row lock on the VM for the rest of the transaction (MySQL); on SQLite the
// immediate transaction already serialises writers.
func (c *Catalog) lockVM(ctx context.Context, tx bun.Tx, contextID string) (*VMContext, error) {
	vm := new(VMContext)
	q := tx.NewSelect().Model(vm).Where("context_id = ?", contextID)
	if c.driver == DriverMySQL {
		q = q.For("UPDATE")
	}
	if err := q.Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("vm %s: %w", contextID, ErrNotFound)
		}
		return nil, fmt.Errorf("lock vm %s: %w", contextID, err)
	}
	return vm, nil
}

// activeBackup refuses (ErrJobActive, ErrConflict) while the VM has a queued or running backup.
// The caller holds the VM's lock.
func activeBackup(ctx context.Context, tx bun.Tx, contextID string) error {
	var active BackupJob
	err := tx.NewSelect().Model(&active).Column("id", "status").
		Where("vm_context_id = ?", contextID).Where("status IN (?)", bun.In([]string{api.JobQueued, api.JobRunning})).
		Limit(1).Scan(ctx)
	if err == nil {
		return fmt.Errorf("%w: %s is %s: %w", ErrJobActive, active.ID, active.Status, ErrConflict)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("check active jobs: %w", err)
	}
	return nil
}

// CreateJob records a queued job unless its VM already has an active backup (ErrJobActive) or
// in-place restore (ErrInPlaceRestoreActive).
func (c *Catalog) CreateJob(ctx context.Context, j *BackupJob) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := c.lockVM(ctx, tx, j.VMContextID); err != nil {
			return err
		}
		if err := activeBackup(ctx, tx, j.VMContextID); err != nil {
			return err
		}
		if err := activeInPlaceRestore(ctx, tx, j.VMContextID); err != nil {
			return err
		}
		now := c.now()
		j.Status, j.CreatedAt, j.UpdatedAt = api.JobQueued, now, now
		if _, err := tx.NewInsert().Model(j).Exec(ctx); err != nil {
			return fmt.Errorf("insert job: %w", err)
		}
		return nil
	})
}

// JobByID returns one job or ErrNotFound.
func (c *Catalog) JobByID(ctx context.Context, id string) (*BackupJob, error) {
	j := new(BackupJob)
	if err := scanOne(ctx, c.db.NewSelect().Model(j).Where("id = ?", id), fmt.Sprintf("backup %s", id)); err != nil {
		return nil, err
	}
	return j, nil
}

// SetJobVMConfig records the digest of the VM configuration a running job of the agent stored
// in its repository. Recording the same digest again is not an error; a job that is not running,
// or that recorded another digest → ErrConflict.
func (c *Catalog) SetJobVMConfig(ctx context.Context, id, agentID, digest string) error {
	res, err := c.db.NewUpdate().Model((*BackupJob)(nil)).
		Set("vm_config_digest = ?", digest).Set("updated_at = ?", c.now()).
		Where("id = ?", id).Where("agent_id = ?", agentID).Where("status = ?", api.JobRunning).
		Where("(vm_config_digest IS NULL OR vm_config_digest = ?)", digest).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record vm config of job %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("record vm config of job %s: %w", id, err)
	} else if n == 1 {
		return nil
	}
	j, err := c.AgentJob(ctx, id, agentID)
	switch {
	case err != nil:
		return err
	case j.Status != api.JobRunning:
		return fmt.Errorf("job %s is %s: %w", id, j.Status, ErrConflict)
	case j.VMConfigDigest == digest:
		return nil // MySQL counts rows changed, not matched: the same digest again changes none
	default:
		return fmt.Errorf("job %s recorded another vm configuration: %w", id, ErrConflict)
	}
}

// ErrNotYours: the job exists but belongs to another agent. It differs from ErrNotFound on
// purpose: an agent's snapshot reaper must keep a snapshot whose job is another agent's (on a
// shared vCenter) and may remove one whose job is gone.
var ErrNotYours = errors.New("the job belongs to another agent")

// AgentJob returns a job only when it belongs to the agent: another agent's job is ErrNotYours,
// no job ErrNotFound.
func (c *Catalog) AgentJob(ctx context.Context, id, agentID string) (*BackupJob, error) {
	j := new(BackupJob)
	if err := scanOne(ctx, c.db.NewSelect().Model(j).Where("id = ?", id), fmt.Sprintf("job %s", id)); err != nil {
		return nil, err
	}
	if j.AgentID != agentID {
		return nil, fmt.Errorf("job %s: %w", id, ErrNotYours)
	}
	return j, nil
}

// ClaimJob hands the agent a job: first one of its running jobs it is not working on (it was
// restarted and resumes it), else the oldest queued job, claimed with a conditional UPDATE so
// that a job is claimed exactly once. Claiming sets vm_disks.job_id on the VM's present disks.
// It returns (nil, false, nil) when there is nothing to do.
func (c *Catalog) ClaimJob(ctx context.Context, agentID string, busy []string) (*BackupJob, bool, error) {
	q := c.db.NewSelect().Model((*BackupJob)(nil)).Where("agent_id = ?", agentID).Where("status = ?", api.JobRunning).Order("created_at ASC").Limit(1)
	if len(busy) > 0 {
		q = q.Where("id NOT IN (?)", bun.In(busy))
	}
	resume := new(BackupJob)
	err := q.Scan(ctx, resume)
	if err == nil {
		return resume, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("find running jobs: %w", err)
	}
	for range 5 { // another claimer may win a candidate; try the next
		cand := new(BackupJob)
		err := c.db.NewSelect().Model(cand).Where("agent_id = ?", agentID).Where("status = ?", api.JobQueued).Order("created_at ASC").Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("find queued jobs: %w", err)
		}
		claimed := false
		err = c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			now := c.now()
			res, err := tx.NewUpdate().Model((*BackupJob)(nil)).
				Set("status = ?", api.JobRunning).Set("claimed_at = ?", now).Set("started_at = ?", now).
				Set("heartbeat_at = ?", now).Set("updated_at = ?", now).
				Where("id = ?", cand.ID).Where("status = ?", api.JobQueued).Where("agent_id = ?", agentID).
				Exec(ctx)
			if err != nil {
				return fmt.Errorf("claim job %s: %w", cand.ID, err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return nil
			}
			if _, err := tx.NewUpdate().Model((*VMDisk)(nil)).
				Set("job_id = ?", cand.ID).Set("updated_at = ?", now).
				Where("vm_context_id = ?", cand.VMContextID).Where("status = ?", api.DiskPresent).Where("backupable = ?", true).
				Exec(ctx); err != nil {
				return fmt.Errorf("mark disks of job %s: %w", cand.ID, err)
			}
			claimed = true
			return nil
		})
		if err != nil {
			return nil, false, err
		}
		if claimed {
			j, err := c.JobByID(ctx, cand.ID)
			return j, false, err
		}
	}
	return nil, false, nil
}

// JobProgress records a running job's liveness and progress; it returns the job. The counters of
// p are those of the disks not yet committed: the job's totals are the sum of its committed
// disks plus these, so they move while the job runs and stay right after an agent restart.
func (c *Catalog) JobProgress(ctx context.Context, id, agentID string, p JobProgress) (*BackupJob, error) {
	now := c.now()
	q := c.db.NewUpdate().Model((*BackupJob)(nil)).
		Set("heartbeat_at = ?", now).Set("updated_at = ?", now).
		Set("phase = ?", p.Phase).Set("bytes_total = ?", p.BytesTotal).
		Where("id = ?", id).Where("agent_id = ?", agentID).Where("status = ?", api.JobRunning)
	setTotals(q, id, p.JobCounters)
	if p.SnapshotRef != "" {
		q = q.Set("snapshot_ref = ?", p.SnapshotRef)
	}
	if !p.SnapshotAt.IsZero() {
		q = q.Set("snapshot_created_at = ?", p.SnapshotAt.UTC())
	}
	if _, err := q.Exec(ctx); err != nil {
		return nil, fmt.Errorf("record progress of job %s: %w", id, err)
	}
	return c.AgentJob(ctx, id, agentID)
}

// setTotals sets each byte counter of job id to the sum over its committed disks plus extra.
func setTotals(q *bun.UpdateQuery, id string, extra JobCounters) {
	for _, col := range []struct {
		name string
		v    int64
	}{{"bytes_read", extra.BytesRead}, {"bytes_sent", extra.BytesSent}, {"bytes_deduplicated", extra.BytesDeduplicated}, {"bytes_zero", extra.BytesZero}} {
		q.Set("? = (SELECT COALESCE(SUM(bd.?), 0) FROM backup_disks AS bd WHERE bd.job_id = ?) + ?", bun.Ident(col.name), bun.Ident(col.name), id, col.v)
	}
}

// JobCounters are a job's byte counters.
type JobCounters struct {
	BytesRead, BytesSent, BytesDeduplicated, BytesZero int64
}

// JobProgress is what an agent reports of a running job.
type JobProgress struct {
	JobCounters           // of the disks not yet committed
	BytesTotal  int64     // bytes the agent plans to read in all
	Phase       string    // snapshot, reading, uploading, committing, cleanup
	SnapshotRef string    // the snapshot's managed object reference
	SnapshotAt  time.Time // when the snapshot was taken
}

// RequestCancel cancels a queued job at once, or asks the agent to stop a running one.
func (c *Catalog) RequestCancel(ctx context.Context, id string) (*BackupJob, error) {
	now := c.now()
	res, err := c.db.NewUpdate().Model((*BackupJob)(nil)).
		Set("status = ?", api.JobCancelled).Set("cancel_requested = ?", true).Set("finished_at = ?", now).
		Set("error = ?", "cancelled before it started").Set("updated_at = ?", now).
		Where("id = ?", id).Where("status = ?", api.JobQueued).Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("cancel job %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		res, err = c.db.NewUpdate().Model((*BackupJob)(nil)).
			Set("cancel_requested = ?", true).Set("updated_at = ?", now).
			Where("id = ?", id).Where("status = ?", api.JobRunning).Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("cancel job %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			j, err := c.JobByID(ctx, id)
			if err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("backup %s is %s: %w: %w", id, j.Status, ErrNotCancellable, ErrConflict)
		}
	}
	return c.JobByID(ctx, id)
}

// FinishJob ends a running job of the agent. For a success, every present backup-able disk of
// the VM must have a committed session; their backup_disks rows become visible, the disks'
// change IDs advance and the VM becomes protected, all in one transaction. Any other outcome
// discards the job's sessions and uncommitted results; the returned index paths (if any) are
// the ones the caller should delete from the repository.
func (c *Catalog) FinishJob(ctx context.Context, id, agentID, status, errMsg, notes string) (*BackupJob, []BackupDisk, error) {
	return c.finishJob(ctx, id, agentID, status, errMsg, notes, time.Time{})
}

// finishJob is FinishJob; a non-zero staleBefore finishes the job only if its last heartbeat is
// older, checked under the row lock so that a job that just reported is left alone.
func (c *Catalog) finishJob(ctx context.Context, id, agentID, status, errMsg, notes string, staleBefore time.Time) (*BackupJob, []BackupDisk, error) {
	var dropped []BackupDisk
	err := c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		dropped = nil
		j := new(BackupJob)
		q := tx.NewSelect().Model(j).Where("id = ?", id).Where("agent_id = ?", agentID)
		if c.driver == DriverMySQL {
			q = q.For("UPDATE")
		}
		if err := q.Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("job %s: %w", id, ErrNotFound)
			}
			return err
		}
		if !staleBefore.IsZero() && (j.Status != api.JobRunning || !j.HeartbeatAt.Before(staleBefore)) {
			return errNotStale
		}
		if j.Status != api.JobRunning {
			if j.Status == status {
				return nil // a retried completion
			}
			return fmt.Errorf("job %s is %s: %w", id, j.Status, ErrConflict)
		}
		now := c.now()
		var bds []BackupDisk
		if err := tx.NewSelect().Model(&bds).Where("job_id = ?", id).Scan(ctx); err != nil {
			return fmt.Errorf("select disks of job %s: %w", id, err)
		}
		var skipped []api.SkippedDisk
		if status == api.JobSucceeded {
			var all []VMDisk
			if err := tx.NewSelect().Model(&all).Where("vm_context_id = ?", j.VMContextID).
				Where("status = ?", api.DiskPresent).Order("device_key ASC").Scan(ctx); err != nil {
				return fmt.Errorf("select disks of vm %s: %w", j.VMContextID, err)
			}
			var disks []VMDisk
			for _, d := range all {
				if d.Backupable {
					disks = append(disks, d)
				} else {
					skipped = append(skipped, api.SkippedDisk{DiskID: d.DiskID, Label: d.Label, Reason: SkipReason(d.DiskMode, d.BackingType)})
				}
			}
			done := map[string]*BackupDisk{}
			for i := range bds {
				done[bds[i].DiskID] = &bds[i]
			}
			var missing []string
			for _, d := range disks {
				if done[d.DiskID] == nil {
					missing = append(missing, d.DiskID)
				}
			}
			if len(missing) > 0 || len(bds) == 0 {
				return fmt.Errorf("job %s cannot succeed: disks %v have no committed backup: %w", id, missing, ErrConflict)
			}
			jobType := api.BackupIncremental
			for i := range bds {
				bd := &bds[i]
				if bd.Type == api.BackupFull {
					jobType = api.BackupFull
				}
				if _, err := tx.NewUpdate().Model((*BackupDisk)(nil)).Set("status = ?", api.JobSucceeded).Set("updated_at = ?", now).
					Where("id = ?", bd.ID).Exec(ctx); err != nil {
					return fmt.Errorf("finish disk %s: %w", bd.DiskID, err)
				}
				if _, err := tx.NewUpdate().Model((*VMDisk)(nil)).Set("change_id = ?", bd.ChangeID).Set("updated_at = ?", now).
					Where("vm_context_id = ?", j.VMContextID).Where("disk_id = ?", bd.DiskID).Exec(ctx); err != nil {
					return fmt.Errorf("advance change id of %s: %w", bd.DiskID, err)
				}
			}
			if _, err := tx.NewUpdate().Model((*VMContext)(nil)).Set("current_status = ?", api.VMProtected).Set("updated_at = ?", now).
				Where("context_id = ?", j.VMContextID).Where("current_status = ?", api.VMDiscovered).Exec(ctx); err != nil {
				return fmt.Errorf("mark vm protected: %w", err)
			}
			j.Type = jobType
		} else {
			dropped = bds
			if _, err := tx.NewDelete().Model((*BackupDisk)(nil)).Where("job_id = ?", id).Exec(ctx); err != nil {
				return fmt.Errorf("discard disks of job %s: %w", id, err)
			}
		}
		if _, err := tx.NewUpdate().Model((*UploadSession)(nil)).Set("status = ?", api.SessionAborted).Set("updated_at = ?", now).
			Where("job_id = ?", id).Where("status IN (?)", bun.In(unfinishedSessions)).Exec(ctx); err != nil {
			return fmt.Errorf("close sessions of job %s: %w", id, err)
		}
		uq := tx.NewUpdate().Model((*BackupJob)(nil)).
			Set("status = ?", status).Set("finished_at = ?", now).Set("heartbeat_at = ?", now).Set("updated_at = ?", now).
			Set("type = ?", j.Type).Where("id = ?", id).Where("status = ?", api.JobRunning)
		if status == api.JobSucceeded {
			setTotals(uq, id, JobCounters{}) // exactly the sum of the committed disks
			if len(skipped) > 0 {
				uq = uq.Set("skipped_disks = ?", skippedJSON(skipped))
			}
		}
		if status != api.JobSucceeded {
			uq = uq.Set("vm_config_digest = NULL") // the caller removes the blob with the indexes
		}
		if errMsg != "" {
			uq = uq.Set("error = ?", truncate(errMsg, 4000))
		}
		if notes != "" {
			uq = uq.Set("notes = ?", truncate(notes, 4000))
		}
		if _, err := uq.Exec(ctx); err != nil {
			return fmt.Errorf("finish job %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	j, err := c.JobByID(ctx, id)
	return j, dropped, err
}

// truncate makes free text (an error, notes) safe to store and show, at most n bytes: see
// api.DisplayText.
func truncate(s string, n int) string { return api.DisplayText(s, n) }

// FailedJob is a job failed by FailStaleJobs with the disk results it discarded.
type FailedJob struct {
	Job       BackupJob
	Discarded []BackupDisk
}

// FailStaleJobs fails running jobs whose agent has not reported since before cutoff.
func (c *Catalog) FailStaleJobs(ctx context.Context, cutoff time.Time) ([]FailedJob, error) {
	var stale []BackupJob
	if err := c.db.NewSelect().Model(&stale).Where("status = ?", api.JobRunning).Where("heartbeat_at < ?", cutoff.UTC()).Scan(ctx); err != nil {
		return nil, fmt.Errorf("find stale jobs: %w", err)
	}
	var failed []FailedJob
	for _, j := range stale {
		fj, dropped, err := c.finishJob(ctx, j.ID, j.AgentID, api.JobFailed, "the agent stopped reporting progress (timed out)", "", cutoff)
		if err != nil {
			if errors.Is(err, errNotStale) {
				continue // it reported or finished meanwhile
			}
			return failed, err
		}
		failed = append(failed, FailedJob{Job: *fj, Discarded: dropped})
	}
	return failed, nil
}

// SkipReason says why a snapshot does not capture a disk of this mode and backing.
func SkipReason(diskMode, backingType string) string {
	switch {
	case strings.HasPrefix(diskMode, "independent"):
		return "independent disk (" + diskMode + "): snapshots do not capture it"
	case backingType == "rdmPhysical":
		return "physical-mode RDM: snapshots do not capture it"
	default:
		return "its backing (" + backingType + ", " + diskMode + ") cannot be captured by a snapshot"
	}
}

func skippedJSON(s []api.SkippedDisk) string {
	b, _ := json.Marshal(s) // plain strings: cannot fail
	return string(b)
}

// FailUnclaimedJobs fails queued jobs that their agent cannot be expected to claim: the agent was
// revoked, or it has not been seen since before cutoff and the job was queued before cutoff. It
// returns the jobs it failed, each with the reason recorded as its error. A queued job of a
// live agent busy with other jobs is left to wait.
func (c *Catalog) FailUnclaimedJobs(ctx context.Context, cutoff time.Time) ([]BackupJob, error) {
	var rows []struct {
		BackupJob   `bun:",extend"`
		AgentStatus string    `bun:"agent_status"`
		LastSeenAt  time.Time `bun:"agent_last_seen_at,nullzero"`
	}
	cutoff = cutoff.UTC()
	err := c.db.NewSelect().Model(&rows).
		ColumnExpr("j.*").ColumnExpr("a.status AS agent_status, a.last_seen_at AS agent_last_seen_at").
		Join("JOIN agents AS a ON a.id = j.agent_id").
		Where("j.status = ?", api.JobQueued).
		WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("a.status = ?", api.AgentRevoked).
				WhereOr("j.created_at < ? AND (a.last_seen_at IS NULL OR a.last_seen_at < ?)", cutoff, cutoff)
		}).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("find unclaimed jobs: %w", err)
	}
	var failed []BackupJob
	for _, r := range rows {
		reason := fmt.Sprintf("not claimed: agent %s was revoked", r.AgentID)
		if r.AgentStatus != api.AgentRevoked {
			seen := "never"
			if !r.LastSeenAt.IsZero() {
				seen = "last at " + r.LastSeenAt.UTC().Format(time.RFC3339)
			}
			reason = fmt.Sprintf("not claimed: agent %s has not been seen since the job was queued (%s)", r.AgentID, seen)
		}
		now := c.now()
		res, err := c.db.NewUpdate().Model((*BackupJob)(nil)).
			Set("status = ?", api.JobFailed).Set("error = ?", reason).Set("finished_at = ?", now).Set("updated_at = ?", now).
			Where("id = ?", r.ID).Where("status = ?", api.JobQueued).Exec(ctx)
		if err != nil {
			return failed, fmt.Errorf("fail unclaimed job %s: %w", r.ID, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			continue // claimed or cancelled meanwhile
		}
		j := r.BackupJob
		j.Status, j.Error, j.FinishedAt = api.JobFailed, reason, now
		failed = append(failed, j)
	}
	return failed, nil
}

// CountJobsByStatus returns the number of jobs per status.
func (c *Catalog) CountJobsByStatus(ctx context.Context) (map[string]int, error) {
	var rows []struct {
		Status string `bun:"status"`
		N      int    `bun:"n"`
	}
	if err := c.db.NewSelect().Model((*BackupJob)(nil)).Column("status").ColumnExpr("COUNT(*) AS n").Group("status").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	out := map[string]int{api.JobQueued: 0, api.JobRunning: 0, api.JobSucceeded: 0, api.JobFailed: 0, api.JobCancelled: 0}
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out, nil
}
