package disk

import (
	"errors"
	"io/fs"
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
