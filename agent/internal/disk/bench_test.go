package disk

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

const (
	benchImageSize = 256 << 20
	benchSlot      = 4 << 20
)

// writeRandomImage writes a fully allocated image of random bytes (hot in the page cache
// afterwards, like the peer figures' "hot" runs).
func writeRandomImage(b *testing.B, size int64) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	src := rand.NewChaCha8([32]byte{42})
	buf := make([]byte, benchSlot)
	for off := int64(0); off < size; off += benchSlot {
		_, _ = src.Read(buf)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	return path
}

// benchSequential reads 4 MiB slots in order, wrapping around; b.SetBytes makes MB/s.
func benchSequential(b *testing.B, r Reader) {
	buf := make([]byte, benchSlot)
	b.SetBytes(benchSlot)
	off := int64(0)
	for b.Loop() {
		if _, err := r.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off += benchSlot
		if off >= r.Size() {
			off = 0
		}
	}
}

// benchParallel reads 4 MiB slots from 4 goroutines through one Reader, as the pipeline does.
func benchParallel(b *testing.B, r Reader) {
	b.SetBytes(benchSlot)
	b.SetParallelism(max(1, 4/runtime.GOMAXPROCS(0))) // about 4 goroutines
	var next atomic.Int64
	slots := r.Size() / benchSlot
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, benchSlot)
		for pb.Next() {
			off := (next.Add(1) % slots) * benchSlot
			if _, err := r.ReadAt(buf, off); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRead compares the transports on one hot 256 MiB image: 4 MiB ReadAt calls, in
// order from one goroutine and from four. "nbdcopy" is libnbd's copier against the same
// nbdkit, the peer figure to compare the NBD client with (whole image per iteration).
func BenchmarkRead(b *testing.B) {
	requireNBDKit(b)
	path := writeRandomImage(b, benchImageSize)
	ctx := context.Background()

	file, err := OpenFile(path)
	if err != nil {
		b.Fatal(err)
	}
	defer file.Close()

	dir, err := os.MkdirTemp("", "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	kit, err := StartNBDKit(ctx, NBDKitOptions{Plugin: "file", Args: []string{"file=" + path}, Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer kit.Close()
	nbdr, err := kit.Open(ctx)
	if err != nil {
		b.Fatal(err)
	}

	img, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer img.Close()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A SectionReader per request: ServeContent seeks, and requests run concurrently.
		http.ServeContent(w, r, "disk", time.Time{}, io.NewSectionReader(img, 0, benchImageSize))
	}))
	defer srv.Close()
	httpr, err := OpenHTTP(ctx, srv.Client(), srv.URL, 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer httpr.Close()

	for _, tc := range []struct {
		name string
		r    Reader
	}{{"file", file}, {"nbd", nbdr}, {"https", httpr}} {
		b.Run(tc.name+"/sequential", func(b *testing.B) { benchSequential(b, tc.r) })
		b.Run(tc.name+"/4-goroutines", func(b *testing.B) { benchParallel(b, tc.r) })
	}

	b.Run("nbdcopy", func(b *testing.B) {
		bin, err := exec.LookPath("nbdcopy")
		if err != nil {
			b.Skip("nbdcopy not found: apt-get install libnbd-bin")
		}
		b.SetBytes(benchImageSize)
		for b.Loop() {
			out, err := exec.Command(bin, "nbd+unix:///?socket="+kit.Socket(), "null:").CombinedOutput()
			if err != nil {
				b.Fatalf("nbdcopy: %v: %s", err, out)
			}
		}
	})
}
