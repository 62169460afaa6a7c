package backup

import (
	"slices"
	"testing"
)

func TestPickSample(t *testing.T) {
	for _, tc := range []struct {
		name     string
		total    int64
		changed  []int64
		fraction float64
		floor    int
		phase    float64
		want     []int64
	}{
		{"fraction of unchanged, spread evenly", 100, nil, 0.1, 2, 0, []int64{0, 10, 20, 30, 40, 50, 60, 70, 80, 90}},
		{"phase shifts the sample", 100, nil, 0.1, 2, 0.5, []int64{5, 15, 25, 35, 45, 55, 65, 75, 85, 95}},
		{"floor when the fraction is small", 100, nil, 0.001, 4, 0, []int64{0, 25, 50, 75}},
		{"zero fraction still checks the floor", 40, nil, 0, 4, 0.99, []int64{9, 19, 29, 39}},
		{"all when fewer than the floor", 10, []int64{1, 3, 5, 7, 9}, 0.01, 8, 0.3, []int64{0, 2, 4, 6, 8}},
		{"changed slots are skipped", 6, []int64{0, 1, 2}, 1, 1, 0, []int64{3, 4, 5}},
		{"nothing unchanged", 3, []int64{0, 1, 2}, 1, 8, 0, nil},
		{"whole disk", 5, nil, 1, 1, 0.9, []int64{0, 1, 2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pickSample(tc.total, tc.changed, tc.fraction, tc.floor, tc.phase)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("pickSample = %v, want %v", got, tc.want)
			}
		})
	}
}

// Every slot of a big disk with changes sprinkled in is sampled once, never a changed one, and
// different phases pick different slots.
func TestPickSampleProperties(t *testing.T) {
	const total = 10000
	var changed []int64
	for s := int64(3); s < total; s += 7 {
		changed = append(changed, s)
	}
	isChanged := map[int64]bool{}
	for _, s := range changed {
		isChanged[s] = true
	}
	unchanged := total - len(changed)
	a := pickSample(total, changed, 0.05, 8, 0.1)
	b := pickSample(total, changed, 0.05, 8, 0.7)
	if want := (unchanged*5 + 99) / 100; len(a) != want || len(b) != want {
		t.Fatalf("sampled %d and %d slots, want %d (5%% of %d)", len(a), len(b), want, unchanged)
	}
	for _, s := range a {
		if isChanged[s] || s < 0 || s >= total {
			t.Fatalf("sampled slot %d is changed or outside the disk", s)
		}
	}
	if !slices.IsSorted(a) || len(slices.Compact(slices.Clone(a))) != len(a) {
		t.Fatal("sample not ascending and unique")
	}
	// Spread: no gap between samples is more than twice the even step (20 unchanged slots,
	// about 23 slots of the disk).
	for i := 1; i < len(a); i++ {
		if a[i]-a[i-1] > 2*total/int64(len(a)) {
			t.Fatalf("gap of %d slots between samples %d and %d", a[i]-a[i-1], a[i-1], a[i])
		}
	}
	if slices.Equal(a, b) {
		t.Fatal("two phases picked the same slots")
	}
}
