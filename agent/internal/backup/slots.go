package backup

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
