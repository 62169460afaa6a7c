// Package buffers keeps large byte buffers (chunks, a few MiB each) for reuse across garbage
// collections.
//
// A sync.Pool drops what it holds within two garbage collections. The hub's working set is
// mostly chunk buffers, so after a collection the buffers of the uploads in progress were
// allocated anew and the heap grew towards the collector's goal, twice what the uploads hold
// (measured with 32 uploads in flight: 110 MB live after the last collection, 248 MiB
// resident). A List keeps up to a fixed number of buffers until they have gone unused for a
// while, so the heap stays near what is in use and an idle hub still gives them back.
package buffers

import (
	"slices"
	"sync"
	"time"
)

// DefaultIdle is how long a kept buffer may go unused before a List drops it.
const DefaultIdle = time.Minute

// List is a free list of byte buffers. It is safe for concurrent use; the zero value is not.
type List struct {
	keep int
	idle time.Duration

	mu    sync.Mutex
	free  []kept // oldest first
	timer *time.Timer
}

type kept struct {
	b   []byte
	put time.Time
}

// New returns a list that keeps up to keep buffers, each until it has gone unused for idle
// (DefaultIdle when 0).
func New(keep int, idle time.Duration) *List {
	if idle <= 0 {
		idle = DefaultIdle
	}
	return &List{keep: keep, idle: idle}
}

// Get returns a buffer of length n: the most recently kept one large enough and at most an
// eighth larger, or a new one. A much larger buffer is not handed out: what a caller holds stays
// near what it asked for, so memory counted by request sizes (the hub's upload memory, shared by
// repositories of different chunk sizes) is the memory held.
func (l *List) Get(n int) []byte {
	l.mu.Lock()
	for i := len(l.free) - 1; i >= 0; i-- {
		if b := l.free[i].b; cap(b) >= n && cap(b)-n <= n/8 {
			l.free = slices.Delete(l.free, i, i+1)
			l.mu.Unlock()
			return b[:n]
		}
	}
	l.mu.Unlock()
	return make([]byte, n)
}

// Put keeps b for a later Get, unless the list already keeps as many as it may: then the
// oldest kept buffer is dropped in its favour. b must not be used after Put.
func (l *List) Put(b []byte) {
	if cap(b) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) >= l.keep {
		if l.keep == 0 {
			return
		}
		l.free = slices.Delete(l.free, 0, 1)
	}
	l.free = append(l.free, kept{b: b[:cap(b)], put: time.Now()})
	if l.timer == nil {
		l.timer = time.AfterFunc(l.idle, l.trim)
	}
}

// Len reports how many buffers the list keeps.
func (l *List) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.free)
}

// trim drops the buffers unused for idle and runs again while the list keeps any.
func (l *List) trim() {
	l.mu.Lock()
	defer l.mu.Unlock()
	cutoff := time.Now().Add(-l.idle)
	i := 0
	for i < len(l.free) && !l.free[i].put.After(cutoff) {
		i++
	}
	l.free = slices.Delete(l.free, 0, i)
	l.timer = nil
	if len(l.free) > 0 {
		l.timer = time.AfterFunc(time.Until(l.free[0].put.Add(l.idle)), l.trim)
	}
}
