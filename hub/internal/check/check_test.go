package check

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

type fakeCatalog struct {
	repo      catalog.Repository
	disks     []catalog.IndexedDisk
	afterRead func()   // run once, after the first read of the disks
	elsewhere []string // backups the catalog holds in another repository
}

func (c *fakeCatalog) BackupByID(_ context.Context, id string) (*catalog.BackupRow, error) {
	if slices.Contains(c.elsewhere, id) {
		return &catalog.BackupRow{BackupJob: catalog.BackupJob{ID: id, RepositoryID: "elsewhere"}}, nil
	}
	return nil, fmt.Errorf("backup %s: %w", id, catalog.ErrNotFound)
}

func (c *fakeCatalog) Repositories(context.Context) ([]catalog.Repository, error) {
	return []catalog.Repository{c.repo}, nil
}

func (c *fakeCatalog) IndexedDisks(context.Context, string) ([]catalog.IndexedDisk, error) {
	out := slices.Clone(c.disks)
	if c.afterRead != nil {
		c.afterRead()
		c.afterRead = nil
	}
	return out, nil
}

func (c *fakeCatalog) WritingBackupIDs(context.Context) (map[string]bool, error) {
	return map[string]bool{}, nil
}

// TestStaleTempFiles: temp files of a writer that died after the repository was opened are
// reported, and removed with repair; a live writer's are not touched.
func TestStaleTempFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := repository.InitDir(t.Context(), dir, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	// A writer that died: its temp directory's lock file exists and nobody holds it.
	dead := filepath.Join(dir, "tmp", "i-dead")
	if err := os.MkdirAll(dead, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lock", "put-1", "put-2"} {
		if err := os.WriteFile(filepath.Join(dead, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cat := &fakeCatalog{repo: catalog.Repository{ID: repo.ID(), Name: "r", Path: dir}}
	c := New(cat, func(context.Context, string) (Repository, error) { return repo, nil }, slog.New(slog.DiscardHandler))

	rep, err := c.Run(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Kind != "stale_temp" || rep.Problems[0].Repaired {
		t.Fatalf("check without repair: %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(dead, "put-1")); err != nil {
		t.Fatalf("a check without repair removed a temp file: %v", err)
	}
	rep, err = c.Run(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.TempsRemoved != 2 || len(rep.Problems) != 1 || !rep.Problems[0].Repaired {
		t.Fatalf("check with repair: %+v", rep)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Fatalf("the dead writer's temp directory survived repair: %v", err)
	}
	if rep, err = c.Run(t.Context(), false); err != nil || !rep.OK() || len(rep.Problems) != 0 {
		t.Fatalf("check after repair: %+v, %v", rep, err)
	}
}

// A quarantined chunk is listed, explains the missing chunk of the backup that names it, and
// survives repair.
func TestQuarantinedChunks(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := repository.InitDir(ctx, dir, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	plain := bytes.Repeat([]byte("sendense"), 8<<10)
	d := chunk.Sum(plain)
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.PutChunk(ctx, d, blob); err != nil {
		t.Fatal(err)
	}
	idx, err := fidx.New(int64(len(plain)), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = d
	ref := repository.IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-1"}
	if _, err := repo.WriteIndex(ctx, ref, idx); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "chunks", d.String()[:2], d.String()[2:4], d.String())
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	blob[len(blob)-1] ^= 1
	if err := os.WriteFile(p, blob, 0o640); err != nil {
		t.Fatal(err)
	}
	key, err := repo.QuarantineChunk(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	cat := &fakeCatalog{repo: catalog.Repository{ID: repo.ID(), Name: "r", Path: dir},
		disks: []catalog.IndexedDisk{{JobID: "bk-1", DiskID: "disk-2000", InstanceUUID: "vm", JobStatus: api.JobSucceeded}}}
	c := New(cat, func(context.Context, string) (Repository, error) { return repo, nil }, slog.New(slog.DiscardHandler))
	for _, repair := range []bool{false, true} {
		rep, err := c.Run(ctx, repair)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Quarantined) != 1 || rep.Quarantined[0].Key != key || rep.Quarantined[0].Digest != d || rep.Quarantined[0].Repository != "r" {
			t.Fatalf("repair %v: quarantine listed as %+v", repair, rep.Quarantined)
		}
		if rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Kind != "missing_chunk" || !strings.Contains(rep.Problems[0].Detail, key) {
			t.Fatalf("repair %v: problems %+v", repair, rep.Problems)
		}
		if rep.Chunks != 0 {
			t.Fatalf("repair %v: %d chunks counted; a quarantined object is not a chunk", repair, rep.Chunks)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(key))); err != nil {
		t.Fatalf("repair removed the quarantined chunk: %v", err)
	}
}

// oneChunkRepo returns a new repository in dir holding one chunk, and a one-slot index naming it.
func oneChunkRepo(t *testing.T) (repo *repository.Repository, dir string, idx *fidx.Index) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "repo")
	repo, err := repository.InitDir(t.Context(), dir, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	p := make([]byte, 1000)
	_, _ = rand.Read(p)
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(p), p)
	if err != nil {
		t.Fatal(err)
	}
	d := chunk.Sum(p)
	if _, err := repo.PutChunk(t.Context(), d, blob); err != nil {
		t.Fatal(err)
	}
	if idx, err = fidx.New(64<<10, 64<<10); err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = d
	return repo, dir, idx
}

// A backup that commits its index and succeeds just after the check read the catalog's disks:
// the walk finds an index the catalog did not name when it was read, and the job is no longer
// active when the check asks. It is not an orphan, and repair leaves it.
func TestRepairKeepsAnIndexCommittedDuringTheCheck(t *testing.T) {
	repo, dir, idx := oneChunkRepo(t)
	fresh := repository.IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-fresh"}
	orphan := repository.IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: "bk-orphan"}
	if _, err := repo.WriteIndex(t.Context(), orphan, idx); err != nil {
		t.Fatal(err)
	}
	cat := &fakeCatalog{repo: catalog.Repository{ID: repo.ID(), Name: "r", Path: dir}}
	cat.afterRead = func() {
		// The index, then its disk's row (CommitSession), then the job succeeds.
		if _, err := repo.WriteIndex(t.Context(), fresh, idx); err != nil {
			t.Error(err)
		}
		cat.disks = append(cat.disks, catalog.IndexedDisk{JobID: fresh.BackupID, DiskID: fresh.DiskID, InstanceUUID: fresh.VMUUID, JobStatus: api.JobSucceeded})
	}
	c := New(cat, func(context.Context, string) (Repository, error) { return repo, nil }, slog.New(slog.DiscardHandler))
	rep, err := c.Run(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.ReadIndex(t.Context(), fresh); err != nil {
		t.Fatalf("repair removed the index of a backup that succeeded during the check: %v (problems %+v)", err, rep.Problems)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != "orphan_index" || rep.Problems[0].BackupID != orphan.BackupID || !rep.Problems[0].Repaired {
		t.Fatalf("problems %+v, want the one orphan, repaired", rep.Problems)
	}
	if _, err := repo.ReadIndex(t.Context(), orphan); !errors.Is(err, repository.ErrIndexNotFound) {
		t.Fatalf("the orphan index: %v, want removed", err)
	}
}

// An index no catalog row names whose backup the repository records as complete (the catalog
// restored from an older copy, an attach under way) is not an orphan: it is reported as a
// backup the catalog lacks and repair keeps it; so does an index whose record cannot be read.
// Only an index without a record (a deleted backup's leftover: deletion removes the record
// first) is removed.
func TestRepairKeepsTheIndexesOfBackupsTheRepositoryRecords(t *testing.T) {
	ctx := t.Context()
	repo, dir, idx := oneChunkRepo(t)
	refs := map[string]repository.IndexRef{}
	for _, id := range []string{"bk-recorded", "bk-unreadable", "bk-orphan", "bk-copied"} {
		refs[id] = repository.IndexRef{VMUUID: "vm-1", DiskID: "disk-2000", BackupID: id}
		if _, err := repo.WriteIndex(ctx, refs[id], idx); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	rows := &catalog.BackupRows{
		Agent:  catalog.Agent{ID: "agent-1", Name: "a1"},
		Source: catalog.Source{Name: "lab"},
		VM:     catalog.VMContext{ContextID: "ctx-1", InstanceUUID: "vm-1", VMName: "db1"},
		Job:    catalog.BackupJob{ID: "bk-recorded", Type: api.BackupFull, Status: api.JobSucceeded, CreatedAt: now, StartedAt: now, FinishedAt: now},
		Disks: []catalog.BackupDisk{{DiskID: "disk-2000", Type: api.BackupFull, CapacityBytes: 64 << 10, ChunkSize: 64 << 10, SlotsTotal: 1,
			IndexPath: "indexes/vm-1/disk-2000/bk-recorded.fidx", IndexDigest: "ab"}},
	}
	if err := repo.WriteBackupRecord(ctx, repository.RecordOf(rows)); err != nil {
		t.Fatal(err)
	}
	// A copy of bk-copied, whose home is another repository, that the catalog does not record
	// (it failed after writing its record, or this repository was attached after the home).
	rows.Job.ID = "bk-copied"
	rows.Disks[0].IndexPath = "indexes/vm-1/disk-2000/bk-copied.fidx"
	if err := repo.WriteBackupRecord(ctx, repository.RecordOf(rows)); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "backups", "vm-1", "bk-unreadable.json")
	if err := os.WriteFile(bad, []byte("{not a record"), 0o640); err != nil {
		t.Fatal(err)
	}
	cat := &fakeCatalog{repo: catalog.Repository{ID: repo.ID(), Name: "r", Path: dir}, elsewhere: []string{"bk-copied"}}
	rep, err := New(cat, func(context.Context, string) (Repository, error) { return repo, nil }, slog.New(slog.DiscardHandler)).Run(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Problem{}
	for _, p := range rep.Problems {
		got[p.BackupID] = p
	}
	if p := got["bk-recorded"]; p.Kind != "unimported_backup" || p.Repaired || !strings.Contains(p.Detail, "repo attach") {
		t.Errorf("the recorded backup's index: %+v, want unimported_backup, kept", p)
	}
	if p := got["bk-unreadable"]; p.Kind != "orphan_index" || p.Repaired || !strings.Contains(p.Detail, "left in place") {
		t.Errorf("the index with an unreadable record: %+v, want reported and kept", p)
	}
	if p := got["bk-orphan"]; p.Kind != "orphan_index" || !p.Repaired {
		t.Errorf("the orphan: %+v, want repaired", p)
	}
	// Kept: it may as well be a copy in a repository attached after the backup's home.
	if p := got["bk-copied"]; p.Kind != "orphan_copy" || p.Repaired || !strings.Contains(p.Detail, "copy policy") {
		t.Errorf("the unrecorded copy: %+v, want orphan_copy, kept", p)
	}
	if _, err := repo.ReadBackupRecord(ctx, "vm-1", "bk-copied"); err != nil {
		t.Errorf("the unrecorded copy's record after repair: %v, want kept", err)
	}
	for id, want := range map[string]bool{"bk-recorded": true, "bk-unreadable": true, "bk-orphan": false, "bk-copied": true} {
		if _, err := repo.ReadIndex(ctx, refs[id]); (err == nil) != want {
			t.Errorf("index of %s after repair: %v, want kept %v", id, err, want)
		}
	}
	if rep.OK() {
		t.Error("the report is OK with a backup the catalog lacks")
	}
}
