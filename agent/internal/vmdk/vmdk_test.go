package vmdk

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sendense/sendense/shared/testenv"
)

func qemuImg(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("qemu-img")
	if err != nil {
		testenv.Skip(t, "qemu-img not found in PATH: apt-get install qemu-utils (make test installs it)")
	}
	return p
}

// image is a disk image: random bytes in the given [offset, length) runs, zeros elsewhere.
func image(size int64, runs ...[2]int64) []byte {
	b := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{byte(size), byte(len(runs))})
	for _, r := range runs {
		_, _ = rng.Read(b[r[0] : r[0]+r[1]])
	}
	return b
}

var cases = []struct {
	name string
	data []byte
}{
	// Zero runs of whole grain tables between data, a run across a table's edge, and a short
	// tail: 100 MiB + 5 grains + 3 sectors, not a multiple of the grain.
	{"zero runs and a short tail", image(100<<20+5*GrainSize+1536,
		[2]int64{0, 4096},                                   // first grain, mostly zeros
		[2]int64{gtCoverage - 100, 200},                     // across the first table's edge
		[2]int64{3*gtCoverage + 7*GrainSize, 300000},        // after two empty tables, several grains
		[2]int64{100<<20 + 5*GrainSize + 1536 - 700, 700})}, // the last bytes
	{"all zeros", image(10 << 20)},
	{"incompressible", image(3*GrainSize+512, [2]int64{0, 3*GrainSize + 512})},
	{"one sector", image(512, [2]int64{100, 1})},
}

// The stream Write produces is read back by qemu-img, an outside reader, as exactly the input
// bytes, and qemu-img check finds nothing wrong with it.
func TestWriteReadByQemu(t *testing.T) {
	bin := qemuImg(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "disk.vmdk")
			f, err := os.Create(src)
			if err != nil {
				t.Fatal(err)
			}
			st, err := Write(t.Context(), f, bytes.NewReader(tc.data), int64(len(tc.data)), Options{})
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(src)
			if st.StreamSize != fi.Size() {
				t.Fatalf("stats say %d bytes, the file has %d", st.StreamSize, fi.Size())
			}
			nonzero := nonZeroGrains(tc.data)
			if st.DataGrains != nonzero {
				t.Fatalf("%d data grains, the image has %d non-zero grains", st.DataGrains, nonzero)
			}
			out := filepath.Join(dir, "out.raw")
			if b, err := exec.Command(bin, "convert", "-f", "vmdk", "-O", "raw", src, out).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img convert: %v\n%s", err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("qemu-img reads %d bytes differing from the %d written (first difference at %d)", len(got), len(tc.data), firstDiff(got, tc.data))
			}
			if b, err := exec.Command(bin, "check", "-f", "vmdk", src).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img check: %v\n%s", err, b)
			}
			info, err := exec.Command(bin, "info", "-f", "vmdk", src).CombinedOutput()
			if err != nil || !strings.Contains(string(info), "create type: streamOptimized") || !strings.Contains(string(info), "compressed: true") {
				t.Fatalf("qemu-img info: %v\n%s", err, info)
			}
			// Our own reader agrees, and writes only the non-zero grains.
			w := &sparseBuf{b: make([]byte, len(tc.data))}
			r, err := NewReader(bytes.NewReader(mustRead(t, src)))
			if err != nil {
				t.Fatal(err)
			}
			rs, err := r.WriteTo(w)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(w.b, tc.data) || rs.DataGrains != nonzero || rs.StreamSize != st.StreamSize {
				t.Fatalf("reader: %+v, equal %v; want %d grains of a %d-byte stream", rs, bytes.Equal(w.b, tc.data), nonzero, st.StreamSize)
			}
		})
	}
}

// Reader decodes a stream-optimized VMDK that qemu-img wrote, an outside writer.
func TestReadQemuStream(t *testing.T) {
	bin := qemuImg(t)
	data := cases[0].data
	dir := t.TempDir()
	raw, vmdk := filepath.Join(dir, "in.raw"), filepath.Join(dir, "in.vmdk")
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(bin, "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, vmdk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, b)
	}
	r, err := NewReader(bytes.NewReader(mustRead(t, vmdk)))
	if err != nil {
		t.Fatal(err)
	}
	if r.Capacity() != int64(len(data)) {
		t.Fatalf("capacity %d, want %d", r.Capacity(), len(data))
	}
	w := &sparseBuf{b: make([]byte, len(data))}
	if _, err := r.WriteTo(w); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.b, data) {
		t.Fatalf("decoded image differs at %d", firstDiff(w.b, data))
	}
}

// A short image, a bad capacity and a truncated stream are errors, never a short disk.
func TestErrors(t *testing.T) {
	data := cases[0].data
	if _, err := Write(t.Context(), io.Discard, bytes.NewReader(data[:len(data)-1]), int64(len(data)), Options{}); !errors.Is(err, ErrShortImage) {
		t.Fatalf("short image: %v", err)
	}
	for _, c := range []int64{0, -512, 1000, MaxCapacity + 512} {
		if _, err := Write(t.Context(), io.Discard, bytes.NewReader(nil), c, Options{}); !errors.Is(err, ErrCapacity) {
			t.Fatalf("capacity %d: %v", c, err)
		}
	}
	var buf bytes.Buffer
	if _, err := Write(t.Context(), &buf, bytes.NewReader(data), int64(len(data)), Options{}); err != nil {
		t.Fatal(err)
	}
	stream := buf.Bytes()
	for _, cut := range []int{0, 100, SectorSize + 3, len(stream) / 2, len(stream) - SectorSize} {
		r, err := NewReader(bytes.NewReader(stream[:cut]))
		if err == nil {
			_, err = r.WriteTo(&sparseBuf{b: make([]byte, len(data))})
		}
		if !errors.Is(err, ErrFormat) {
			t.Fatalf("stream cut at %d: %v", cut, err)
		}
	}
	bad := bytes.Clone(stream)
	bad[75] = '\n' // a transfer that rewrote "\r\n"
	if _, err := NewReader(bytes.NewReader(bad)); !errors.Is(err, ErrFormat) {
		t.Fatalf("mangled line ends: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Write(ctx, io.Discard, bytes.NewReader(data), int64(len(data)), Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func BenchmarkWrite(b *testing.B) {
	// 64 MiB: a quarter random, a quarter text-like, half zeros.
	data := image(64<<20, [2]int64{0, 16 << 20})
	for i := 32 << 20; i < 48<<20; i++ {
		data[i] = "sendense backup "[i%16]
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Write(b.Context(), io.Discard, bytes.NewReader(data), int64(len(data)), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

type sparseBuf struct{ b []byte }

func (s *sparseBuf) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(s.b)) {
		return 0, errors.New("write beyond the disk")
	}
	return copy(s.b[off:], p), nil
}

func nonZeroGrains(b []byte) int64 {
	var n int64
	for off := 0; off < len(b); off += GrainSize {
		if !isZero(b[off:min(off+GrainSize, len(b))]) {
			n++
		}
	}
	return n
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
