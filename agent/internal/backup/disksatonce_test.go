package backup_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/backup"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
)

// commitGate is the agent's hub client, except that a disk's commit waits until every disk of
// the job has opened its session: with the disks backed up one after another, the first commit
// would wait for sessions that open only after it, and gives up after a while.
type commitGate struct {
	*hubclient.Client
	disks int

	mu      sync.Mutex
	opened  map[string]bool
	allOpen chan struct{}
	serial  bool // a commit gave up waiting
}

func (g *commitGate) OpenSession(ctx context.Context, jobID, diskID string, req api.OpenSessionRequest) (api.Session, error) {
	s, err := g.Client.OpenSession(ctx, jobID, diskID, req)
	if err == nil {
		g.mu.Lock()
		if !g.opened[diskID] {
			g.opened[diskID] = true
			if len(g.opened) == g.disks {
				close(g.allOpen)
			}
		}
		g.mu.Unlock()
	}
	return s, err
}

func (g *commitGate) Commit(ctx context.Context, sessionID string, req api.CommitRequest) (api.BackupDisk, error) {
	select {
	case <-g.allOpen:
	case <-time.After(15 * time.Second):
		g.mu.Lock()
		g.serial = true
		g.mu.Unlock()
	case <-ctx.Done():
		return api.BackupDisk{}, ctx.Err()
	}
	return g.Client.Commit(ctx, sessionID, req)
}

// A job backs up its disks at once, so that over a long link each disk's round trips (session,
// CBT query, commit) do not wait for the disk before: every disk's session is open before the
// first disk commits. The backup restores byte-identical, full and incremental.
func TestJobBacksUpItsDisksAtOnce(t *testing.T) {
	spec := lab.Spec{VMs: []lab.VMSpec{{
		Name: "three", CBT: true,
		Disks: []lab.DiskSpec{
			{Key: 2000, Size: "24MiB", Fill: lab.FillRandom, Seed: 1},
			{Key: 2001, Size: "24MiB", Fill: lab.FillCompressible, Seed: 2},
			{Key: 2002, Size: "40MiB", Fill: lab.FillSparse, Data: "16MiB", Seed: 3},
		},
	}}}
	e := newEnv(t, spec, envOptions{})
	disks := []string{"disk-2000", "disk-2001", "disk-2002"}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for i, typ := range []string{"full", "incremental"} {
		if i > 0 {
			for j, d := range disks {
				if err := e.lab.WriteRandom("three", d, int64(j)*mib, 2*mib, int64(j)); err != nil {
					t.Fatal(err)
				}
			}
		}
		gate := &commitGate{Client: e.hc, disks: len(disks), opened: map[string]bool{}, allOpen: make(chan struct{})}
		e.runner = backup.NewRunner(gate, func(name string) (backup.Source, error) {
			c, err := e.srcs.Get(name)
			if err != nil {
				return nil, err
			}
			return c, nil
		}, log, e.metrics, backup.RunnerOptions{ProgressInterval: 200 * time.Millisecond})
		b := e.backup("three", typ)
		if b.Status != "succeeded" || b.Type != typ {
			t.Fatalf("%s backup: %+v\n%s", typ, b, e.logs)
		}
		if gate.serial {
			t.Fatalf("%s backup: a disk committed before every disk's session was open: the disks were backed up one after the other", typ)
		}
		for _, d := range disks {
			if e.imageSum(b.ID, d) != e.diskSum("three", d) {
				t.Fatalf("%s backup of %s does not restore the disk's bytes", typ, d)
			}
		}
	}
}
