package daemon

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sendense/sendense/agent/internal/hubclient"
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
	return poll(ctx, hub.NextJob, runner.Run, runner.Busy, func(j *api.Job) string { return j.ID }, parallel, log.With("loop", "backups"))
}

// restoreSource hands out restore jobs (the hub's long poll).
type restoreSource interface {
	NextRestore(ctx context.Context, wait time.Duration, busy []string) (*api.RestoreJob, error)
}

// restoreRunner runs one restore to its end (reporting the outcome and removing a half-made VM
// itself) and lists the running ones.
type restoreRunner interface {
	Run(ctx context.Context, job *api.RestoreJob) error
	Busy() []string
}

// Restores long-polls the hub for restore jobs and runs up to parallel of them at once, until
// ctx ends; it then waits for the running restores to wind down (they remove what they made
// and report).
func Restores(ctx context.Context, hub restoreSource, runner restoreRunner, parallel int, log *slog.Logger) error {
	return poll(ctx, hub.NextRestore, runner.Run, runner.Busy, func(j *api.RestoreJob) string { return j.ID }, parallel, log.With("loop", "restores"))
}

// poll is the claim loop of Jobs and Restores.
func poll[J any](ctx context.Context, next func(context.Context, time.Duration, []string) (*J, error),
	run func(context.Context, *J) error, busy func() []string, id func(*J) string, parallel int, log *slog.Logger,
) error {
	if parallel < 1 {
		parallel = 1
	}
	slots := make(chan struct{}, parallel)
	// handed holds the jobs handed out and not yet ended: a job's runner may not have registered
	// it as busy yet when the next poll lists the busy ones, and the hub hands a running job the
	// agent does not list back to it as if the agent had restarted.
	var mu sync.Mutex
	handed := map[string]bool{}
	busyNow := func() []string {
		ids := busy()
		mu.Lock()
		defer mu.Unlock()
		for h := range handed {
			if !slices.Contains(ids, h) {
				ids = append(ids, h)
			}
		}
		return ids
	}
	backoff := time.Second
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return drain(slots, parallel)
		}
		job, err := next(ctx, 30*time.Second, busyNow())
		if err != nil || job == nil {
			<-slots
			if ctx.Err() != nil {
				return drain(slots, parallel)
			}
			if err != nil {
				wait := hubclient.Jitter(backoff)
				log.WarnContext(ctx, "asking the hub for work failed", "retry_in_seconds", wait.Seconds(), "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
				backoff = min(2*backoff, time.Minute)
			}
			continue
		}
		backoff = time.Second
		jobID := id(job)
		mu.Lock()
		handed[jobID] = true
		mu.Unlock()
		go func() {
			defer func() { <-slots }()
			_ = run(ctx, job) // run reports the outcome and logs failures itself
			mu.Lock()
			delete(handed, jobID)
			mu.Unlock()
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

// irSource hands out instant-recovery actions (the hub's long poll).
type irSource interface {
	NextInstantRecovery(ctx context.Context, wait time.Duration, busy []string) (*api.InstantRecoveryJob, error)
}

// irRunner runs one instant-recovery action to its end (reporting the outcome itself).
type irRunner interface {
	Run(ctx context.Context, job *api.InstantRecoveryJob) error
	Busy() []string
}

// InstantRecoveries long-polls the hub for instant-recovery actions and runs up to parallel of
// them at once, until ctx ends.
func InstantRecoveries(ctx context.Context, hub irSource, runner irRunner, parallel int, log *slog.Logger) error {
	return poll(ctx, hub.NextInstantRecovery, runner.Run, runner.Busy, func(j *api.InstantRecoveryJob) string { return j.ID }, parallel, log.With("loop", "instant_recoveries"))
}
