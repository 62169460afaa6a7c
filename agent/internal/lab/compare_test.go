package lab

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCompareFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int64, at map[int64][]byte) string {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		for off, b := range at {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	const size = 64 << 20
	data := map[int64][]byte{1 << 20: []byte("hello"), 40 << 20: make([]byte, 8192)}
	data[40<<20][100] = 7
	a := write("a", size, data)
	b := write("b", size, data)
	if err := CompareFiles(a, b, size); err != nil {
		t.Fatalf("equal files: %v", err)
	}
	// Allocated zeros equal a hole; a shorter file reads as zero-padded.
	zeros := map[int64][]byte{1 << 20: []byte("hello"), 40 << 20: data[40<<20], 60 << 20: make([]byte, 4096)}
	if err := CompareFiles(a, write("c", size, zeros), size); err != nil {
		t.Fatalf("allocated zeros vs hole: %v", err)
	}
	if err := CompareFiles(write("short", 41<<20, data), a, size); err != nil {
		t.Fatalf("short file: %v", err)
	}
	diff := map[int64][]byte{1 << 20: []byte("hellp"), 40 << 20: data[40<<20]}
	if err := CompareFiles(a, write("d", size, diff), size); !errors.Is(err, ErrDiffer) {
		t.Fatalf("different byte: %v", err)
	}
	extra := map[int64][]byte{1 << 20: []byte("hello"), 40 << 20: data[40<<20], 50 << 20: []byte{1}}
	if err := CompareFiles(a, write("e", size, extra), size); !errors.Is(err, ErrDiffer) {
		t.Fatalf("data where the other has a hole: %v", err)
	}
	if err := CompareFiles(a, write("long", size+1, nil), size); !errors.Is(err, ErrDiffer) {
		t.Fatalf("longer file: %v", err)
	}
}
