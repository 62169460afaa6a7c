package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

// jobSource hands out jobs (the hub's long poll).
type jobSource interface {
	NextJob(ctx context.Context, wait time.Duration, busy []string) (*api.Job, error)
}

// jobRunner runs one job to its end (reporting the outcome itself) and lists the running ones.
type jobRunner interface {
	Run(ctx context.Context, job *api.Job) error
	Busy() []string
}

// Jobs long-polls the hub for backup jobs and runs up to parallel of them at once, until ctx
// ends; it then waits for the running jobs to wind down (they report and clean up).
func Jobs(ctx context.Context, hub jobSource, runner jobRunner, parallel int, log *slog.Logger) error {
	if parallel < 1 {
		parallel = 1
	}
	slots := make(chan struct{}, parallel)
	backoff := time.Second
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return drain(slots, parallel)
		}
		job, err := hub.NextJob(ctx, 30*time.Second, runner.Busy())
		if err != nil || job == nil {
			<-slots
			if ctx.Err() != nil {
				return drain(slots, parallel)
			}
			if err != nil {
				log.WarnContext(ctx, "asking the hub for jobs failed", "retry_in_seconds", backoff.Seconds(), "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Minute)
			}
			continue
		}
		backoff = time.Second
		go func() {
			defer func() { <-slots }()
			_ = runner.Run(ctx, job) // Run reports the outcome and logs failures itself
		}()
	}
}

// drain waits until every slot is free: every job has finished its cleanup.
func drain(slots chan struct{}, n int) error {
	for range n {
		slots <- struct{}{}
	}
	return nil
}

// SnapshotSource lists and removes snapshots of one vCenter/ESXi endpoint.
type SnapshotSource interface {
	Name() string
	Snapshots(ctx context.Context, prefix string) ([]vsphere.SnapshotInfo, error)
	RemoveSnapshotByRef(ctx context.Context, vmUUID, ref string) error
}

// jobStates tells whether a job is still running on the hub.
type jobStates interface {
	JobState(ctx context.Context, jobID string) (api.JobState, error)
}

// ReapSnapshots removes the snapshots named "<prefix><job id>" whose job is neither running
// here nor running on the hub: leftovers of a crash, a lost connection or a failed removal. It
// runs at start and then every interval until ctx ends.
func ReapSnapshots(ctx context.Context, srcs []SnapshotSource, hub jobStates, busy func() []string, prefix string, interval time.Duration, log *slog.Logger) error {
	for {
		for _, src := range srcs {
			reapSource(ctx, src, hub, busy, prefix, log.With("source", src.Name()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// ReapOnce is one pass of ReapSnapshots; it returns how many snapshots were removed.
func ReapOnce(ctx context.Context, srcs []SnapshotSource, hub jobStates, busy func() []string, prefix string, log *slog.Logger) int {
	n := 0
	for _, src := range srcs {
		n += reapSource(ctx, src, hub, busy, prefix, log.With("source", src.Name()))
	}
	return n
}

func reapSource(ctx context.Context, src SnapshotSource, hub jobStates, busy func() []string, prefix string, log *slog.Logger) int {
	snaps, err := src.Snapshots(ctx, prefix)
	if err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "snapshot reaper cannot list snapshots", "err", err)
		}
		return 0
	}
	removed := 0
	for _, s := range snaps {
		jobID := strings.TrimPrefix(s.Name, prefix)
		if slices.Contains(busy(), jobID) {
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
