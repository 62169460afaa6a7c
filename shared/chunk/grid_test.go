package chunk

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestGrid(t *testing.T) {
	g := Grid{Capacity: 10<<20 + 512, ChunkSize: 4 << 20}
	if n := g.Slots(); n != 3 {
		t.Fatalf("slots = %d, want 3", n)
	}
	if l := g.Len(2); l != 2<<20+512 {
		t.Errorf("tail slot length = %d, want %d", l, 2<<20+512)
	}
	if l := g.Len(1); l != 4<<20 {
		t.Errorf("slot 1 length = %d", l)
	}
	if g.Zero(2) != ZeroDigest(2<<20+512) || g.Zero(0) != ZeroDigest(4<<20) {
		t.Error("zero digests do not follow slot lengths")
	}
	if g.Contains(3) || g.Contains(-1) || !g.Contains(2) {
		t.Error("Contains is wrong at the edges")
	}
	if got := g.All(); !slices.Equal(got, []int64{0, 1, 2}) {
		t.Errorf("All = %v", got)
	}
	for _, bad := range []Grid{{0, 4 << 20}, {-1, 4 << 20}, {10, 0}} {
		if bad.Slots() != 0 || len(bad.All()) != 0 || bad.ForExtents([]Extent{{0, 10}}) != nil {
			t.Errorf("%+v: an empty or invalid grid must have no slots", bad)
		}
	}
}

func TestGridForExtents(t *testing.T) {
	const mib = 1 << 20
	g := Grid{Capacity: 16 * mib, ChunkSize: 4 * mib}
	for _, tc := range []struct {
		name string
		in   []Extent
		want []int64
	}{
		{"none", nil, []int64{}},
		{"inside one slot", []Extent{{mib, 512}}, []int64{0}},
		{"across a boundary", []Extent{{4*mib - 1, 2}}, []int64{0, 1}},
		{"ends on a boundary", []Extent{{0, 4 * mib}}, []int64{0}},
		{"overlapping and unsorted", []Extent{{9 * mib, mib}, {0, 1}, {8 * mib, 2 * mib}}, []int64{0, 2}},
		{"clipped at the end", []Extent{{15 * mib, 10 * mib}, {20 * mib, 1}}, []int64{3}},
		{"empty and negative lengths", []Extent{{0, 0}, {mib, -5}}, []int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := g.ForExtents(tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("ForExtents(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// ForExtents lists each slot any extent touches once, ascending, whatever the extents' order and
// overlaps: checked against a set on random extents.
func TestGridForExtentsMatchesASet(t *testing.T) {
	g := Grid{Capacity: 1000, ChunkSize: 64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var in []Extent
		set := map[int64]bool{}
		for range r.IntN(6) {
			e := Extent{Offset: r.Int64N(1100) - 50, Length: r.Int64N(300) - 20}
			in = append(in, e)
			if e.Length > 0 && e.Offset < g.Capacity {
				for s := max(e.Offset, 0) / 64; s <= min((e.Offset+e.Length-1)/64, g.Slots()-1); s++ {
					set[s] = true
				}
			}
		}
		if r.IntN(2) == 0 {
			slices.SortFunc(in, func(a, b Extent) int { return int(a.Offset - b.Offset) })
		}
		var want []int64
		for s := range set {
			want = append(want, s)
		}
		slices.Sort(want)
		if got := g.ForExtents(in); !slices.Equal(got, want) {
			t.Fatalf("ForExtents(%v) = %v, want %v", in, got, want)
		}
	}
}
