package backup

import "sort"

// Extent is a byte range of a disk.
type Extent struct {
	Offset, Length int64
}

// SlotsForExtents maps byte ranges onto the slot grid: every slot that any extent touches, in
// order, each once. Ranges beyond the capacity are clipped.
func SlotsForExtents(extents []Extent, capacity, chunkSize int64) []int64 {
	if capacity <= 0 || chunkSize <= 0 {
		return nil
	}
	last := (capacity - 1) / chunkSize
	set := make(map[int64]struct{})
	for _, e := range extents {
		if e.Length <= 0 || e.Offset >= capacity {
			continue
		}
		first := max(e.Offset, 0) / chunkSize
		end := min((e.Offset+e.Length-1)/chunkSize, last)
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

// AllSlots lists every slot of a disk: a backup without usable change tracking reads them all.
func AllSlots(capacity, chunkSize int64) []int64 {
	n := (capacity + chunkSize - 1) / chunkSize
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

// withoutDone removes the slots inside the half-open ranges already recorded by the hub.
func withoutDone(slots []int64, done [][2]int64) []int64 {
	if len(done) == 0 {
		return slots
	}
	out := slots[:0:0]
	j := 0
	for _, s := range slots {
		for j < len(done) && done[j][1] <= s {
			j++
		}
		if j < len(done) && done[j][0] <= s && s < done[j][1] {
			continue
		}
		out = append(out, s)
	}
	return out
}
