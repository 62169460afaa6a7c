package lab

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestGeneratorContent(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	ratio := func(p []byte) float64 { return float64(len(p)) / float64(len(enc.EncodeAll(p, nil))) }

	g := newGenerator("fill", 3)
	ks := make([]byte, slotSize+64)
	random, compressible := make([]byte, slotSize), make([]byte, slotSize)
	g.random(random, 0)
	g.compressible(compressible, ks, 0)

	if r := ratio(random); r > 1.01 {
		t.Errorf("random data compresses %.2fx", r)
	}
	if r := ratio(compressible); r < 2 || r > 4 {
		t.Errorf("compressible data compresses %.2fx with zstd fastest, want 2-4x (like binaries)", r)
	}

	// Deterministic per (seed, stream), different across streams and seeds.
	again := make([]byte, slotSize)
	newGenerator("fill", 3).compressible(again, ks, 0)
	if !bytes.Equal(again, compressible) {
		t.Error("same seed and stream gave different compressible bytes")
	}
	newGenerator("fill", 3).compressible(again, ks, uint64(slotSize))
	if bytes.Equal(again[:4096], compressible[:4096]) {
		t.Error("two streams start with the same bytes")
	}
	newGenerator("fill", 4).random(again, 0)
	if bytes.Equal(again[:4096], random[:4096]) {
		t.Error("two seeds give the same random bytes")
	}
	newGenerator("write", 3).random(again, 0)
	if bytes.Equal(again[:4096], random[:4096]) {
		t.Error("fill and write domains give the same random bytes")
	}
	// No 4 KiB block of either kind is all zeros (it would read like a hole).
	for _, p := range [][]byte{random, compressible} {
		for off := 0; off < len(p); off += 4096 {
			if bytes.Equal(p[off:off+4096], make([]byte, 4096)) {
				t.Fatalf("zero block at %d", off)
			}
		}
	}
}

func TestFillDisk(t *testing.T) {
	requireHoles(t)
	const capacity = 256 << 20
	tests := []struct {
		name      string
		d         diskPlan
		allocated []Extent
	}{
		{"zeros", diskPlan{capacity: capacity, fill: FillZeros}, nil},
		{"random part", diskPlan{capacity: capacity, fill: FillRandom, data: 10 << 20}, []Extent{{0, 10 << 20}}},
		{"compressible whole", diskPlan{capacity: capacity, fill: FillCompressible, data: capacity}, []Extent{{0, capacity}}},
		{"sparse", diskPlan{capacity: capacity, fill: FillSparse, data: 64 << 20, seed: 9}, sparseLayout(capacity, 64<<20, 9)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "disk-flat.vmdk")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := fillDisk(t.Context(), p, tt.d); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			if fi.Size() != capacity {
				t.Errorf("size %d, want %d", fi.Size(), capacity)
			}
			got, err := dataExtents(f, 0, capacity)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.allocated) {
				t.Errorf("allocated %v, want %v", got, tt.allocated)
			}
		})
	}
}

func TestSparseLayout(t *testing.T) {
	tests := []struct {
		name           string
		capacity, data int64
		extents        int
	}{
		{"demo disk", 102_000_230_400, 2 << 30, 64},
		{"one extent", 1 << 30, 16 << 20, 1},
		{"nearly full", 100 << 20, 99 << 20, 3},
		{"full", 64 << 20, 64 << 20, 1},
		{"empty", 64 << 20, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := sparseLayout(tt.capacity, tt.data, 1)
			if len(es) != tt.extents {
				t.Errorf("%d extents, want %d", len(es), tt.extents)
			}
			var total, end int64
			for i, e := range es {
				if e.Offset%mib != 0 || e.Length%mib != 0 || e.Offset < end || e.End() > tt.capacity {
					t.Fatalf("extent %d %+v: not MiB-aligned, overlapping or outside the disk", i, e)
				}
				total += e.Length
				end = e.End()
			}
			if total != tt.data {
				t.Errorf("%d bytes of data, want %d", total, tt.data)
			}
			if len(es) > 1 && es[0].Offset != 0 {
				t.Errorf("first extent at %d, want 0", es[0].Offset)
			}
			if len(es) > 8 && es[len(es)-1].Offset < tt.capacity/2 {
				t.Errorf("extents not spread: last at %d of %d", es[len(es)-1].Offset, tt.capacity)
			}
			if !reflect.DeepEqual(es, sparseLayout(tt.capacity, tt.data, 1)) {
				t.Error("layout not deterministic")
			}
		})
	}
}

func TestCopyDataKeepsHoles(t *testing.T) {
	requireHoles(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fillDisk(t.Context(), src, diskPlan{capacity: 128 << 20, fill: FillSparse, data: 8 << 20, seed: 5}); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(128 << 20); err != nil {
		t.Fatal(err)
	}
	if err := copyData(out, in, 128<<20); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(out.Name())
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs from the source")
	}
	srcAreas, _ := dataExtents(in, 0, 128<<20)
	dstAreas, _ := dataExtents(out, 0, 128<<20)
	if !reflect.DeepEqual(srcAreas, dstAreas) {
		t.Errorf("copy allocated %v, source %v", dstAreas, srcAreas)
	}
}

func TestMergeAndClipExtents(t *testing.T) {
	got := mergeExtents([]Extent{{10, 5}, {0, 4}, {4, 2}, {12, 10}, {30, 1}})
	want := []Extent{{0, 6}, {10, 12}, {30, 1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merge = %v, want %v", got, want)
	}
	if got := clipExtents(want, 5, 20); !reflect.DeepEqual(got, []Extent{{5, 1}, {10, 10}}) {
		t.Errorf("clip = %v", got)
	}
}

func BenchmarkGenerateRandom(b *testing.B) {
	g := newGenerator("fill", 1)
	p := make([]byte, slotSize)
	b.SetBytes(slotSize)
	for i := int64(0); b.Loop(); i++ {
		g.random(p, uint64(i*slotSize))
	}
}

func BenchmarkGenerateCompressible(b *testing.B) {
	g := newGenerator("fill", 1)
	p := make([]byte, slotSize)
	ks := make([]byte, slotSize+64)
	b.SetBytes(slotSize)
	for i := int64(0); b.Loop(); i++ {
		g.compressible(p, ks, uint64(i*slotSize))
	}
}

// BenchmarkFillSparse fills 512 MiB spread over a 20 GiB disk, as the demo's big disk (in small).
func BenchmarkFillSparse(b *testing.B) {
	d := diskPlan{capacity: 20 << 30, fill: FillSparse, data: 512 << 20, seed: 1}
	p := filepath.Join(b.TempDir(), "disk-flat.vmdk")
	b.SetBytes(d.data)
	for b.Loop() {
		b.StopTimer()
		if err := os.WriteFile(p, nil, 0o600); err != nil { // a fresh, empty file
			b.Fatal(err)
		}
		b.StartTimer()
		if err := fillDisk(b.Context(), p, d); err != nil {
			b.Fatal(err)
		}
	}
}
