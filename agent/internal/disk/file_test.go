package disk

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestFileReader(t *testing.T) {
	path, content := makeImage(t, 48<<20+3333)
	r, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, content)
	if reportsHoles(t, path) && r.(*fileReader).holeBytes.Load() == 0 {
		t.Error("no hole of the sparse image was skipped")
	}

	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := r.ReadAt(make([]byte, 10), 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("ReadAt after Close: err = %v, want os.ErrClosed", err)
	}
}

func TestFileReaderErrors(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		_, err := OpenFile(filepath.Join(t.TempDir(), "nope.img"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("file shrank", func(t *testing.T) {
		path, _ := makeImage(t, 1<<20)
		r, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := os.Truncate(path, 1<<19); err != nil {
			t.Fatal(err)
		}
		n, err := r.ReadAt(make([]byte, 4096), 1<<19+100)
		if err == nil || n != 0 {
			t.Fatalf("ReadAt beyond the new end = %d, %v; want an error", n, err)
		}
	})
	t.Run("negative offset", func(t *testing.T) {
		path, _ := makeImage(t, 1<<20)
		r, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if _, err := r.ReadAt(make([]byte, 1), -5); err == nil {
			t.Fatal("ReadAt at -5 succeeded")
		}
	})
}

// TestFileReaderHoles reads a sparse file whose holes are long and short, aligned and not, into
// buffers full of other bytes: a hole must come back as zeros, data around it intact, and a hole
// that is really the end of a file that shrank must still be an error.
func TestFileReaderHoles(t *testing.T) {
	const size = 9<<20 + 777
	content := make([]byte, size)
	fill := rand.NewChaCha8([32]byte{9})
	// Data pieces; everything else is never written. Between them: holes of 4 KiB and 8 KiB
	// (read through), of 1 MiB and 3 MiB (skipped), and the tail hole.
	pieces := []struct{ off, n int64 }{
		{0, 4 << 10}, {8 << 10, 4 << 10}, {20 << 10, 100}, {1 << 20, 4 << 10},
		{2<<20 + 5000, 70000}, {5 << 20, 1 << 20}, {6<<20 + 64<<10, 4 << 10},
	}
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, pc := range pieces {
		b := content[pc.off : pc.off+pc.n]
		_, _ = fill.Read(b)
		if _, err := f.WriteAt(b, pc.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	r := rd.(*fileReader)

	read := func(off int64, n int) {
		t.Helper()
		got := bytes.Repeat([]byte{0xa5}, n)
		k, err := r.ReadAt(got, off)
		wantN := int(min(int64(n), size-off))
		if k != wantN || (wantN < n) != (err == io.EOF) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; want %d", n, off, k, err, wantN)
		}
		if !bytes.Equal(got[:k], content[off:off+int64(k)]) {
			t.Fatalf("ReadAt(%d bytes at %d): wrong bytes", n, off)
		}
	}
	read(0, 2<<20+8000) // short holes, a long one, data at both ends
	holes := reportsHoles(t, path)
	// Only the two long holes, whole file-system blocks of them, are skipped.
	if got := r.holeBytes.Load(); holes && (got == 0 || got > 2<<20-20<<10-100) {
		t.Errorf("%d bytes skipped as holes, want the long holes only (at most %d)", got, 2<<20-20<<10-100)
	}
	read(4<<20, 4<<20)            // a hole, then data, then a short hole and data
	read(1<<20+4<<10, 1<<20)      // starts in a long hole
	read(7<<20, 1<<20)            // entirely in the tail hole
	read(8<<20, 2<<20)            // the tail hole up to the end of the file
	read(3<<20, 512)              // a small read inside a hole
	read(2<<20+5000+69990, 30000) // the last bytes of a piece, then a hole

	rng := rand.New(rand.NewPCG(5, 5))
	for range 300 {
		read(rng.Int64N(size), 1+rng.IntN(3<<20))
	}

	// The file shrinks into its tail hole: lseek calls the rest a hole too, but it is gone.
	if err := os.Truncate(path, 8<<20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2<<20)
	if n, err := r.ReadAt(got, 7<<20); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt across the new end = %d, %v; want an error", n, err)
	}
}

// reportsHoles tells whether the file system of path reports the holes of a sparse file (most
// do; where one does not, a file reader reads them like data, and the tests check bytes only).
func reportsHoles(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	at, err := f.Seek(0, seekHole)
	if err != nil || at >= fi.Size() {
		t.Logf("the file system of %s reports no holes: only bytes are checked", path)
		return false
	}
	return true
}

// The file transport's read_holes reads every byte of a sparse file, holes too, where by default
// the holes SEEK_DATA finds are left unread; both return the file's bytes.
func TestFileTransportReadHoles(t *testing.T) {
	path, content := makeImage(t, 48<<20+3333)
	holes := reportsHoles(t, path)
	for _, readHoles := range []bool{false, true} {
		tr := Transport{Name: "file", DatastorePaths: map[string]string{"ds1": filepath.Dir(path)}, ReadHoles: readHoles}
		r, err := Open(t.Context(), tr, Disk{ID: "disk-2000", Size: int64(len(content)), Datastore: "ds1", DataFile: filepath.Base(path)})
		if err != nil {
			t.Fatal(err)
		}
		checkReader(t, r, content)
		skipped := r.(*fileReader).holeBytes.Load()
		if readHoles && skipped != 0 {
			t.Errorf("read_holes: %d bytes of holes were left unread, want every byte read", skipped)
		}
		if !readHoles && holes && skipped == 0 {
			t.Error("no hole of the sparse image was skipped by default")
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
