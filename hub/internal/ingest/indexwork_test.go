package ingest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"
)

// Index-sized work stays within indexMemory for the whole hub: disks of ordinary size run side
// by side, one beyond the budget runs alone, and a request that waits gives up with its context.
func TestIndexWorkIsBounded(t *testing.T) {
	s := &Service{indexMem: semaphore.NewWeighted(indexMemory)}
	ctx := t.Context()
	// 64 requests on disks of 100,000 slots (400 GiB in 4 MiB chunks) fit at once.
	var releases []func()
	for range 64 {
		r, err := s.indexWork(ctx, 100_000)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	for _, r := range releases {
		r()
	}
	// A 64 TiB disk (16 million slots) takes the whole budget: nothing else runs beside it.
	huge, err := s.indexWork(ctx, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := s.indexWork(short, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("work beside a disk that takes the budget: %v, want to wait until the context ends", err)
	}
	got := make(chan error, 1)
	go func() {
		r, err := s.indexWork(ctx, 1)
		if err == nil {
			r()
		}
		got <- err
	}()
	huge()
	if err := <-got; err != nil {
		t.Fatalf("work once the large one ended: %v", err)
	}
}

// OnIndexMemory hears the index-sized work in progress as it starts and ends, in order.
func TestIndexWorkReportsItsMemory(t *testing.T) {
	var heard []int64
	s := &Service{indexMem: semaphore.NewWeighted(indexMemory), onIndexMemory: func(n int64) { heard = append(heard, n) }}
	r1, err := s.indexWork(t.Context(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.indexWork(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	r1()
	r2()
	want := []int64{1000 * indexBytesPerSlot, 1010 * indexBytesPerSlot, 10 * indexBytesPerSlot, 0}
	if !slices.Equal(heard, want) {
		t.Fatalf("heard %v, want %v", heard, want)
	}
}

// The known sets cached for sessions count in the reported memory while they are cached: put
// adds a set's estimate, replacing or evicting a set takes its estimate back, and so does drop.
func TestCachedKnownSetsCountInTheReportedMemory(t *testing.T) {
	var c knownCache
	var total int64
	cached := func() (sum int64) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, k := range c.sets {
			sum += k.est
		}
		return sum
	}
	for i := range maxKnownSessions + 10 {
		total += c.put(fmt.Sprintf("us-%d", i), &knownSet{est: int64(i+1) * knownBytesPerSlot})
		if total != cached() {
			t.Fatalf("after %d puts the deltas sum to %d, the cached sets hold %d", i+1, total, cached())
		}
	}
	if n := len(c.sets); n != maxKnownSessions {
		t.Fatalf("%d sets cached, want at most %d", n, maxKnownSessions)
	}
	last := fmt.Sprintf("us-%d", maxKnownSessions+9)
	total += c.put(last, &knownSet{est: 7})
	if total != cached() {
		t.Fatalf("after replacing a set the deltas sum to %d, the cached sets hold %d", total, cached())
	}
	d := c.drop(last)
	if d != -7 {
		t.Fatalf("drop of a cached set of 7 bytes: %d, want -7", d)
	}
	total += d
	if d := c.drop(last); d != 0 {
		t.Fatalf("drop of a set no longer cached: %d, want 0", d)
	}
	for id := range maps.Clone(c.sets) {
		total += c.drop(id)
	}
	if total != 0 {
		t.Fatalf("with every set dropped the deltas sum to %d, want 0", total)
	}
}
