package daemon

import (
	"context"
	"log/slog"
	"time"

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
