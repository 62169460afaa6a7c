package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// NextJob waits up to wait for a job for the agent: one of its running jobs it is not busy with
// (it restarted), else a queued one, claimed exactly once. It returns nil when none came, or when
// ctx ends (the agent went away or the hub is shutting down).
func (s *Service) NextJob(ctx context.Context, agentID string, busy []string, wait time.Duration) (*api.Job, error) {
	var out *api.Job
	err := s.poll(ctx, agentID, wait, func() (bool, error) {
		j, resumed, err := s.cat.ClaimJob(ctx, agentID, busy)
		if err != nil || j == nil {
			return false, err
		}
		if out, err = s.jobSpec(ctx, j, resumed); err != nil {
			return false, err
		}
		if resumed {
			s.log.InfoContext(ctx, "job handed back to its agent after a restart", "job_id", j.ID, "agent_id", agentID)
		} else {
			s.log.InfoContext(ctx, "job claimed", "job_id", j.ID, "agent_id", agentID, "vm_context_id", j.VMContextID)
		}
		return true, nil
	})
	return out, err
}

// poll runs claim until it finds work, for up to wait: at once, then whenever work is queued
// for the agent on this hub (the wake-up, registered before each look so that nothing queued
// meanwhile is missed) and every PollInterval for work queued elsewhere. It returns nil when
// nothing came or ctx ended (the agent went away, the hub is shutting down).
func (s *Service) poll(ctx context.Context, agentID string, wait time.Duration, claim func() (bool, error)) error {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		woken, unregister := s.waiter(agentID)
		found, err := claim()
		if err != nil || found {
			unregister()
			return err
		}
		s.metrics.pollsWaiting.Inc()
		var done bool
		select {
		case <-ctx.Done():
			done = true
		case <-deadline.C:
			done = true
		case <-woken:
		case <-time.After(s.opts.PollInterval):
		}
		s.metrics.pollsWaiting.Dec()
		unregister()
		if done {
			return nil
		}
	}
}

func (s *Service) jobSpec(ctx context.Context, j *catalog.BackupJob, resumed bool) (*api.Job, error) {
	vm, err := s.cat.VMByContextID(ctx, j.VMContextID)
	if err != nil {
		return nil, err
	}
	repo, err := s.cat.RepositoryByID(ctx, j.RepositoryID)
	if err != nil {
		return nil, err
	}
	disks, err := s.cat.VMDisks(ctx, j.VMContextID)
	if err != nil {
		return nil, err
	}
	spec := &api.Job{
		ID: j.ID, Status: j.Status, RequestedType: j.RequestedType, SnapshotName: j.SnapshotName, Resumed: resumed, CBTSample: j.CBTSample,
		VM:         api.JobVM{ContextID: vm.ContextID, Name: vm.VMName, Source: vm.SourceName, InstanceUUID: vm.InstanceUUID, CBTEnabled: vm.CBTEnabled},
		Repository: api.JobRepo{ID: repo.ID, ChunkSize: repo.ChunkSize},
	}
	inPlace := map[string]string{} // parent backup id → the in-place restore after it, or ""
	for _, d := range disks {
		if d.Status != api.DiskPresent || !d.Backupable {
			continue
		}
		jd := api.JobDisk{DiskID: d.DiskID, Key: d.DeviceKey, CapacityBytes: d.CapacityBytes}
		if j.RequestedType != api.BackupFull {
			parent, err := s.cat.LatestBackupDisk(ctx, j.VMContextID, d.DiskID, j.RepositoryID)
			switch {
			case err == nil:
				jd.Parent = &api.ParentRef{BackupID: parent.JobID, ChangeID: parent.ChangeID, CapacityBytes: parent.CapacityBytes}
				restored, ok := inPlace[parent.JobID]
				if !ok {
					if restored, err = s.cat.InPlaceRestoredAfter(ctx, j.VMContextID, parent.JobID); err != nil {
						return nil, err
					}
					inPlace[parent.JobID] = restored
				}
				if restored != "" {
					jd.FullReason = "the vm was restored in place by " + restored + " after the parent backup (CBT reset)"
				}
			case !errors.Is(err, catalog.ErrNotFound):
				return nil, err
			}
		}
		spec.Disks = append(spec.Disks, jd)
	}
	return spec, nil
}

func jobState(j *catalog.BackupJob) api.JobState {
	return api.JobState{ID: j.ID, Status: j.Status, CancelRequested: j.CancelRequested}
}

// Spec returns a running job of the agent with its disks as the catalog knows them now (after
// the job reported what its snapshot shows).
func (s *Service) Spec(ctx context.Context, agentID, id string) (*api.Job, error) {
	j, err := s.cat.AgentJob(ctx, id, agentID)
	if err != nil {
		return nil, err
	}
	if j.Status != api.JobRunning {
		return nil, fmt.Errorf("job %s is %s: %w", id, j.Status, catalog.ErrConflict)
	}
	return s.jobSpec(ctx, j, false)
}

// JobState tells an agent the state of one of its jobs.
func (s *Service) JobState(ctx context.Context, agentID, id string) (api.JobState, error) {
	j, err := s.cat.AgentJob(ctx, id, agentID)
	if err != nil {
		return api.JobState{}, err
	}
	return jobState(j), nil
}

// Progress records a running job's heartbeat and progress and answers whether to cancel. Every
// number is checked: none may be negative or exceed what the VM's disks can hold (with room for
// a disk grown or added since discovery).
func (s *Service) Progress(ctx context.Context, agentID, id string, p api.JobProgress) (api.JobState, error) {
	j, err := s.cat.AgentJob(ctx, id, agentID)
	if err != nil {
		return api.JobState{}, err
	}
	disks, err := s.cat.VMDisks(ctx, j.VMContextID)
	if err != nil {
		return api.JobState{}, err
	}
	limit := int64(MaxDiskBytes)
	for _, d := range disks {
		if d.Status == api.DiskPresent && d.Backupable {
			limit += 2 * d.CapacityBytes
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"bytes_read", p.BytesRead}, {"bytes_sent", p.BytesSent}, {"bytes_deduplicated", p.BytesDeduplicated}, {"bytes_zero", p.BytesZero}, {"bytes_total", p.BytesTotal}} {
		if f.v < 0 || f.v > limit {
			return api.JobState{}, &api.FieldError{Field: f.name, Msg: fmt.Sprintf("must be between 0 and %d for this VM's disks", limit)}
		}
	}
	switch p.Phase {
	case "", api.PhaseSnapshot, api.PhaseReading, api.PhaseFinished:
	default:
		return api.JobState{}, &api.FieldError{Field: "phase", Msg: "must be snapshot, reading or finished"}
	}
	if len(p.SnapshotRef) > 255 || strings.IndexFunc(p.SnapshotRef, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
		return api.JobState{}, &api.FieldError{Field: "snapshot_ref", Msg: "must be a managed object reference: at most 255 printable ASCII characters"}
	}
	j, err = s.cat.JobProgress(ctx, id, agentID, catalog.JobProgress{
		JobCounters: catalog.JobCounters{BytesRead: p.BytesRead, BytesSent: p.BytesSent, BytesDeduplicated: p.BytesDeduplicated, BytesZero: p.BytesZero},
		BytesTotal:  p.BytesTotal, Phase: p.Phase, SnapshotRef: p.SnapshotRef, SnapshotAt: p.SnapshotCreatedAt,
	})
	if err != nil {
		return api.JobState{}, err
	}
	return jobState(j), nil
}

// MaxDiskBytes bounds the capacity of one disk (64 TiB, the vSphere limit).
const MaxDiskBytes = 64 << 40

// Complete ends a job. A success requires a committed session for every disk of the job; a
// failure or cancellation discards whatever the job wrote.
func (s *Service) Complete(ctx context.Context, agentID, id string, c api.JobCompletion) error {
	switch c.Status {
	case api.JobSucceeded, api.JobFailed, api.JobCancelled:
	default:
		return &api.FieldError{Field: "status", Msg: "must be succeeded, failed or cancelled"}
	}
	if _, err := s.cat.AgentJob(ctx, id, agentID); err != nil {
		return err // another agent's job is refused as such, not as missing
	}
	if c.Progress != nil {
		// Recorded first, as a report of its own would have been; one that fails its checks
		// refuses the whole completion, which changes nothing then. A retried completion of a
		// job already over records nothing (progress counts only while a job runs).
		if _, err := s.Progress(ctx, agentID, id, *c.Progress); err != nil {
			var fe *api.FieldError
			if errors.As(err, &fe) {
				return &api.FieldError{Field: "progress." + fe.Field, Msg: fe.Msg}
			}
			return err
		}
	}
	j, dropped, err := s.cat.FinishJob(ctx, id, agentID, c.Status, c.Error, c.Notes)
	if err != nil {
		return err
	}
	if j.Status != api.JobSucceeded {
		// Discarded with the disks: the VM configuration the job may have stored.
		if vm, verr := s.cat.VMByContextID(ctx, j.VMContextID); verr == nil {
			s.removeIndexes(ctx, j.RepositoryID, vm.InstanceUUID, dropped)
			s.removeVMConfig(ctx, j.RepositoryID, vm.InstanceUUID, j.ID)
		}
	}
	if j.Status == api.JobSucceeded {
		// The repository describes the backup before the agent hears that it succeeded. A
		// repository that cannot take the record does not undo the backup, which restores
		// from this catalog; only a hub that lost the catalog would miss it.
		if err := s.describe(ctx, j.ID); err != nil {
			s.log.ErrorContext(ctx, "backup record not written", "job_id", id, "repository_id", j.RepositoryID, "err", err)
		}
	}
	result := j.Status
	if j.Status == api.JobSucceeded && len(j.SkippedDisks) > 0 {
		result = resultWithWarnings // a restore point, but not of every disk
	}
	s.metrics.jobsFinished.WithLabelValues(result).Inc()
	if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
		s.metrics.backupDuration.Observe(j.FinishedAt.Sub(j.StartedAt).Seconds())
	}
	if j.Status == api.JobSucceeded {
		if err := s.Retain(ctx, id); err != nil {
			s.log.ErrorContext(ctx, "backup not retained: its objects can be deleted from the bucket until a retention run retains it",
				"job_id", id, "err", err)
		}
		// The totals are sums of checked numbers; still, a metric must never fail a request
		// (a negative Add panics), so only non-negative values are added.
		addBytes(s.metrics.bytesRead, j.BytesRead)
		addBytes(s.metrics.bytesSent, j.BytesSent)
		addBytes(s.metrics.bytesDedup, j.BytesDeduplicated)
	}
	level := s.log.InfoContext
	if j.Status != api.JobSucceeded {
		level = s.log.WarnContext
	}
	if s.OnFinished != nil {
		s.OnFinished(*j)
	}
	if len(j.SkippedDisks) > 0 {
		s.log.WarnContext(ctx, "backup left disks out", "job_id", id, "vm_context_id", j.VMContextID, "skipped_disks", j.SkippedDisks)
	}
	level(ctx, "backup finished", "job_id", id, "agent_id", agentID, "vm_context_id", j.VMContextID, "status", j.Status, "type", j.Type,
		"bytes_read", j.BytesRead, "bytes_sent", j.BytesSent, "bytes_deduplicated", j.BytesDeduplicated, "err", c.Error, "notes", c.Notes)
	return nil
}

// ReapStale fails, every interval until ctx ends, running jobs whose agent went silent and
// queued jobs that no agent will claim (revoked, or silent as long as the job has waited).
func (s *Service) ReapStale(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.reapStale(ctx)
	}
}

func (s *Service) reapStale(ctx context.Context) {
	cutoff := s.opts.Now().Add(-s.opts.JobTimeout)
	unclaimed, err := s.cat.FailUnclaimedJobs(ctx, cutoff)
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "fail unclaimed jobs", "err", err)
	}
	for _, j := range unclaimed {
		s.metrics.jobsFinished.WithLabelValues(api.JobFailed).Inc()
		s.log.WarnContext(ctx, "backup failed: no agent claimed it", "job_id", j.ID, "agent_id", j.AgentID, "reason", j.Error)
		if s.OnFinished != nil {
			s.OnFinished(j)
		}
	}
	s.reapStaleRestores(ctx, cutoff)
	failed, err := s.cat.FailStaleJobs(ctx, cutoff)
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "fail stale jobs", "err", err)
	}
	for _, f := range failed {
		s.metrics.jobsFinished.WithLabelValues(api.JobFailed).Inc()
		s.log.WarnContext(ctx, "backup failed: its agent stopped reporting", "job_id", f.Job.ID, "agent_id", f.Job.AgentID, "timeout_seconds", s.opts.JobTimeout.Seconds())
		if vm, err := s.cat.VMByContextID(ctx, f.Job.VMContextID); err == nil {
			s.removeIndexes(ctx, f.Job.RepositoryID, vm.InstanceUUID, f.Discarded)
			s.removeVMConfig(ctx, f.Job.RepositoryID, vm.InstanceUUID, f.Job.ID)
		}
	}
}

// addBytes adds n to a byte counter when n is not negative.
func addBytes(c prometheus.Counter, n int64) {
	if n > 0 {
		c.Add(float64(n))
	}
}
