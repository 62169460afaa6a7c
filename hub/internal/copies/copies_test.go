package copies

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/check"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/gc"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/local"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

const slot = 64 << 10

// fakeCatalog is the catalog of one successful backup, job-1, and of the target repository, as
// the copier, garbage collection and repo check see it. The catalog's own methods are tested
// on both dialects in package catalog.
type fakeCatalog struct {
	rows   *catalog.BackupRows
	target catalog.Repository

	mu       sync.Mutex
	writes   map[string]catalog.CopyWrite
	copied   []catalog.BackupCopy
	renewErr error
	ended    int
}

func (c *fakeCatalog) Backups(context.Context, catalog.BackupFilter) ([]catalog.BackupRow, int, error) {
	return []catalog.BackupRow{{BackupJob: c.rows.Job}}, 1, nil
}

func (c *fakeCatalog) BackupByID(_ context.Context, id string) (*catalog.BackupRow, error) {
	if id != c.rows.Job.ID {
		return nil, fmt.Errorf("backup %s: %w", id, catalog.ErrNotFound)
	}
	return &catalog.BackupRow{BackupJob: c.rows.Job}, nil
}

func (c *fakeCatalog) BackupRows(context.Context, string) (*catalog.BackupRows, error) {
	return c.rows, nil
}

func (c *fakeCatalog) BackupCopies(context.Context, string) ([]catalog.BackupCopy, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]catalog.BackupCopy(nil), c.copied...), nil
}

func (c *fakeCatalog) BeginCopyWrite(_ context.Context, backupID, repositoryID string, ttl time.Duration) (*catalog.CopyWrite, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	w := catalog.CopyWrite{ID: catalog.NewID("cw-", now), BackupID: backupID, RepositoryID: repositoryID, StartedAt: now, ExpiresAt: now.Add(ttl)}
	if c.writes == nil {
		c.writes = map[string]catalog.CopyWrite{}
	}
	c.writes[w.ID] = w
	return &w, nil
}

func (c *fakeCatalog) RenewCopyWrite(_ context.Context, id string, ttl time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.renewErr != nil {
		return c.renewErr
	}
	w := c.writes[id]
	w.ExpiresAt = time.Now().Add(ttl)
	c.writes[id] = w
	return nil
}

func (c *fakeCatalog) FinishCopyWrite(_ context.Context, id string, cp *catalog.BackupCopy) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.writes[id]; !ok {
		return catalog.ErrCopyWriteExpired
	}
	delete(c.writes, id)
	c.copied = append(c.copied, *cp)
	return nil
}

func (c *fakeCatalog) EndCopyWrite(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.writes, id)
	c.ended++
	return nil
}

func (c *fakeCatalog) Repositories(context.Context) ([]catalog.Repository, error) {
	return []catalog.Repository{c.target}, nil
}

func (c *fakeCatalog) OpenSessionDigests(context.Context, string) ([]string, error) { return nil, nil }

func (c *fakeCatalog) RecordGC(context.Context, string, time.Time) error { return nil }

func (c *fakeCatalog) OldestWrite(context.Context, string) (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var oldest time.Time
	for _, w := range c.writes {
		if oldest.IsZero() || w.StartedAt.Before(oldest) {
			oldest = w.StartedAt
		}
	}
	return oldest, nil
}

func (c *fakeCatalog) IndexedDisks(context.Context, string) ([]catalog.IndexedDisk, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []catalog.IndexedDisk
	for _, cp := range c.copied {
		for _, d := range c.rows.Disks {
			out = append(out, catalog.IndexedDisk{JobID: cp.BackupID, DiskID: d.DiskID, DiskStatus: d.Status,
				InstanceUUID: c.rows.VM.InstanceUUID, JobStatus: c.rows.Job.Status})
		}
	}
	return out, nil
}

func (c *fakeCatalog) WritingBackupIDs(context.Context) (map[string]bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for _, w := range c.writes {
		out[w.BackupID] = true
	}
	return out, nil
}

// hookStore calls before ahead of the first write of a key with prefix.
type hookStore struct {
	store.Store
	prefix string
	once   sync.Once
	before func(ctx context.Context)
}

func (h *hookStore) Put(ctx context.Context, key string, data []byte) error {
	if strings.HasPrefix(key, h.prefix) {
		h.once.Do(func() { h.before(ctx) })
	}
	return h.Store.Put(ctx, key, data)
}

// fixture is a source repository holding backup job-1 (two chunks), and a target repository
// holding one of them already, unreferenced and two days old: left by a copy deleted there.
type fixture struct {
	cat        *fakeCatalog
	src        *repository.Repository
	dstDir     string
	ref        repository.IndexRef
	shared     chunk.Digest
	sharedData []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := t.Context()
	f := &fixture{dstDir: filepath.Join(t.TempDir(), "dst")}
	src, err := repository.InitDir(ctx, filepath.Join(t.TempDir(), "src"), slot, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	f.src = src
	dst, err := repository.InitDir(ctx, f.dstDir, slot, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	idx, err := fidx.New(2*slot, slot)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		plain := bytes.Repeat([]byte{byte('a' + i), 7}, slot/2)
		d := chunk.Sum(plain)
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := src.PutChunk(ctx, d, blob); err != nil {
			t.Fatal(err)
		}
		idx.Digests[i] = d
		if i == 0 {
			f.shared, f.sharedData = d, plain
			if _, err := dst.PutChunk(ctx, d, blob); err != nil {
				t.Fatal(err)
			}
			h := d.String()
			old := time.Now().Add(-48 * time.Hour)
			if err := os.Chtimes(filepath.Join(f.dstDir, "chunks", h[0:2], h[2:4], h), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.ref = repository.IndexRef{VMUUID: "4213f1a2-0000-0000-0000-000000000001", DiskID: "disk-2000", BackupID: "job-1"}
	digest, err := src.WriteIndex(ctx, f.ref, idx)
	if err != nil {
		t.Fatal(err)
	}
	f.cat = &fakeCatalog{target: catalog.Repository{ID: dst.ID(), Name: "offsite"}, rows: &catalog.BackupRows{
		Agent:  catalog.Agent{ID: "agent-1", Name: "appliance"},
		Source: catalog.Source{Name: "vcenter"},
		VM:     catalog.VMContext{ContextID: "ctx-1", InstanceUUID: f.ref.VMUUID, VMName: "vm"},
		Job: catalog.BackupJob{ID: "job-1", Type: api.BackupFull, RequestedType: api.BackupFull, Status: api.JobSucceeded,
			CreatedAt: time.Now().UTC()},
		Disks: []catalog.BackupDisk{{JobID: "job-1", DiskID: f.ref.DiskID, Type: api.BackupFull, Status: api.JobSucceeded,
			CapacityBytes: 2 * slot, ChunkSize: slot, IndexPath: f.ref.String(), IndexDigest: digest}},
	}}
	return f
}

// copy copies job-1 into the target, whose store calls before ahead of its first write of a key
// with prefix, and returns the target.
func (f *fixture) copy(t *testing.T, c *Copier, prefix string, before func(ctx context.Context)) (*repository.Repository, error) {
	t.Helper()
	ls, err := local.Open(t.Context(), f.dstDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := repository.Open(t.Context(), &hookStore{Store: ls, prefix: prefix, before: before})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	c.open = func(_ context.Context, id string) (Repository, error) {
		if id == "src" {
			return f.src, nil
		}
		return dst, nil
	}
	_, err = c.Run(t.Context(), "src", "dst", "")
	return dst, err
}

// restorable checks that the target restores job-1's disk whole.
func (f *fixture) restorable(t *testing.T, dst *repository.Repository) {
	t.Helper()
	idx, err := dst.ReadIndex(t.Context(), f.ref)
	if err != nil {
		t.Fatalf("the copy's index: %v", err)
	}
	for i, d := range idx.Digests {
		got, err := dst.ReadChunk(t.Context(), d, nil)
		if err != nil {
			t.Fatalf("slot %d of the copy: %v", i, err)
		}
		if d == f.shared && !bytes.Equal(got, f.sharedData) {
			t.Fatalf("slot %d of the copy differs", i)
		}
	}
}

// A garbage collection of the target while a copy writes there (here with no grace at all, as
// `repo gc --grace 0s` runs it) spares the chunk the target held already, unreferenced and old:
// the copy touched it, and its record of writing holds the collection's cutoff back.
func TestCollectionDuringACopySparesWhatItNeeds(t *testing.T) {
	f := newFixture(t)
	collector := gc.New(f.cat, func(ctx context.Context, _ string) (gc.Repository, error) {
		return repository.OpenDir(ctx, f.dstDir, nil)
	}, slog.New(slog.DiscardHandler), nil)
	var reps []gc.Report
	c := New(f.cat, nil, nil, 2)
	dst, err := f.copy(t, c, "indexes/", func(context.Context) {
		var err error
		if reps, err = collector.Run(context.Background(), "", 0, false); err != nil {
			t.Errorf("gc during the copy: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	if len(reps) != 1 || reps[0].Chunks != 2 || reps[0].FreedChunks != 0 {
		t.Fatalf("gc during the copy: %+v", reps)
	}
	if len(f.cat.copied) != 1 || len(f.cat.writes) != 0 {
		t.Fatalf("copies recorded %v, writes left %v", f.cat.copied, f.cat.writes)
	}
	f.restorable(t, dst)
}

// `repo check --repair` while a copy writes its index does not take that index for an orphan.
func TestCheckRepairDuringACopyKeepsItsIndex(t *testing.T) {
	f := newFixture(t)
	checker := check.New(f.cat, func(ctx context.Context, _ string) (check.Repository, error) {
		return repository.OpenDir(ctx, f.dstDir, nil)
	}, slog.New(slog.DiscardHandler))
	c := New(f.cat, nil, nil, 2)
	var rep check.Report
	dst, err := f.copy(t, c, "backups/", func(context.Context) { // after the index, before the record
		var err error
		if rep, err = checker.Run(context.Background(), true); err != nil {
			t.Errorf("check during the copy: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	if rep.Indexes != 1 || len(rep.Problems) != 0 {
		t.Fatalf("check --repair during the copy: %d indexes, problems %+v", rep.Indexes, rep.Problems)
	}
	f.restorable(t, dst)
}

// A copy whose record of writing cannot be renewed stops, says why, records no copy and ends
// its record.
func TestCopyStopsWhenItsHoldLapses(t *testing.T) {
	f := newFixture(t)
	f.cat.renewErr = catalog.ErrCopyWriteExpired
	c := New(f.cat, nil, nil, 2)
	c.ttl = 40 * time.Millisecond
	stopped := make(chan struct{})
	_, err := f.copy(t, c, "chunks/", func(ctx context.Context) {
		// The first chunk written waits until the copy is stopped (or 10 s).
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			close(stopped)
		}
	})
	select {
	case <-stopped:
		t.Fatal("the copy went on for 10 s after its hold lapsed")
	default:
	}
	if err == nil || !errors.Is(err, catalog.ErrCopyWriteExpired) || !strings.Contains(err.Error(), "lapsed") {
		t.Fatalf("copy whose hold lapsed: %v", err)
	}
	if len(f.cat.copied) != 0 || len(f.cat.writes) != 0 || f.cat.ended != 1 {
		t.Fatalf("copies recorded %v, writes left %v, ended %d", f.cat.copied, f.cat.writes, f.cat.ended)
	}
}

// briefHold is a target whose touches hold a chunk for hold only, as under S3 Object Lock, and
// that counts them.
type briefHold struct {
	*repository.Repository
	hold    time.Duration
	touches atomic.Int32
}

func (r *briefHold) TouchHolds() time.Duration { return r.hold }

func (r *briefHold) TouchChunk(ctx context.Context, d chunk.Digest) error {
	r.touches.Add(1)
	return r.Repository.TouchChunk(ctx, d)
}

// Where a touch holds a chunk for a while only, a copy that ran for half of that since it first
// touched the chunks the target held touches them again before its indexes name them; one that
// did not run that long touches each once.
func TestLongCopyTouchesHeldChunksAgain(t *testing.T) {
	for _, tc := range []struct {
		hold time.Duration
		want int32
	}{
		{2 * holdSlack, 4},  // half the hold, less the slack, is over at once: both chunks again
		{48 * time.Hour, 2}, // a copy of a few milliseconds: each chunk once (one found missing)
	} {
		f := newFixture(t)
		dst, err := repository.OpenDir(t.Context(), f.dstDir, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = dst.Close() })
		target := &briefHold{Repository: dst, hold: tc.hold}
		c := New(f.cat, func(_ context.Context, id string) (Repository, error) {
			if id == "src" {
				return f.src, nil
			}
			return target, nil
		}, nil, 2)
		if _, err := c.Run(t.Context(), "src", "dst", ""); err != nil {
			t.Fatal(err)
		}
		if n := target.touches.Load(); n != tc.want {
			t.Errorf("hold %v: %d touches, want %d", tc.hold, n, tc.want)
		}
		f.restorable(t, dst)
	}
}

// slowIndexes is a briefHold target whose index writes take delay, as HEADs of a large disk's
// chunks against a distant S3 server would.
type slowIndexes struct {
	*briefHold
	delay time.Duration
}

func (r *slowIndexes) WriteIndex(ctx context.Context, ref repository.IndexRef, idx *fidx.Index) (string, error) {
	time.Sleep(r.delay)
	return r.briefHold.WriteIndex(ctx, ref, idx)
}

// An index whose writing outlasts half the hold of the chunks it names fails the copy, which is
// not recorded: a garbage collection that started before the index existed could remove them.
func TestIndexWrittenPastTheHoldFailsTheCopy(t *testing.T) {
	f := newFixture(t)
	dst, err := repository.OpenDir(t.Context(), f.dstDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	target := &slowIndexes{briefHold: &briefHold{Repository: dst, hold: 100 * time.Millisecond}, delay: 200 * time.Millisecond}
	c := New(f.cat, func(_ context.Context, id string) (Repository, error) {
		if id == "src" {
			return f.src, nil
		}
		return target, nil
	}, nil, 2)
	if _, err := c.Run(t.Context(), "src", "dst", ""); err == nil || !strings.Contains(err.Error(), "too long for their hold") {
		t.Fatalf("copy whose index outlasted the hold: %v", err)
	}
	if len(f.cat.copied) != 0 {
		t.Fatalf("copies recorded %v", f.cat.copied)
	}
}
