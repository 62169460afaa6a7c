package directio

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAt(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size, off int
		shift     int // misalign the buffer
	}{
		{"aligned", 1 << 20, 0, 0},
		{"aligned with a tail", 1<<20 + 123, 0, 0},
		{"at an aligned offset", 64 << 10, 8192, 0},
		{"unaligned offset", 64 << 10, 100, 0},
		{"unaligned buffer", 64 << 10, 0, 1},
		{"smaller than a block", 100, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, tc.size+tc.shift)
			_, _ = rand.Read(buf)
			p := buf[tc.shift:]
			f, err := os.Create(filepath.Join(t.TempDir(), "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := WriteAt(f, p, int64(tc.off)); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(f.Name())
			if len(got) != tc.off+len(p) || !bytes.Equal(got[tc.off:], p) {
				t.Fatalf("file holds %d bytes, content equal %v", len(got), bytes.Equal(got[tc.off:], p))
			}
		})
	}
}
