package ingest

import (
	"sync"
	"time"
)

// quiet counts work in flight and calls idle once none has been in flight for a while: after
// the last piece of work ends, if no other began during that while. A nil quiet counts nothing.
type quiet struct {
	after time.Duration
	idle  func()

	mu      sync.Mutex
	running int
	began   uint64 // pieces of work begun so far: a timer armed before one began is stale
	timer   *time.Timer
}

func newQuiet(after time.Duration, idle func()) *quiet {
	return &quiet{after: after, idle: idle}
}

func (q *quiet) begin() {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.running++
	q.began++
}

func (q *quiet) end() {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.running--; q.running > 0 {
		return
	}
	if q.timer != nil {
		q.timer.Stop()
	}
	began := q.began
	q.timer = time.AfterFunc(q.after, func() {
		q.mu.Lock()
		still := q.running == 0 && q.began == began
		q.mu.Unlock()
		if still {
			q.idle()
		}
	})
}
