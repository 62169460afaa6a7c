package lab

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4194304", 4194304, true},
		{"102GB", 102_000_000_000, true},
		{"5GiB", 5 << 30, true},
		{"1.5 GiB", 3 << 29, true},
		{"512MiB", 512 << 20, true},
		{"10kb", 10_000, true},
		{"2TiB", 2 << 40, true},
		{"7B", 7, true},
		{"1.5B", 0, false},
		{"GB", 0, false},
		{"5G", 0, false},
		{"-1GB", 0, false},
		{"", 0, false},
		{"99999999PiB", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestParseSpec(t *testing.T) {
	spec, err := ParseSpec([]byte(`
vms:
  - name: pg
    cbt: true
    disks:
      - size: 102GB
        fill: sparse
        data: 2GiB
      - {size: 5GB, fill: compressible, data: 512MiB}
      - {key: 2010, size: 1GiB, mode: independent_persistent, cbt_unsupported: true}
  - name: pg-clone
    clone_of: pg
`))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Datacenter != "DC0" {
		t.Errorf("datacenter %q, want the default DC0", spec.Datacenter)
	}
	plans, err := spec.plan(nil)
	if err != nil {
		t.Fatal(err)
	}
	pg := plans[0]
	want := []diskPlan{
		{key: 2000, capacity: 102_000_230_400, fill: FillSparse, data: 2 << 30, mode: ModePersistent},
		{key: 2001, capacity: 5_000_658_944, fill: FillCompressible, data: 512 << 20, mode: ModePersistent},
		{key: 2010, capacity: 1 << 30, fill: FillZeros, mode: ModeIndependentPersistent, cbtUnsupported: true},
	}
	for i, w := range want {
		got := pg.disks[i]
		got.seed = 0
		if got != w {
			t.Errorf("disk %d: %+v, want %+v", i, got, w)
		}
	}
	if pg.disks[0].seed == pg.disks[1].seed || pg.disks[0].seed == 0 {
		t.Errorf("default seeds %d, %d: want distinct, non-zero", pg.disks[0].seed, pg.disks[1].seed)
	}
	clone := plans[1]
	if clone.cloneOf != "pg" || len(clone.disks) != 3 || !clone.disks[0].cloned || clone.disks[0].capacity != 102_000_230_400 {
		t.Errorf("clone plan %+v", clone)
	}

	demo, err := DemoSpec().plan(nil)
	if err != nil || len(demo) != 1 || demo[0].disks[0].capacity != 102_000_230_400 || demo[0].disks[1].capacity != 5_000_658_944 {
		t.Errorf("demo spec plan %+v, %v", demo, err)
	}
	bulk, err := BulkSpec(3, 2, "1GiB", FillZeros).plan(nil)
	if err != nil || len(bulk) != 3 || bulk[2].name != "bench-0003" || len(bulk[2].disks) != 2 || bulk[2].disks[1].key != 2001 {
		t.Errorf("bulk spec plan %+v, %v", bulk, err)
	}
}

func TestParseSpecRejects(t *testing.T) {
	tests := []struct {
		name, yaml, why string
	}{
		{"unknown field", "vms: [{name: a, color: red}]", "color"},
		{"duplicate VM", "vms: [{name: a}, {name: a}]", "twice"},
		{"duplicate key", "vms: [{name: a, disks: [{key: 2000, size: 1MiB}, {key: 2000, size: 1MiB}]}]", "twice"},
		{"key out of range", "vms: [{name: a, disks: [{key: 100, size: 1MiB}]}]", "outside"},
		{"no size", "vms: [{name: a, disks: [{fill: random}]}]", "no size"},
		{"bad fill", "vms: [{name: a, disks: [{size: 1MiB, fill: glitter}]}]", "unknown fill"},
		{"bad mode", "vms: [{name: a, disks: [{size: 1MiB, mode: sticky}]}]", "unknown mode"},
		{"data larger than disk", "vms: [{name: a, disks: [{size: 1MiB, fill: random, data: 2MiB}]}]", "larger"},
		{"data with zeros", "vms: [{name: a, disks: [{size: 1MiB, data: 1MiB}]}]", "zeros"},
		{"clone of unknown", "vms: [{name: a, clone_of: b}]", "unknown VM"},
		{"clone cycle", "vms: [{name: a, clone_of: b}, {name: b, clone_of: a}]", "cycle"},
		{"cloned disk with fill", "vms: [{name: a, disks: [{size: 1MiB}]}, {name: b, clone_of: a, disks: [{size: 1MiB, fill: random}]}]", "cloned"},
		{"nameless VM", "vms: [{cbt: true}]", "no name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSpec([]byte(tt.yaml))
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("error %v, want ErrInvalidSpec mentioning %q", err, tt.why)
			}
		})
	}
}
