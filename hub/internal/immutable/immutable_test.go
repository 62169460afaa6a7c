package immutable_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sendense/sendense/hub/internal/immutable"
	"github.com/sendense/sendense/shared/testenv"
)

// An immutable file refuses removal, rename and writes even to root, until the attribute is
// cleared; the tests run as root (CAP_LINUX_IMMUTABLE) on a file system that has the attribute.
func TestImmutableRefusesRemovalUntilCleared(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "chunk")
	if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := immutable.Set(filepath.Dir(path), path, true); errors.Is(err, immutable.ErrUnsupported) || errors.Is(err, immutable.ErrNotPermitted) {
		testenv.Skip(t, "immutable attribute: %v (run as root on ext4, XFS or btrfs)", err)
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = immutable.Set(filepath.Dir(path), path, false) })
	if on, err := immutable.Is(path); err != nil || !on {
		t.Fatalf("Is = %v, %v", on, err)
	}
	if err := os.Remove(path); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("remove of an immutable file: %v, want EPERM", err)
	}
	if err := os.Rename(path, path+".x"); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("rename of an immutable file: %v, want EPERM", err)
	}
	if _, err := os.OpenFile(path, os.O_WRONLY, 0); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("open for writing: %v, want EPERM", err)
	}
	if err := immutable.Set(filepath.Dir(path), path, true); err != nil {
		t.Fatalf("setting it again: %v", err)
	}
	if err := immutable.Set(filepath.Dir(path), path, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatalf("remove after clearing: %v", err)
	}
}

// Set changes only files beneath its root, reached without a symlink: a link planted in a
// repository (by whoever owns its files) must not make the root helper lift or set the
// attribute of a file elsewhere. Is follows no link either.
func TestSetFollowsNoSymlink(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := immutable.Set(filepath.Dir(outside), outside, true); errors.Is(err, immutable.ErrUnsupported) || errors.Is(err, immutable.ErrNotPermitted) {
		testenv.Skip(t, "immutable attribute: %v (run as root on ext4, XFS or btrfs)", err)
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = immutable.Set(filepath.Dir(outside), outside, false) })
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "chunks", "ab"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "chunks", "ab", "link")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(outside), filepath.Join(root, "chunks", "cd")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, filepath.Join(root, "chunks", "cd", "shadow"), filepath.Join(root, "..", filepath.Base(root)+"x")} {
		if err := immutable.Set(root, p, false); err == nil {
			t.Fatalf("Set through %s succeeded", p)
		}
	}
	if _, err := immutable.Is(link); err == nil {
		t.Fatal("Is followed a symlink")
	}
	if on, err := immutable.Is(outside); err != nil || !on {
		t.Fatalf("the file outside the root: immutable %v, %v", on, err)
	}
}
