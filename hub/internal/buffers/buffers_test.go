package buffers

import (
	"runtime"
	"testing"
	"time"
	"unsafe"
)

func same(a, b []byte) bool { return unsafe.SliceData(a) == unsafe.SliceData(b) }

// A buffer put back is handed out again after garbage collections, which empty a sync.Pool.
func TestKeepsBuffersAcrossCollections(t *testing.T) {
	l := New(4, time.Hour)
	b := l.Get(4 << 20)
	if len(b) != 4<<20 {
		t.Fatalf("Get(4 MiB) returned %d bytes", len(b))
	}
	l.Put(b)
	runtime.GC()
	runtime.GC()
	c := l.Get(4<<20 - 100)
	if !same(b, c) || len(c) != 4<<20-100 {
		t.Fatalf("after two collections Get returned a new buffer (len %d), not the kept one", len(c))
	}
	// A kept buffer too small for the request stays kept; the request gets a new one.
	l.Put(c)
	d := l.Get(5 << 20)
	if same(c, d) || len(d) != 5<<20 || l.Len() != 1 {
		t.Fatalf("Get(5 MiB) with one 4 MiB buffer kept: len %d, same %v, %d kept", len(d), same(c, d), l.Len())
	}
}

// A kept buffer much larger than the request stays kept: a caller holds about what it asked
// for, never a 64 MiB buffer for a 4 MiB request.
func TestLargerBuffersAreNotHandedOut(t *testing.T) {
	l := New(4, time.Hour)
	big := l.Get(64 << 20)
	l.Put(big)
	small := l.Get(4 << 20)
	if same(big, small) || cap(small) != 4<<20 || l.Len() != 1 {
		t.Fatalf("Get(4 MiB) with a 64 MiB buffer kept: cap %d, same %v, %d kept", cap(small), same(big, small), l.Len())
	}
	// Up to an eighth larger is close enough.
	l.Put(small)
	if c := l.Get(4<<20 - 4<<20/9); !same(small, c) {
		t.Fatalf("Get of a ninth less than a kept 4 MiB buffer returned a new one")
	}
	if c := l.Get(64<<20 - 1); !same(big, c) {
		t.Fatalf("Get(64 MiB - 1) did not return the kept 64 MiB buffer")
	}
}

// The list keeps at most its bound, dropping the oldest, and drops what goes unused for idle.
func TestBoundAndIdle(t *testing.T) {
	l := New(2, time.Hour)
	a, b, c := l.Get(10), l.Get(10), l.Get(10)
	l.Put(a)
	l.Put(b)
	l.Put(c)
	if l.Len() != 2 {
		t.Fatalf("%d buffers kept, at most 2", l.Len())
	}
	if x, y := l.Get(10), l.Get(10); !same(x, c) || !same(y, b) {
		t.Fatal("the newest buffers were not the ones kept, or not handed out newest first")
	}
	// The idle trim, on a list of its own: one whose buffers could be trimmed between two
	// lines of the test would make the checks above depend on the machine's speed.
	l = New(2, 300*time.Millisecond)
	l.Put(a)
	for began := time.Now(); l.Len() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(began) > 5*time.Second {
			t.Fatalf("%d buffers still kept 5s after their last use (idle 300ms)", l.Len())
		}
	}
	// Kept again after the trim: the list still works.
	l.Put(a)
	if x := l.Get(10); !same(x, a) {
		t.Fatal("a buffer put after a trim was not kept")
	}
}
