package backup

import (
	"slices"
	"testing"
)

func TestWithoutDone(t *testing.T) {
	slots := []int64{0, 1, 2, 3, 5, 8, 9, 10}
	for _, tt := range []struct {
		name string
		done [][2]int64
		want []int64
	}{
		{"nothing done", nil, slots},
		{"empty list", [][2]int64{}, slots},
		{"one range", [][2]int64{{1, 3}}, []int64{0, 3, 5, 8, 9, 10}},
		{"end is exclusive", [][2]int64{{0, 1}}, []int64{1, 2, 3, 5, 8, 9, 10}},
		{"empty range", [][2]int64{{3, 3}}, slots},
		{"inverted range", [][2]int64{{9, 2}}, slots},
		{"range over a gap in slots", [][2]int64{{4, 8}}, []int64{0, 1, 2, 3, 8, 9, 10}},
		{"range past the last slot", [][2]int64{{9, 100}}, []int64{0, 1, 2, 3, 5, 8}},
		{"range before the first slot", [][2]int64{{-5, 0}}, slots},
		{"everything", [][2]int64{{0, 11}}, nil},
		{"several sorted", [][2]int64{{0, 1}, {2, 4}, {8, 9}}, []int64{1, 5, 9, 10}},
		{"unsorted", [][2]int64{{8, 9}, {0, 1}, {2, 4}}, []int64{1, 5, 9, 10}},
		{"overlapping", [][2]int64{{0, 3}, {1, 6}}, []int64{8, 9, 10}},
		{"nested", [][2]int64{{0, 10}, {2, 3}}, []int64{10}},
		{"nested unsorted", [][2]int64{{2, 3}, {0, 10}}, []int64{10}},
		{"adjacent", [][2]int64{{0, 2}, {2, 4}}, []int64{5, 8, 9, 10}},
		{"duplicate", [][2]int64{{5, 6}, {5, 6}}, []int64{0, 1, 2, 3, 8, 9, 10}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done := slices.Clone(tt.done)
			in := slices.Clone(slots)
			got := withoutDone(in, done)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("withoutDone(%v, %v) = %v, want %v", slots, tt.done, got, tt.want)
			}
			if !slices.Equal(in, slots) || !slices.Equal(done, tt.done) {
				t.Fatal("withoutDone changed its arguments")
			}
		})
	}
	if got := withoutDone(nil, [][2]int64{{0, 5}}); len(got) != 0 {
		t.Fatalf("no slots: got %v", got)
	}
}
