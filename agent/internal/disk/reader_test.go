package disk

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sendense/sendense/shared/testenv"
)

// requireTool returns the path of an external program or skips the test (fails it under
// SENDENSE_TEST_STRICT, which CI sets).
func requireTool(t testing.TB, name, how string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		testenv.Skip(t, "%s not found in PATH: %s (make test installs it)", name, how)
	}
	return path
}

func requireNBDKit(t testing.TB) {
	t.Helper()
	requireTool(t, "nbdkit", "apt-get install nbdkit")
}

// makeImage writes a sparse image of the given size with random data at scattered offsets,
// around the 32 MiB request split and in the last bytes, and returns its path and content.
func makeImage(t testing.TB, size int64) (string, []byte) {
	t.Helper()
	content := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(size), 7))
	fill := rand.NewChaCha8([32]byte{byte(size)})
	offsets := []int64{0, 32<<20 - 3000, max(size-70000, 0)}
	for range 30 {
		offsets = append(offsets, rng.Int64N(size))
	}
	for _, off := range offsets {
		if off >= size {
			continue
		}
		n := min(int64(1+rng.IntN(200<<10)), size-off)
		_, _ = fill.Read(content[off : off+n])
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	// Write only non-zero 64 KiB blocks so the file stays sparse.
	const blk = 64 << 10
	zero := make([]byte, blk)
	for off := int64(0); off < size; off += blk {
		b := content[off:min(off+blk, size)]
		if bytes.Equal(b, zero[:len(b)]) {
			continue
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return path, content
}

// checkReader is the conformance test every Reader passes: bytes, counts and io.EOF at many
// offsets and lengths (end of disk, past the end, across the NBD 32 MiB split when the image
// is big enough), then concurrent random reads.
func checkReader(t *testing.T, r Reader, content []byte) {
	t.Helper()
	size := int64(len(content))
	if r.Size() != size {
		t.Fatalf("Size() = %d, want %d", r.Size(), size)
	}
	type tc struct {
		name string
		off  int64
		n    int
	}
	cases := []tc{
		{"one byte", 0, 1},
		{"unaligned", 12345, 4097},
		{"4 MiB slot", 4 << 20, 4 << 20},
		{"exactly to the end", size - 4096, 4096},
		{"last partial block", size - 1000, 4096},
		{"at the end", size, 10},
		{"past the end", size + 1<<20, 10},
		{"empty", 7, 0},
	}
	if size > 40<<20 {
		cases = append(cases, tc{"across the 32 MiB split", 30 << 20, 8 << 20})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := compareRead(r, content, c.off, c.n); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 16 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 3))
				for i := range 12 {
					n := 1 + rng.IntN(256<<10)
					if i%6 == 0 {
						n = 4 << 20
					}
					if err := compareRead(r, content, rng.Int64N(size+100), n); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// compareRead checks one ReadAt against the expected content, with io.ReaderAt semantics.
func compareRead(r io.ReaderAt, content []byte, off int64, n int) error {
	size := int64(len(content))
	wantN := 0
	if off < size {
		wantN = int(min(int64(n), size-off))
	}
	wantEOF := wantN < n
	got := make([]byte, n)
	gotN, err := r.ReadAt(got, off)
	if err != nil && err != io.EOF {
		return fmt.Errorf("ReadAt(%d bytes at %d): %w", n, off, err)
	}
	if gotN != wantN || (err == io.EOF) != wantEOF {
		return fmt.Errorf("ReadAt(%d bytes at %d) = %d, %v; want %d bytes, EOF %v", n, off, gotN, err, wantN, wantEOF)
	}
	if wantN > 0 && !bytes.Equal(got[:gotN], content[off:off+int64(wantN)]) {
		return fmt.Errorf("ReadAt(%d bytes at %d): wrong bytes", n, off)
	}
	return nil
}
