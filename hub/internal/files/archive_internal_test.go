package files

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sendense/sendense/hub/internal/files/filestest"
)

// countingFS counts the path lookups a walk makes of a filesystem.
type countingFS struct {
	filesystem
	byPath, lookups, lists, opens int
}

func (c *countingFS) Stat(names []string) (Entry, error) {
	c.byPath++
	return c.filesystem.Stat(names)
}

func (c *countingFS) ReadDir(names []string) ([]Entry, error) {
	c.byPath++
	return c.filesystem.ReadDir(names)
}

func (c *countingFS) Open(names []string) (Entry, io.ReaderAt, error) {
	c.byPath++
	return c.filesystem.Open(names)
}

func (c *countingFS) lookup(names []string) (any, error) {
	c.lookups++
	return c.filesystem.lookup(names)
}

func (c *countingFS) list(dir any, names []string) ([]Entry, []any, error) {
	c.lists++
	return c.filesystem.list(dir, names)
}

func (c *countingFS) openNode(n any, names []string) (Entry, io.ReaderAt, error) {
	c.opens++
	return c.filesystem.openNode(n, names)
}

// An archive resolves its top directory's path once and then goes node by node: a path resolved
// from the root for each file rescans every directory above it, which made a directory of N
// files cost N²/2 entry reads.
func TestArchiveGoesNodeByNode(t *testing.T) {
	src := t.TempDir()
	for _, d := range []string{"d/a", "d/b/c"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 300 {
		dir := []string{"d", "d/a", "d/b/c"}[i%3]
		if err := os.WriteFile(filepath.Join(src, dir, fmt.Sprintf("f%03d", i)), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filestest.GPTDisk(filestest.MkfsExt4(t, src, 8<<20))
	disk, err := OpenDisk(bytes.NewReader(img), int64(len(img)), 4<<20, 8)
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := disk.fs("p1")
	if err != nil {
		t.Fatal(err)
	}
	c := &countingFS{filesystem: f}
	disk.fss["p1"] = c
	var buf bytes.Buffer
	if err := disk.WriteTar(&buf, "/p1/d", nil); err != nil {
		t.Fatal(err)
	}
	c.byPath = 0 // WriteTar's first Stat of its top directory
	files := 0
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			files++
		}
	}
	if files != 300 || c.lookups != 1 || c.lists != 4 || c.opens != 300 {
		t.Fatalf("archive of 300 files in 4 directories: %d files; %d lookups, %d listings, %d opens", files, c.lookups, c.lists, c.opens)
	}
}

// A directory holding two entries of one name lists and archives the first only (the one a
// lookup finds); a symlink whose target holds NUL, which tar cannot store, is left out of an
// archive instead of failing it.
func TestHostileNamesInAnArchive(t *testing.T) {
	src := t.TempDir()
	if err := os.Symlink("elsewhere", filepath.Join(src, "twin1")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "twin2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "twin2", "inside"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("AAAAAAAAnulAAAAAAAA", filepath.Join(src, "nullink")); err != nil {
		t.Fatal(err)
	}
	img := filestest.GPTDisk(filestest.MkfsExt4(t, src, 8<<20))
	for old, repl := range map[string]string{"twin2": "twin1", "AAAAAAAAnulAAAAAAAA": "AAAAAAAA\x00ulAAAAAAAA"} {
		if n := bytes.Count(img, []byte(old)); n != 1 {
			t.Fatalf("%q occurs %d times in the image", old, n)
		}
		copy(img[bytes.Index(img, []byte(old)):], repl)
	}
	disk, err := OpenDisk(bytes.NewReader(img), int64(len(img)), 4<<20, 8)
	if err != nil {
		t.Fatal(err)
	}
	es, err := disk.ReadDir("/p1")
	if err != nil {
		t.Fatal(err)
	}
	twins := 0
	for _, e := range es {
		if e.Name == "twin1" {
			twins++
		}
	}
	if twins != 1 {
		t.Fatalf("listing: %d entries named twin1: %+v", twins, es)
	}
	var buf bytes.Buffer
	if err := disk.WriteTar(&buf, "/p1", nil); err != nil {
		t.Fatalf("archive: %v", err)
	}
	seen := map[string]int{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name]++
	}
	if seen["p1/twin1"]+seen["p1/twin1/"] != 1 || seen["p1/nullink"] != 0 || seen["p1/lost+found/"] != 1 {
		t.Fatalf("archive: %v", seen)
	}
}
