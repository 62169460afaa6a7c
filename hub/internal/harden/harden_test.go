package harden_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/harden"
	"github.com/sendense/sendense/hub/internal/immutable"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/chunk"
	"github.com/sendense/sendense/shared/testenv"
)

type fakeCatalog struct{ protected []string }

func (c fakeCatalog) Backups(_ context.Context, _ catalog.BackupFilter) ([]catalog.BackupRow, int, error) {
	var out []catalog.BackupRow
	for _, id := range c.protected {
		r := catalog.BackupRow{}
		r.ID, r.Protected = id, true
		out = append(out, r)
	}
	return out, len(out), nil
}

// supported skips the test (or fails it under SENDENSE_TEST_STRICT) where files cannot be made
// immutable here: not root, or a file system without the attribute.
func supported(t *testing.T, dir string) {
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := immutable.Set(filepath.Dir(probe), probe, true); err != nil {
		testenv.Skip(t, "immutable files: %v (run as root on ext4, XFS or btrfs)", err)
	}
	_ = immutable.Set(filepath.Dir(probe), probe, false)
	_ = os.Remove(probe)
}

// Hardened mode on a local repository: recent and protected backups' indexes and chunks become
// immutable, and the hub (its store, and even root without clearing the attribute) cannot
// remove them: EPERM, a removal refused as retained, GC's removal refused; an old unprotected
// index's chunks stay removable. A later run, past the lock period, releases what is neither
// protected nor named by a kept index, and the hub can remove it then.
func TestHardenKeepsRecentAndProtectedReleasesTheRest(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "repo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	supported(t, dir)
	t.Cleanup(func() { // what stays immutable would stop TempDir's removal
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				_ = immutable.Set(filepath.Dir(p), p, false)
			}
			return nil
		})
	})
	const cs = 64 << 10
	r, err := repository.InitDir(ctx, dir, cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	var ds [4]chunk.Digest
	var blobs [4][]byte
	for i := range ds {
		plain := bytes.Repeat([]byte{byte(i + 1), 9}, cs/2)
		ds[i] = chunk.Sum(plain)
		if blobs[i], err = chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain); err != nil {
			t.Fatal(err)
		}
		if _, err := r.PutChunk(ctx, ds[i], blobs[i]); err != nil {
			t.Fatal(err)
		}
	}
	const vm = "4213f1a2-0000-0000-0000-0000000000aa"
	ref := func(backup string) repository.IndexRef {
		return repository.IndexRef{VMUUID: vm, DiskID: "disk-2000", BackupID: backup}
	}
	write := func(backup string, age time.Duration, names ...chunk.Digest) {
		idx, err := fidx.New(int64(len(names))*cs, cs)
		if err != nil {
			t.Fatal(err)
		}
		copy(idx.Digests, names)
		if _, err := r.WriteIndex(ctx, ref(backup), idx); err != nil {
			t.Fatal(err)
		}
		path, _ := r.IndexFile(ref(backup))
		then := time.Now().Add(-age)
		if err := os.Chtimes(path, then, then); err != nil {
			t.Fatal(err)
		}
	}
	day := 24 * time.Hour
	write("bk-old", 40*day, ds[0], ds[1])    // older than the lock period, not protected
	write("bk-new", time.Hour, ds[1], ds[2]) // recent
	write("bk-prot", 40*day, ds[3])          // old but protected
	cat := fakeCatalog{protected: []string{"bk-prot"}}
	log := slog.New(slog.DiscardHandler)
	chunkFile := func(i int) string { p, _ := r.ChunkFile(r.ChunkName(ds[i])); return p }

	rep, err := harden.Run(ctx, r, cat, harden.Options{LockPeriod: 30 * day}, log)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Indexes != 2 || rep.HardenedIndexes != 2 || rep.Chunks != 3 || rep.HardenedChunks != 3 || rep.ProtectedIndexes != 1 {
		t.Fatalf("first run: %+v; want bk-new and bk-prot and their 3 chunks hardened", rep)
	}
	for i, want := range []bool{false, true, true, true} {
		if on, err := immutable.Is(chunkFile(i)); err != nil || on != want {
			t.Fatalf("chunk %d immutable = %v, %v; want %v", i, on, err, want)
		}
	}
	if err := os.Remove(chunkFile(1)); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("removing an immutable chunk file: %v, want EPERM", err)
	}
	if err := os.WriteFile(chunkFile(1), []byte("overwritten"), 0o600); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("overwriting an immutable chunk file: %v, want EPERM", err)
	}
	future := time.Now().Add(time.Hour)
	if _, _, err := r.RemoveChunkIfOlder(ctx, r.ChunkName(ds[1]), future); !errors.Is(err, repository.ErrRetained) {
		t.Fatalf("GC's removal of an immutable chunk: %v, want ErrRetained", err)
	}
	if err := r.RemoveIndex(ctx, ref("bk-new")); !errors.Is(err, repository.ErrRetained) {
		t.Fatalf("removal of an immutable index: %v, want ErrRetained", err)
	}
	// A new backup reusing an immutable chunk still works (its touch is not needed).
	if _, err := r.PutChunk(ctx, ds[2], blobs[2]); err != nil {
		t.Fatalf("PutChunk of an immutable chunk: %v", err)
	}
	if removed, _, err := r.RemoveChunkIfOlder(ctx, r.ChunkName(ds[0]), future); err != nil || !removed {
		t.Fatalf("removal of bk-old's own chunk: %v, %v", removed, err)
	}

	// 31 days later bk-new is past the lock period: it and its chunks are released, except
	// nothing of bk-prot.
	rep, err = harden.Run(ctx, r, cat, harden.Options{LockPeriod: 30 * day, Now: time.Now().Add(31 * day)}, log)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ReleasedIndexes != 1 || rep.ReleasedChunks != 2 || rep.Indexes != 1 || rep.Chunks != 1 {
		t.Fatalf("second run: %+v; want bk-new and 2 chunks released, bk-prot kept", rep)
	}
	if err := r.RemoveIndex(ctx, ref("bk-new")); err != nil {
		t.Fatalf("removal of a released index: %v", err)
	}
	if removed, _, err := r.RemoveChunkIfOlder(ctx, r.ChunkName(ds[2]), future); err != nil || !removed {
		t.Fatalf("removal of a released chunk: %v, %v", removed, err)
	}
	if _, _, err := r.RemoveChunkIfOlder(ctx, r.ChunkName(ds[3]), future); !errors.Is(err, repository.ErrRetained) {
		t.Fatalf("removal of the protected backup's chunk: %v, want ErrRetained", err)
	}
}
