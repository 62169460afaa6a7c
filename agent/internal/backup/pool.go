package backup

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/semaphore"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// BufferPool is the agent's one memory budget for disk data in flight: every upload of the
// process takes its slot buffers from it and gives them back once their chunk is acknowledged,
// known to the hub, or zero. It also holds the process's zstd encoders, whose memory (an
// encoder's history and its output buffer) is set aside from the budget when the pool is made.
//
// A caller takes all the buffers one item needs in one call (getGroup) and never asks for more
// while holding them, so uploads sharing the pool cannot deadlock on it. One more buffer, outside
// the budget, serves uploads repeated after their buffer went back (getRetry).
//
// The pool also counts the process's chunk uploads in flight (startUpload): a buffer goes back
// once its upload's body is read, before the hub answers, so the budget alone does not bound
// them, and a hub refuses an agent more than api.MaxUploadsPerAgent at once.
type BufferPool struct {
	budget   int64 // bytes for slot buffers, after the encoders' share
	sem      *semaphore.Weighted
	encoders chan *sealer
	uploads  *semaphore.Weighted // chunk uploads in flight, at most api.MaxUploadsPerAgent

	mu   sync.Mutex
	free [][]byte // returned buffers, all of length freeLen, reused before allocating
	// freeLen is the length of the buffers in free.
	freeLen int

	inUse, peak atomic.Int64 // bytes of slot buffers handed out, and the most at once
	allocated   atomic.Int64 // bytes of slot buffers ever allocated (reuse does not count)

	// retry is the one buffer, outside the budget, in which a chunk whose upload must be
	// repeated after its buffer went back is read again: one at a time for the process.
	retry chan []byte
}

// encoderShare is what one encoder is counted as: its history (about one default slot,
// measured) and its output buffer (one slot and a little).
const encoderShare = 2 * defaultChunkSize

// defaultChunkSize is a repository's default chunk size, the unit the encoders' share is counted in.
const defaultChunkSize = 4 << 20

// NewBufferPool returns a pool of budget bytes. One encoder per 40 MiB of budget is set aside
// (at least one, at most the number of CPUs or 4); the rest is for slot buffers.
func NewBufferPool(budget int64) *BufferPool {
	if budget <= 0 {
		budget = 80 << 20
	}
	n := int(max(1, min(budget/(40<<20), int64(min(runtime.GOMAXPROCS(0), 4)))))
	return newBufferPool(max(budget-int64(n)*encoderShare, chunk.HeaderSize+defaultChunkSize), n)
}

// newBufferPool returns a pool of slotBudget bytes for slot buffers and the given number of
// encoders.
func newBufferPool(slotBudget int64, encoders int) *BufferPool {
	p := &BufferPool{budget: slotBudget, sem: semaphore.NewWeighted(slotBudget), encoders: make(chan *sealer, encoders),
		uploads: semaphore.NewWeighted(api.MaxUploadsPerAgent), retry: make(chan []byte, 1)}
	p.retry <- nil // allocated when first needed
	for range encoders {
		p.encoders <- &sealer{}
	}
	return p
}

// startUpload waits until the process has fewer than api.MaxUploadsPerAgent chunk uploads in
// flight and counts one more until done is called.
func (p *BufferPool) startUpload(ctx context.Context) (done func(), err error) {
	if err := p.uploads.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	return func() { p.uploads.Release(1) }, nil
}

// Peak reports the most bytes of slot buffers handed out at once.
func (p *BufferPool) Peak() int64 { return p.peak.Load() }

// InUse reports the bytes of slot buffers handed out now.
func (p *BufferPool) InUse() int64 { return p.inUse.Load() }

// Budget reports the bytes for slot buffers (the budget without the encoders' share).
func (p *BufferPool) Budget() int64 { return p.budget }

// slotBuf is one buffer of a pool and the share of the budget it holds.
type slotBuf struct {
	b []byte
	w int64
}

// groupFit is how many buffers of size bytes getGroup hands out at once: want, or fewer when
// they would not fit the budget, at least one.
func (p *BufferPool) groupFit(want int, size int) int {
	return int(max(1, min(int64(want), p.budget/int64(size))))
}

// getGroup waits until n buffers of size bytes fit the budget and returns them, taken at once.
// A single buffer larger than the whole budget takes the whole budget.
func (p *BufferPool) getGroup(ctx context.Context, n, size int) ([]slotBuf, error) {
	w := int64(n) * int64(size)
	if w > p.budget {
		if n > 1 {
			return nil, fmt.Errorf("%d buffers of %d bytes exceed the upload memory budget of %d bytes", n, size, p.budget)
		}
		w = p.budget
	}
	if err := p.sem.Acquire(ctx, w); err != nil {
		return nil, err
	}
	cur := p.inUse.Add(w)
	for {
		pk := p.peak.Load()
		if cur <= pk || p.peak.CompareAndSwap(pk, cur) {
			break
		}
	}
	out := make([]slotBuf, n)
	p.mu.Lock()
	if p.freeLen != size {
		p.free, p.freeLen = nil, size // another chunk size: let the old buffers go
	}
	for i := range out {
		out[i].w = w / int64(n)
		if k := len(p.free); k > 0 {
			out[i].b, p.free = p.free[k-1], p.free[:k-1]
		}
	}
	p.mu.Unlock()
	out[0].w += w % int64(n)
	for i := range out {
		if out[i].b == nil {
			out[i].b = make([]byte, size)
			p.allocated.Add(int64(size))
		}
	}
	return out, nil
}

// put gives a buffer back.
func (p *BufferPool) put(sb slotBuf) {
	p.mu.Lock()
	if len(sb.b) == p.freeLen {
		p.free = append(p.free, sb.b)
	}
	p.mu.Unlock()
	p.inUse.Add(-sb.w)
	p.sem.Release(sb.w)
}

// sealer is one of the pool's encoders with its output buffer.
type sealer struct {
	enc *zstd.Encoder
	out []byte
	// sample holds the compressed samples of incompressible.
	sample []byte
}

// withSealer runs f with one of the pool's encoders, waiting for one to be free. An encoder is
// never held while waiting for anything else.
func (p *BufferPool) withSealer(ctx context.Context, f func(s *sealer) error) error {
	var s *sealer
	select {
	case s = <-p.encoders:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { p.encoders <- s }()
	if s.enc == nil {
		// No zstd frame checksum: the blob header carries a CRC-32C and the hub re-hashes the
		// plaintext with SHA-256 anyway. Lower memory keeps the encoder's history at about one
		// slot, as encoderShare counts it; by default it is twice that, at the same speed and
		// with the same output.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true))
		if err != nil {
			return fmt.Errorf("zstd encoder: %w", err)
		}
		s.enc = enc
	}
	return f(s)
}

// getRetry waits for the retry buffer and returns it, at least size bytes long.
func (p *BufferPool) getRetry(ctx context.Context, size int) (slotBuf, error) {
	select {
	case b := <-p.retry:
		if len(b) < size {
			b = make([]byte, size)
		}
		return slotBuf{b: b[:size]}, nil
	case <-ctx.Done():
		return slotBuf{}, ctx.Err()
	}
}

// putRetry gives the retry buffer back.
func (p *BufferPool) putRetry(sb slotBuf) { p.retry <- sb.b }
