package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

// This file owns the job-scoped snapshots: a job takes one named api.SnapshotPrefix + job id,
// removes it when it ends (also after SIGTERM), and the reaper removes what a crash, a lost
// connection or a failed removal left behind.

// snapshot takes the job's snapshot (quiesced, else crash-consistent) or, for a job resumed
// after a crash, finds the one taken before.
func (r *Runner) snapshot(ctx context.Context, vm *vsphere.VM, job *api.Job) (*vsphere.Snapshot, string, error) {
	name := job.SnapshotName
	if name == "" {
		name = api.SnapshotPrefix + job.ID
	}
	if job.Resumed {
		snap, err := vm.FindSnapshot(ctx, name)
		if err != nil {
			return nil, "", err
		}
		if snap == nil {
			return nil, "", fmt.Errorf("resuming job %s: its snapshot %q is gone; the backup must start again", job.ID, name)
		}
		r.track(job.ID, true)
		return snap, "resumed after an agent restart", nil
	}
	desc := api.SnapshotDescription(job.ID, r.opts.AgentID)
	snap, err := vm.CreateSnapshot(ctx, name, desc, true)
	note := ""
	if errors.Is(err, vsphere.ErrQuiesceFailed) {
		note = "quiescing failed; the snapshot is crash-consistent"
		snap, err = vm.CreateSnapshot(ctx, name, desc, false)
	}
	if err != nil {
		return nil, "", err
	}
	r.track(job.ID, true)
	return snap, note, nil
}

func (r *Runner) track(jobID string, open bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if open {
		r.snapshots[jobID] = r.opts.Now()
	} else {
		delete(r.snapshots, jobID)
	}
}

// oldestSnapshotAge is the age in seconds of the oldest snapshot a running job holds open (0
// when none): sendense_agent_snapshot_age_seconds, computed at each scrape.
func (r *Runner) oldestSnapshotAge() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	oldest := time.Time{}
	for _, t := range r.snapshots {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return r.opts.Now().Sub(oldest).Seconds()
}

// removeSnapshot removes the job's snapshot even after ctx was cancelled.
func (r *Runner) removeSnapshot(ctx context.Context, jobID string, snap *vsphere.Snapshot, log *slog.Logger) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	// The job lets go of its snapshot either way: one it could not remove is the reaper's now.
	defer r.track(jobID, false)
	if err := snap.Remove(rctx); err != nil {
		log.ErrorContext(rctx, "could not remove the job's snapshot; the reaper will retry", "snapshot", snap.MoRef(), "err", err)
	}
}

// SnapshotSource lists and removes snapshots of one vCenter/ESXi endpoint (sources.Conn).
type SnapshotSource interface {
	Name() string
	// Snapshots lists the snapshots, of every VM, whose names start with prefix.
	Snapshots(ctx context.Context, prefix string) ([]vsphere.SnapshotInfo, error)
	// RemoveSnapshotByRef removes one snapshot; removing a snapshot that is gone succeeds.
	RemoveSnapshotByRef(ctx context.Context, vmUUID, ref string) error
}

// jobStates tells whether a job is still running on the hub; an error with status 404 means
// the hub does not know the job.
type jobStates interface {
	JobState(ctx context.Context, jobID string) (api.JobState, error)
}

// ReapSnapshots removes the job snapshots that agent agentID took (api.SnapshotJob: named for a
// job, and marked as this agent's in their description) whose job is neither running here
// (busy) nor running on the hub: leftovers of a crash, a lost connection or a failed removal.
// Any other snapshot is left alone, whatever its name. It runs at start and then every
// interval until ctx ends.
func ReapSnapshots(ctx context.Context, srcs []SnapshotSource, hub jobStates, agentID string, busy func() []string, interval time.Duration, log *slog.Logger) error {
	for {
		reapOnce(ctx, srcs, hub, agentID, busy, log)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// reapOnce is one pass over every source; it returns how many snapshots it removed.
func reapOnce(ctx context.Context, srcs []SnapshotSource, hub jobStates, agentID string, busy func() []string, log *slog.Logger) int {
	n := 0
	for _, src := range srcs {
		n += reapSource(ctx, src, hub, agentID, busy, log.With("source", src.Name()))
	}
	return n
}

func reapSource(ctx context.Context, src SnapshotSource, hub jobStates, agentID string, busy func() []string, log *slog.Logger) int {
	snaps, err := src.Snapshots(ctx, api.SnapshotPrefix)
	if err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "snapshot reaper cannot list snapshots", "err", err)
		}
		return 0
	}
	removed := 0
	for _, s := range snaps {
		jobID, ours := api.SnapshotJob(s.Name, s.Description, agentID)
		if !ours || slices.Contains(busy(), jobID) {
			continue
		}
		st, err := hub.JobState(ctx, jobID)
		switch {
		case err == nil && st.Status == api.JobRunning:
			continue // the hub hands the job back to this agent, which resumes from this snapshot
		case err != nil && hubclient.StatusOf(err) != http.StatusNotFound:
			log.WarnContext(ctx, "snapshot reaper cannot ask the hub about a job; keeping its snapshot", "job_id", jobID, "err", err)
			continue
		}
		if err := src.RemoveSnapshotByRef(ctx, s.VMUUID, s.MoRef); err != nil {
			log.WarnContext(ctx, "snapshot reaper could not remove a stale snapshot", "job_id", jobID, "snapshot", s.MoRef, "vm_name", s.VMName, "err", err)
			continue
		}
		removed++
		log.InfoContext(ctx, "removed a stale snapshot", "job_id", jobID, "snapshot", s.MoRef, "snapshot_name", s.Name, "vm_name", s.VMName, "created", s.Created)
	}
	return removed
}
