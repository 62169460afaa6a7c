package directio

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// blocks is how many bytes of blocks f holds.
func blocks(t *testing.T, f *os.File) int64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// Preallocate reserves blocks for the range without changing the file's size or content.
func TestPreallocate(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 1 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	before := blocks(t, f)
	if err := Preallocate(f, 64<<10, 256<<10); err != nil {
		t.Fatal(err)
	}
	if err := Preallocate(f, 0, 0); err != nil {
		t.Fatalf("an empty range: %v", err)
	}
	if got := blocks(t, f) - before; got < 256<<10 {
		t.Fatalf("%d bytes of blocks reserved, want 256 KiB", got)
	}
	got, _ := os.ReadFile(f.Name())
	if len(got) != size || !bytes.Equal(got, make([]byte, size)) {
		t.Fatalf("the file holds %d bytes after preallocating, zero %v", len(got), bytes.Equal(got, make([]byte, size)))
	}
}
