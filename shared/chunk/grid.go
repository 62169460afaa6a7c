package chunk

import "slices"

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
// once. Ranges beyond the capacity are clipped. It takes one int64 per slot listed (and no more
// while the extents are sorted and do not overlap, as change tracking reports them).
func (g Grid) ForExtents(extents []Extent) []int64 {
	n := g.Slots()
	if n == 0 {
		return nil
	}
	span := func(e Extent) (first, end int64, ok bool) {
		if e.Length <= 0 || e.Offset >= g.Capacity {
			return 0, 0, false
		}
		return max(e.Offset, 0) / g.ChunkSize, min((e.Offset+e.Length-1)/g.ChunkSize, n-1), true
	}
	size := int64(0)
	for _, e := range extents {
		if first, end, ok := span(e); ok {
			size += end - first + 1
		}
	}
	out := make([]int64, 0, min(size, n))
	last, sorted := int64(-1), true
	for _, e := range extents {
		first, end, ok := span(e)
		if !ok {
			continue
		}
		switch {
		case first > last:
		case first == last:
			first++ // the slot the previous extent ended in: listed already
		default:
			sorted = false // sorted and made unique below
		}
		for s := first; s <= end; s++ {
			out = append(out, s)
		}
		last = max(last, end)
	}
	if !sorted {
		slices.Sort(out)
		out = slices.Compact(out)
	}
	return out
}
