package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/immutable"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/chunk"
	"github.com/sendense/sendense/shared/testenv"
)

// repo harden as root makes a recent backup's index and chunk immutable, so that removing the
// chunk file fails with EPERM; --dry-run changes nothing.
func TestRepoHardenCommand(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	hub := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, &errOut, noEnv)
		return out.String(), err
	}
	if _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(dir, "repo")
	if _, err := hub("repo", "create", "vault", "--path", repoDir, "--chunk-size", "64KiB"); err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(repoDir, "probe")
	_ = os.WriteFile(probe, nil, 0o600)
	if err := immutable.Set(filepath.Dir(probe), probe, true); err != nil {
		testenv.Skip(t, "immutable files: %v (run as root on ext4, XFS or btrfs)", err)
	}
	_ = immutable.Set(filepath.Dir(probe), probe, false)
	_ = os.Remove(probe)
	t.Cleanup(func() {
		_ = filepath.WalkDir(repoDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				_ = immutable.Set(filepath.Dir(p), p, false)
			}
			return nil
		})
	})

	r, err := repository.OpenDir(t.Context(), repoDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("hardened "), 64<<10/9+1)[:64<<10]
	d := chunk.Sum(plain)
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutChunk(t.Context(), d, blob); err != nil {
		t.Fatal(err)
	}
	idx, err := fidx.New(64<<10, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = d
	ref := repository.IndexRef{VMUUID: "4213f1a2-0000-0000-0000-0000000000bb", DiskID: "disk-2000", BackupID: "bk-1"}
	if _, err := r.WriteIndex(t.Context(), ref, idx); err != nil {
		t.Fatal(err)
	}
	chunkPath, _ := r.ChunkFile(r.ChunkName(d))
	_ = r.Close()

	out, err := hub("repo", "harden", "vault", "--dry-run")
	if err != nil || !strings.Contains(out, "would harden 1 indexes, 1 chunks") {
		t.Fatalf("dry run: %q %v", out, err)
	}
	if on, _ := immutable.Is(chunkPath); on {
		t.Fatal("a dry run made the chunk immutable")
	}
	out, err = hub("repo", "harden", "vault", "--lock-days", "30")
	if err != nil || !strings.Contains(out, "vault: 1 indexes and 1 chunks immutable") {
		t.Fatalf("harden: %q %v", out, err)
	}
	if err := os.Remove(chunkPath); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("removing a hardened chunk file: %v, want EPERM", err)
	}
}
