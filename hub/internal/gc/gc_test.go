package gc

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	sessions []string              // digests named by open sessions
	disks    []catalog.IndexedDisk // disk results whose indexes the catalog names
	before   []catalog.Repository  // listed before repo
}

func (c *fakeCatalog) IndexedDisks(context.Context, string) ([]catalog.IndexedDisk, error) {
	return c.disks, nil
}

func (c *fakeCatalog) Repositories(context.Context) ([]catalog.Repository, error) {
	return append(slices.Clone(c.before), c.repo), nil
}

func (c *fakeCatalog) OpenSessionDigests(context.Context, string) ([]string, error) {
	return c.sessions, nil
}

func (c *fakeCatalog) RecordGC(_ context.Context, id string, at time.Time) error {
	if id == c.repo.ID {
		c.repo.GCAt = at
	}
	return nil
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

// A repository that cannot be collected does not keep a collection of every repository from
// collecting the others; its error is returned with their reports.
func TestRunGoesOnPastARepositoryInError(t *testing.T) {
	c, repo, _, _, garbage := setup(t, nil)
	c.cat.(*fakeCatalog).before = []catalog.Repository{{ID: "gone", Name: "offsite"}}
	open := c.open
	c.open = func(ctx context.Context, id string) (Repository, error) {
		if id == "gone" {
			return nil, errors.New("connection refused")
		}
		return open(ctx, id)
	}
	reps, err := c.Run(t.Context(), "", 30*time.Minute, false)
	if err == nil || !strings.Contains(err.Error(), "repository offsite: connection refused") {
		t.Fatalf("Run of every repository: %v, want the unreachable one's error", err)
	}
	if len(reps) != 1 || reps[0].Repository != "r" || reps[0].FreedChunks != 1 {
		t.Fatalf("reports %+v, want the reachable repository collected", reps)
	}
	if ok, _ := repo.HasChunk(t.Context(), garbage); ok {
		t.Fatal("the reachable repository's garbage is still there")
	}
}

// A collection is recorded in the catalog when it completes (not a dry run), and the schedule
// counts from the least recent one: a hub restarted more often than gc_interval still collects.
func TestScheduleCountsFromTheLastCollection(t *testing.T) {
	c, _, _, _, _ := setup(t, nil)
	cat := c.cat.(*fakeCatalog)
	if last, err := c.leastRecent(t.Context()); err != nil || !last.IsZero() {
		t.Fatalf("never collected: least recent %v (%v), want zero: collect once the hub settled", last, err)
	}
	if _, err := c.Run(t.Context(), "r", 30*time.Minute, true); err != nil || !cat.repo.GCAt.IsZero() {
		t.Fatalf("a dry run recorded a collection at %v (%v)", cat.repo.GCAt, err)
	}
	before := c.now()
	if _, err := c.Run(t.Context(), "r", 30*time.Minute, false); err != nil {
		t.Fatal(err)
	}
	last, err := c.leastRecent(t.Context())
	if err != nil || last.Before(before) || last.After(c.now()) {
		t.Fatalf("collection recorded at %v (%v), want between %v and now", last, err, before)
	}
	if got := testutil.ToFloat64(c.m.LastRun.WithLabelValues("r")); got != float64(last.Unix()) {
		t.Errorf("sendense_hub_gc_last_run_timestamp_seconds = %v, want %v", got, last.Unix())
	}
}

// heldAWhile is a repository whose touches hold a chunk for hold only (as under S3 Object Lock).
type heldAWhile struct {
	*repository.Repository
	hold time.Duration
}

func (r heldAWhile) TouchHolds() time.Duration { return r.hold }

// Where a touch holds a chunk for a while only, a collection stops removing once it has run for
// half of that since it started: a chunk a backup touched after the collection read what is
// referenced is safe from it only that long. The next collection removes the garbage.
func TestSweepStopsBeforeTouchesLapse(t *testing.T) {
	c, repo, _, _, garbage := setup(t, nil)
	open := c.open
	start := time.Now().Add(time.Hour)
	calls := 0
	c.now = func() time.Time { calls++; return start.Add(time.Duration(calls) * time.Hour) } // an hour per look
	c.open = func(ctx context.Context, id string) (Repository, error) {
		r, err := open(ctx, id)
		if err != nil {
			return nil, err
		}
		return heldAWhile{r.(*repository.Repository), time.Hour}, nil
	}
	if _, err := c.Run(t.Context(), "r", 30*time.Minute, false); !errors.Is(err, errSweepTooLong) {
		t.Fatalf("a collection past half the hold: %v, want errSweepTooLong", err)
	}
	// Collecting every repository, the one stopped is reported and the others go on.
	calls = 0
	if reps, err := c.Run(t.Context(), "", 30*time.Minute, false); err != nil || len(reps) != 1 || reps[0].FreedChunks != 0 {
		t.Fatalf("a scheduled collection past half the hold: %+v, %v; want the repository reported, nothing freed", reps, err)
	}
	if ok, _ := repo.HasChunk(t.Context(), garbage); !ok {
		t.Fatal("the stopped collection removed the garbage chunk")
	}
	c.now = func() time.Time { return start }
	if reps, err := c.Run(t.Context(), "r", 30*time.Minute, false); err != nil || reps[0].FreedChunks != 1 {
		t.Fatalf("a collection within the hold: %+v, %v", reps, err)
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

// hookRepo runs hook once, just before the collection reads the index of backup first.
type hookRepo struct {
	*repository.Repository
	first string
	once  *sync.Once
	hook  func()
}

func (h hookRepo) ReadIndex(ctx context.Context, ref repository.IndexRef) (*fidx.Index, error) {
	if ref.BackupID == h.first {
		h.once.Do(h.hook)
	}
	return h.Repository.ReadIndex(ctx, ref)
}

// An incremental commits while the collection walks the disk's indexes, after their directory
// was listed, and its parent is pruned right after (allowed: the child has committed): the walk
// sees neither index, and only the catalog, read after it, names the chunks the incremental
// inherited. They are kept. An index the catalog names and the repository lost does not stop
// the collection.
func TestIndexCommittedDuringTheWalkKeepsWhatItInherited(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := repository.InitDir(t.Context(), dir, slot, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	old, inherited, fresh, garbage := putChunk(t, repo), putChunk(t, repo), putChunk(t, repo), putChunk(t, repo)
	ref := func(id string) repository.IndexRef {
		return repository.IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: id}
	}
	write := func(id string, idx *fidx.Index) {
		t.Helper()
		if _, err := repo.WriteIndex(t.Context(), ref(id), idx); err != nil {
			t.Fatal(err)
		}
	}
	const first, parent, child = "bk-20261201-000000-aaaaaaaa", "bk-20261202-000000-aaaaaaaa", "bk-20261203-000000-aaaaaaaa"
	o, _ := fidx.New(2*slot, slot)
	o.Digests[0] = old
	write(first, o)
	p, _ := fidx.New(2*slot, slot)
	p.Digests[0] = inherited
	write(parent, p)
	cat := &fakeCatalog{repo: catalog.Repository{ID: repo.ID(), Name: "r", Path: dir}, disks: []catalog.IndexedDisk{
		{JobID: first, DiskID: "disk-2000", InstanceUUID: "vm"}, {JobID: parent, DiskID: "disk-2000", InstanceUUID: "vm"},
		{JobID: "bk-20261130-000000-bbbbbbbb", DiskID: "disk-2000", InstanceUUID: "vm"}, // lost
	}}
	var once sync.Once
	commitAndPrune := func() {
		c, err := fidx.Derive(p, 2*slot)
		if err != nil {
			t.Error(err)
			return
		}
		c.Digests[1] = fresh
		write(child, c)
		cat.disks = append(cat.disks, catalog.IndexedDisk{JobID: child, DiskID: "disk-2000", InstanceUUID: "vm"})
		if err := repo.RemoveIndex(t.Context(), ref(parent)); err != nil {
			t.Error(err)
		}
		cat.disks = slices.DeleteFunc(cat.disks, func(d catalog.IndexedDisk) bool { return d.JobID == parent })
	}
	open := func(ctx context.Context, id string) (Repository, error) {
		r, err := repository.OpenDir(ctx, dir, nil)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { _ = r.Close() })
		return hookRepo{Repository: r, first: first, once: &once, hook: commitAndPrune}, nil
	}
	c := New(cat, open, slog.New(slog.DiscardHandler), nil)
	c.now = func() time.Time { return time.Now().Add(time.Hour) } // every chunk is past the grace
	reps, err := c.Run(t.Context(), "r", 30*time.Minute, false)
	if err != nil || len(reps) != 1 {
		t.Fatalf("collection: %+v %v", reps, err)
	}
	for _, d := range []chunk.Digest{old, inherited, fresh} {
		if ok, err := repo.HasChunk(t.Context(), d); !ok || err != nil {
			t.Fatalf("chunk %s named by a live index was collected (%v)", d, err)
		}
	}
	if ok, _ := repo.HasChunk(t.Context(), garbage); ok {
		t.Fatal("the chunk nothing names was kept")
	}
}

// An index removed after the walk listed it (a backup deleted meanwhile) is passed over: the
// collection goes on, and what only that index named is garbage.
func TestIndexRemovedDuringTheWalkIsPassedOver(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := repository.InitDir(t.Context(), dir, slot, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	kept, dropped := putChunk(t, repo), putChunk(t, repo)
	ref := func(id string) repository.IndexRef {
		return repository.IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: id}
	}
	for id, d := range map[string]chunk.Digest{"bk-20261201-000000-aaaaaaaa": dropped, "bk-20261202-000000-aaaaaaaa": kept} {
		idx, _ := fidx.New(slot, slot)
		idx.Digests[0] = d
		if _, err := repo.WriteIndex(t.Context(), ref(id), idx); err != nil {
			t.Fatal(err)
		}
	}
	cat := &fakeCatalog{repo: catalog.Repository{ID: repo.ID(), Name: "r", Path: dir}}
	var once sync.Once
	open := func(ctx context.Context, id string) (Repository, error) {
		r, err := repository.OpenDir(ctx, dir, nil)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { _ = r.Close() })
		return hookRepo{Repository: r, first: "bk-20261201-000000-aaaaaaaa", once: &once, hook: func() {
			if err := repo.RemoveIndex(t.Context(), ref("bk-20261201-000000-aaaaaaaa")); err != nil {
				t.Error(err)
			}
		}}, nil
	}
	c := New(cat, open, slog.New(slog.DiscardHandler), nil)
	c.now = func() time.Time { return time.Now().Add(time.Hour) }
	reps, err := c.Run(t.Context(), "r", 30*time.Minute, false)
	if err != nil || len(reps) != 1 || reps[0].Indexes != 1 {
		t.Fatalf("collection: %+v %v, want one index read", reps, err)
	}
	if ok, _ := repo.HasChunk(t.Context(), kept); !ok {
		t.Fatal("the chunk of the index that stayed was collected")
	}
	if ok, _ := repo.HasChunk(t.Context(), dropped); ok {
		t.Fatal("the chunk only the removed index named was kept")
	}
}
