package machinelimit

import (
	"context"
	"crypto/rand"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Combine adds the CPU time of every stage and spreads it over the cores.
func TestCombine(t *testing.T) {
	stages := []Stage{
		{Name: "a", Rate: 100, Bytes: 300}, // 3 s
		{Name: "b", Rate: 50, Bytes: 50},   // 1 s
		{Name: "c", Rate: 0, Bytes: 10},    // not measured: no cost
	}
	l := Combine(stages, 2, 1000)
	if l.Seconds != 2 || l.Rate != 500 || l.Cores != 2 {
		t.Fatalf("Combine = %+v, want 2 s and 500 B/s over 2 cores", l)
	}
	if l := Combine(stages, 0, 1000); l.Seconds != 4 {
		t.Fatalf("zero cores count as one: %v s", l.Seconds)
	}
}

// Measure on a small image: every stage gets a positive rate and the bytes the image puts
// through it, and the limit is their combination.
func TestMeasure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	data := make([]byte, 8<<20)
	if _, err := rand.Read(data[:4<<20]); err != nil {
		t.Fatal(err)
	}
	copy(data[4<<20:], strings.Repeat("compressible text of a disk image ", (4<<20)/34+1))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Measure(context.Background(), Image{Path: path, Size: 12 << 20, Data: 8 << 20, CompressibleOffset: 4 << 20, CompressibleLength: 4 << 20, SampleBytes: 16 << 20, ChunkSize: 1 << 20}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Stages) != 6 {
		t.Fatalf("%d stages", len(l.Stages))
	}
	var cpu float64
	for _, s := range l.Stages {
		if s.Rate <= 0 || math.IsInf(s.Rate, 0) {
			t.Fatalf("stage %s: rate %v", s.Name, s.Rate)
		}
		want := int64(8 << 20)
		if strings.Contains(s.Name, "zstd") {
			want = 4 << 20
		}
		if s.Bytes != want {
			t.Fatalf("stage %s: %d bytes, want %d", s.Name, s.Bytes, want)
		}
		cpu += s.Seconds()
	}
	if math.Abs(l.Seconds-cpu/2) > 1e-9 || math.Abs(l.Rate-float64(12<<20)/l.Seconds) > 1e-3 {
		t.Fatalf("limit %+v does not combine its stages", l)
	}
	if _, err := Measure(context.Background(), Image{Path: filepath.Join(t.TempDir(), "missing")}, 2); err == nil {
		t.Fatal("a missing image measured")
	}
}
