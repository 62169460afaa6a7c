package nfsexport

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// slotCache is an io.ReaderAt over a restore point's image that reads whole slots (the unit
// the image reads, decompresses and verifies anyway) and keeps the last max of them. A guest
// reads 4 KiB to 1 MiB at a time: without it, every such read of a 4 MiB slot would read and
// verify the whole chunk again. Reads of one slot wait for one fetch; different slots are
// fetched in parallel (NFS requests are served concurrently); a read that ends in the second
// half of a slot fetches the next one ahead. A failed fetch is not kept: the next read tries
// again and fails again on a damaged chunk. Memory is bounded by (max+1) slots.
type slotCache struct {
	r    io.ReaderAt
	size int64
	slot int64
	max  int

	mu      sync.Mutex
	entries map[int64]*slotEntry
	tick    uint64
}

type slotEntry struct {
	ready chan struct{} // closed once data or err is set
	data  []byte
	err   error
	used  uint64
}

func newSlotCache(r io.ReaderAt, size, slot int64, max int) *slotCache {
	return &slotCache{r: r, size: size, slot: slot, max: max, entries: map[int64]*slotEntry{}}
}

// ReadAt reads len(p) bytes at off; io.EOF past the end.
func (c *slotCache) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	want, eof := p, error(nil)
	if rest := c.size - off; int64(len(p)) > rest {
		want, eof = p[:rest], io.EOF
	}
	// Every slot the read spans is asked for first, so that they are fetched in parallel.
	first, last := off/c.slot, (off+int64(len(want))-1)/c.slot
	entries := make([]*slotEntry, 0, last-first+1)
	for idx := first; idx <= last; idx++ {
		entries = append(entries, c.get(idx))
	}
	n := 0
	for i, e := range entries {
		<-e.ready
		if e.err != nil {
			return n, e.err
		}
		pos := off + int64(n)
		n += copy(want[n:], e.data[pos-(first+int64(i))*c.slot:])
	}
	end := off + int64(n)
	if idx := (end - 1) / c.slot; end-idx*c.slot > c.slot/2 && (idx+1)*c.slot < c.size {
		c.ahead(idx + 1)
	}
	return n, eof
}

// get returns the entry of slot idx, starting its fetch (in the background) when it is not
// cached.
func (c *slotCache) get(idx int64) *slotEntry {
	c.mu.Lock()
	c.tick++
	if e, ok := c.entries[idx]; ok {
		e.used = c.tick
		c.mu.Unlock()
		return e
	}
	e := &slotEntry{ready: make(chan struct{}), used: c.tick}
	c.evictLocked()
	c.entries[idx] = e
	c.mu.Unlock()
	go c.fetch(idx, e)
	return e
}

// ahead fetches slot idx in the background unless it is cached or being fetched.
func (c *slotCache) ahead(idx int64) {
	c.mu.Lock()
	if _, ok := c.entries[idx]; ok {
		c.mu.Unlock()
		return
	}
	c.tick++
	e := &slotEntry{ready: make(chan struct{}), used: c.tick}
	c.evictLocked()
	c.entries[idx] = e
	c.mu.Unlock()
	go c.fetch(idx, e)
}

func (c *slotCache) fetch(idx int64, e *slotEntry) {
	start := idx * c.slot
	buf := make([]byte, min(c.slot, c.size-start))
	if _, err := c.r.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		e.err = err
		c.mu.Lock()
		if c.entries[idx] == e {
			delete(c.entries, idx)
		}
		c.mu.Unlock()
	} else {
		e.data = buf
	}
	close(e.ready)
}

// evictLocked drops the least recently used fetched slot while the cache is full; slots being
// fetched stay (a reader waits on them).
func (c *slotCache) evictLocked() {
	for len(c.entries) >= c.max {
		var victim int64 = -1
		for k, e := range c.entries {
			select {
			case <-e.ready:
			default:
				continue
			}
			if victim < 0 || e.used < c.entries[victim].used {
				victim = k
			}
		}
		if victim < 0 {
			return // every entry is being fetched: let the cache grow by this one
		}
		delete(c.entries, victim)
	}
}
