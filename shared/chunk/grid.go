package chunk

import "sort"

// Grid is the slot grid of one disk: the disk is cut into slots of ChunkSize bytes from offset
// 0, the last one shorter when Capacity is not a multiple of ChunkSize. Agent and hub both cut
// disks with it, so they always agree on which bytes a slot holds.
type Grid struct {
	Capacity  int64 // disk size in bytes
	ChunkSize int64 // slot size in bytes
}

// Slots returns the number of slots, ceil(Capacity / ChunkSize); 0 for an empty or invalid grid.
func (g Grid) Slots() int64 {
	if g.ChunkSize <= 0 || g.Capacity <= 0 {
		return 0
	}
	return (g.Capacity-1)/g.ChunkSize + 1
}

// Offset returns the disk offset of slot i.
func (g Grid) Offset(i int64) int64 { return i * g.ChunkSize }

// Len returns the length of slot i: ChunkSize, except for the short tail slot. The caller keeps
// i within 0..Slots()-1.
func (g Grid) Len(i int64) int64 { return min(g.ChunkSize, g.Capacity-g.Offset(i)) }

// Zero returns the digest of slot i when it holds only zeros.
func (g Grid) Zero(i int64) Digest { return ZeroDigest(int(g.Len(i))) }

// Contains reports whether i names a slot of the grid.
func (g Grid) Contains(i int64) bool { return i >= 0 && i < g.Slots() }

// All lists every slot: a backup without usable change tracking reads them all.
func (g Grid) All() []int64 {
	out := make([]int64, g.Slots())
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

// Extent is a byte range of a disk.
type Extent struct {
	Offset, Length int64
}

// ForExtents maps byte ranges onto the grid: every slot any extent touches, ascending, each
// once. Ranges beyond the capacity are clipped.
func (g Grid) ForExtents(extents []Extent) []int64 {
	n := g.Slots()
	if n == 0 {
		return nil
	}
	set := make(map[int64]struct{})
	for _, e := range extents {
		if e.Length <= 0 || e.Offset >= g.Capacity {
			continue
		}
		first := max(e.Offset, 0) / g.ChunkSize
		end := min((e.Offset+e.Length-1)/g.ChunkSize, n-1)
		for s := first; s <= end; s++ {
			set[s] = struct{}{}
		}
	}
	out := make([]int64, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
