package backup

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
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

// parentHub answers Check from a parent's digests and notes how much of the upload pool is in
// use while the agent waits for the answer.
type parentHub struct {
	*fakeHub
	parent map[int64]string
	pool   *BufferPool
	inUse  []int64
	got    []api.SlotDigest
}

func (h *parentHub) Check(_ context.Context, _ string, req api.CheckRequest) (api.CheckResult, error) {
	h.inUse = append(h.inUse, h.pool.InUse())
	h.got = append(h.got, req.Slots...)
	var res api.CheckResult
	for _, sd := range req.Slots {
		if h.parent[sd.Slot] != sd.Digest {
			res.Mismatched = append(res.Mismatched, sd.Slot)
		}
	}
	return res, nil
}

// The CBT sample is read into a buffer of the upload pool and reports the sampled slots whose
// content differs from the parent's. A buffer outside the pool would be memory beyond the
// budget the agent's memory limit is set from (one slot more per disk being backed up).
func TestCheckSampleReadsIntoThePool(t *testing.T) {
	const cs = 64 << 10
	g := chunk.Grid{Capacity: 6*cs - 100, ChunkSize: cs} // the last slot is short
	data := make([]byte, g.Capacity)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := cs; i < len(data); i++ { // slot 0 stays zero
		data[i] = byte(rng.Uint32())
	}
	parent := map[int64]string{}
	for s := range g.Slots() {
		p := data[s*cs : min((s+1)*cs, g.Capacity)]
		if s == 0 {
			parent[s] = chunk.ZeroDigest(len(p)).String()
		} else {
			parent[s] = chunk.Sum(p).String()
		}
	}
	parent[3] = chunk.Sum([]byte("what the parent held")).String()
	size := chunk.HeaderSize + cs
	pool := newBufferPool(int64(size), 1) // room for one slot buffer
	r := NewRunner(nil, nil, slog.New(slog.DiscardHandler), nil, RunnerOptions{Upload: UploadOptions{Pool: pool}})
	hub := &parentHub{fakeHub: newFakeHub(), parent: parent, pool: pool}
	drift, err := r.checkSample(t.Context(), hub, "session", memDisk(data), g, []int64{0, 2, 3, 5})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(drift, []int64{3}) {
		t.Fatalf("drifted slots %v, want [3]", drift)
	}
	if len(hub.got) != 4 || hub.got[0].Digest != parent[0] || hub.got[3].Digest != parent[5] {
		t.Fatalf("sent %+v: want slot 0 as zero and slot 5 (short) by its digest", hub.got)
	}
	if !slices.Equal(hub.inUse, []int64{int64(size)}) {
		t.Fatalf("pool bytes in use while checking: %v, want the one slot buffer (%d)", hub.inUse, size)
	}
	if n := pool.InUse(); n != 0 {
		t.Fatalf("%d bytes of the pool still in use after the check", n)
	}
}
