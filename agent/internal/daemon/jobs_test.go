package daemon

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// fakeJobs hands out the queued jobs one per poll and records the busy list of every poll.
type fakeJobs struct {
	mu     sync.Mutex
	queued []string
	polls  [][]string
}

func (f *fakeJobs) NextJob(ctx context.Context, wait time.Duration, busy []string) (*api.Job, error) {
	f.mu.Lock()
	f.polls = append(f.polls, slices.Clone(busy))
	if len(f.queued) > 0 {
		id := f.queued[0]
		f.queued = f.queued[1:]
		f.mu.Unlock()
		return &api.Job{ID: id}, nil
	}
	f.mu.Unlock()
	select { // nothing queued: wait like a long poll, briefly
	case <-ctx.Done():
	case <-time.After(10 * time.Millisecond):
	}
	return nil, nil
}

// lateRunner registers a job as busy only once it is released, as a runner whose start is slow
// (the goroutine not yet scheduled, a snapshot being taken) would: until then Busy does not list
// it.
type lateRunner struct {
	mu      sync.Mutex
	active  []string
	release chan struct{}
}

func (r *lateRunner) Run(ctx context.Context, job *api.Job) error {
	select {
	case <-r.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.mu.Lock()
	r.active = append(r.active, job.ID)
	r.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (r *lateRunner) Busy() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.active)
}

// TestHandedJobsCountAsBusy: every poll after a job was handed out lists that job as busy, even
// before its runner registers it, so the hub never takes the agent for restarted and hands the
// same job out a second time.
func TestHandedJobsCountAsBusy(t *testing.T) {
	hub := &fakeJobs{queued: []string{"job-1", "job-2"}}
	runner := &lateRunner{release: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Jobs(ctx, hub, runner, 4, slog.New(slog.DiscardHandler)) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		hub.mu.Lock()
		n := len(hub.polls)
		hub.mu.Unlock()
		if n >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d polls in 10s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(runner.release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if len(hub.polls[0]) != 0 {
		t.Errorf("first poll lists %v as busy", hub.polls[0])
	}
	if !slices.Contains(hub.polls[1], "job-1") {
		t.Errorf("the poll after job-1 was handed out lists %v: job-1 missing", hub.polls[1])
	}
	for i, busy := range hub.polls[2:] {
		if !slices.Contains(busy, "job-1") || !slices.Contains(busy, "job-2") {
			t.Errorf("poll %d lists %v, want job-1 and job-2", i+2, busy)
		}
	}
}
