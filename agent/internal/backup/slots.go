package backup

import (
	"cmp"
	"slices"
)

// withoutDone removes from slots (ascending) those inside the half-open ranges the hub reports
// as already recorded. The ranges may come in any order and may overlap: the API does not
// promise either, and a slot skipped wrongly would be a hole in the backup.
func withoutDone(slots []int64, done [][2]int64) []int64 {
	if len(done) == 0 {
		return slots
	}
	byStart := func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) }
	if !slices.IsSortedFunc(done, byStart) {
		done = slices.SortedFunc(slices.Values(done), byStart)
	}
	out := slots[:0:0]
	j := 0
	for _, s := range slots {
		// Ranges ending at or before s cannot hold s or any later slot. Sorted by start, the
		// first range ending after s is the only one that can hold it: every later range starts
		// at or after it.
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
