package lab

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"testing"
)

func TestPercentExtents(t *testing.T) {
	tests := []struct {
		name     string
		capacity int64
		percent  float64
		writes   int
		length   int64
	}{
		{"1% of 1 GiB", 1 << 30, 1, 10, 1 << 20},
		{"1% of the demo disk", 102_000_230_400, 1, 973, 1 << 20},
		{"tiny", 1 << 20, 1, 1, 1 << 20},
		{"30% rewrites whole blocks", 1 << 30, 30, 77, 4 << 20},
		{"all", 64 << 20, 100, 16, 4 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := percentExtents(tt.capacity, tt.percent, 42)
			if len(es) != tt.writes {
				t.Fatalf("%d writes, want %d", len(es), tt.writes)
			}
			blocks := make(map[int64]bool)
			end := int64(0)
			for _, e := range es {
				if e.Length != min(tt.length, tt.capacity) || e.Offset < end || e.End() > tt.capacity {
					t.Fatalf("extent %+v: wrong length, unsorted, overlapping or outside", e)
				}
				b := e.Offset / slotSize
				if (e.End()-1)/slotSize != b || blocks[b] {
					t.Fatalf("extent %+v crosses a block or shares one", e)
				}
				blocks[b] = true
				end = e.End()
			}
			if tt.writes > 4 && es[len(es)-1].Offset < tt.capacity*3/4 {
				t.Errorf("writes not spread: last at %d of %d", es[len(es)-1].Offset, tt.capacity)
			}
			if !reflect.DeepEqual(es, percentExtents(tt.capacity, tt.percent, 42)) {
				t.Error("not deterministic")
			}
		})
	}
}

func TestWrites(t *testing.T) {
	requireHoles(t)
	spec := Spec{VMs: []VMSpec{{Name: "w", CBT: true, Disks: []DiskSpec{{Size: "1GiB"}, {Size: "5MiB"}}}}}
	l := startLab(t, spec, Options{})
	info, err := l.VM("w")
	if err != nil {
		t.Fatal(err)
	}
	flat := info.Disks[0].FlatPath

	es, err := l.WritePercent("w", "disk-2000", 1, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 10 {
		t.Fatalf("1%% of 1 GiB wrote %d extents, want 10", len(es))
	}
	f, err := os.Open(flat)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := dataExtents(f, 0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, es) {
		t.Errorf("allocated %v after writing %v", got, es)
	}
	buf := make([]byte, es[0].Length)
	if _, err := f.ReadAt(buf, es[0].Offset); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(buf[:4096], make([]byte, 4096)) {
		t.Error("written extent reads as zeros")
	}

	data := []byte("hello, backup")
	if err := l.Write("w", "2001", 5<<20-int64(len(data)), data); err != nil {
		t.Fatalf("write at the end of a disk addressed by key: %v", err)
	}
	tail := make([]byte, len(data))
	g, err := os.ReadFile(info.Disks[1].FlatPath)
	if err != nil {
		t.Fatal(err)
	}
	copy(tail, g[len(g)-len(data):])
	if !bytes.Equal(tail, data) {
		t.Errorf("disk ends with %q", tail)
	}

	errTests := []struct {
		name string
		err  error
		want error
	}{
		{"past the end", l.Write("w", "disk-2001", 5<<20-1, []byte("xy")), ErrOutOfRange},
		{"negative offset", l.Write("w", "disk-2001", -1, []byte("x")), ErrOutOfRange},
		{"unknown VM", l.Write("nope", "disk-2000", 0, []byte("x")), ErrVMNotFound},
		{"unknown disk", l.Write("w", "disk-2002", 0, []byte("x")), ErrDiskNotFound},
		{"bad disk ID", l.Write("w", "scsi0:0", 0, []byte("x")), ErrDiskNotFound},
		{"zero percent", errOf(l.WritePercent("w", "disk-2000", 0, 1)), ErrOutOfRange},
		{"over 100 percent", errOf(l.WritePercent("w", "disk-2000", 101, 1)), ErrOutOfRange},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("error %v, want %v", tt.err, tt.want)
			}
		})
	}
}

func errOf(_ []Extent, err error) error { return err }
