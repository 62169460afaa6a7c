package ingest

import (
	"sync/atomic"
	"testing"
	"time"
)

// Idle runs once, a while after the last work in flight ended, and not while work runs or when
// work began again within that while.
func TestQuietCallsIdleOnceWorkHasStopped(t *testing.T) {
	var calls atomic.Int32
	const after = 100 * time.Millisecond
	q := newQuiet(after, func() { calls.Add(1) })

	q.begin()
	q.begin()
	q.end()
	time.Sleep(3 * after)
	if n := calls.Load(); n != 0 {
		t.Fatalf("idle ran %d times while work was in flight", n)
	}
	q.end()
	q.begin() // work again before the while passed: the armed call is stale
	time.Sleep(3 * after)
	if n := calls.Load(); n != 0 {
		t.Fatalf("idle ran %d times although work began again within the while", n)
	}
	q.end()
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(after / 5)
	}
	time.Sleep(3 * after)
	if n := calls.Load(); n != 1 {
		t.Fatalf("idle ran %d times after the work stopped, want once", n)
	}
}
