package gc

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/chunk"
)

const slot = 64 << 10

// fakeCatalog is one repository and its open upload sessions.
type fakeCatalog struct {
	repo     catalog.Repository
	sessions []string // digests named by open sessions
}

func (c *fakeCatalog) Repositories(context.Context) ([]catalog.Repository, error) {
	return []catalog.Repository{c.repo}, nil
}

func (c *fakeCatalog) OpenSessionDigests(context.Context, string) ([]string, error) {
	return c.sessions, nil
}

func (c *fakeCatalog) OldestWrite(context.Context, string) (time.Time, error) {
	return time.Time{}, nil
}

func putChunk(t *testing.T, r *repository.Repository) chunk.Digest {
	t.Helper()
	p := make([]byte, 1000)
	_, _ = rand.Read(p)
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(p), p)
	if err != nil {
		t.Fatal(err)
	}
	d := chunk.Sum(p)
	if _, err := r.PutChunk(t.Context(), d, blob); err != nil {
		t.Fatal(err)
	}
	return d
}

// setup makes a repository with a chunk an index names, one an open session names and one
// nothing names, and a collector for it whose clock is an hour ahead.
func setup(t *testing.T, reg prometheus.Registerer) (c *Collector, repo *repository.Repository, indexed, session, garbage chunk.Digest) {
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := repository.InitDir(t.Context(), dir, slot, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	indexed, session, garbage = putChunk(t, repo), putChunk(t, repo), putChunk(t, repo)
	idx, err := fidx.New(slot, slot)
	if err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = indexed
	if _, err := repo.WriteIndex(t.Context(), repository.IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk"}, idx); err != nil {
		t.Fatal(err)
	}
	cat := &fakeCatalog{repo: catalog.Repository{ID: repo.ID(), Name: "r", Path: dir}, sessions: []string{session.String()}}
	open := func(ctx context.Context, id string) (Repository, error) {
		// Every collection opens its own instance, as a separate process would.
		r, err := repository.OpenDir(ctx, dir, nil)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { _ = r.Close() })
		return r, nil
	}
	c = New(cat, open, slog.New(slog.DiscardHandler), reg)
	c.now = func() time.Time { return time.Now().Add(time.Hour) }
	return c, repo, indexed, session, garbage
}

func TestCollectRemovesOnlyGarbage(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c, repo, indexed, session, garbage := setup(t, reg)
	reps, err := c.Run(t.Context(), "r", 30*time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].FreedChunks != 1 || reps[0].Referenced != 2 || reps[0].Chunks != 3 {
		t.Fatalf("report %+v", reps)
	}
	for d, want := range map[chunk.Digest]bool{indexed: true, session: true, garbage: false} {
		if ok, err := repo.HasChunk(t.Context(), d); ok != want || err != nil {
			t.Errorf("chunk %s present %v (%v), want %v", d, ok, err, want)
		}
	}
	if got := testutil.ToFloat64(c.m.FreedChunks.WithLabelValues("r")); got != 1 {
		t.Errorf("sendense_hub_gc_freed_chunks_total = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "sendense_hub_gc_freed_chunks_total", "sendense_hub_repository_chunks"); err != nil || n != 2 {
		t.Errorf("the registry the collector was given exports %d of its series (%v), want 2", n, err)
	}
}

// TestOneCollectionAtATime: while another process collects a repository, a collection of it is
// refused when asked for by name and skipped when all repositories are collected, and nothing
// is removed.
func TestOneCollectionAtATime(t *testing.T) {
	c, repo, _, _, garbage := setup(t, nil)
	other, err := repository.OpenDir(t.Context(), c.cat.(*fakeCatalog).repo.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	release, err := other.LockGC(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(t.Context(), "r", 0, false); !errors.Is(err, repository.ErrLocked) {
		t.Fatalf("Run of a repository another collection holds: %v, want ErrLocked", err)
	}
	if reps, err := c.Run(t.Context(), "", 0, false); err != nil || len(reps) != 0 {
		t.Fatalf("Run of all repositories = %v, %v; want the locked one skipped", reps, err)
	}
	if ok, _ := repo.HasChunk(t.Context(), garbage); !ok {
		t.Fatal("a refused collection removed a chunk")
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if reps, err := c.Run(t.Context(), "r", 30*time.Minute, false); err != nil || reps[0].FreedChunks != 1 {
		t.Fatalf("Run after the other collection ended = %v, %v", reps, err)
	}
}
