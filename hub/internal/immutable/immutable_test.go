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
	if err := immutable.Set(path, true); errors.Is(err, immutable.ErrUnsupported) || errors.Is(err, immutable.ErrNotPermitted) {
		testenv.Skip(t, "immutable attribute: %v (run as root on ext4, XFS or btrfs)", err)
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = immutable.Set(path, false) })
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
	if err := immutable.Set(path, true); err != nil {
		t.Fatalf("setting it again: %v", err)
	}
	if err := immutable.Set(path, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatalf("remove after clearing: %v", err)
	}
}
