package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// slowHub delays every call as a long round trip would, and fails PutChunk from its failAt-th
// call on when failAt is set.
type slowHub struct {
	*fakeHub
	delay  time.Duration
	mu     sync.Mutex
	puts   int
	failAt int
}

func (h *slowHub) RecordSlots(ctx context.Context, id string, b api.SlotBatch) (api.SlotBatchResult, error) {
	if err := sleepCtx(ctx, h.delay); err != nil {
		return api.SlotBatchResult{}, err
	}
	return h.fakeHub.RecordSlots(ctx, id, b)
}

func (h *slowHub) PutChunk(ctx context.Context, id, digest string, slots []int64, size int64, body func() (io.Reader, error)) (bool, error) {
	h.mu.Lock()
	h.puts++
	fail := h.failAt > 0 && h.puts >= h.failAt
	h.mu.Unlock()
	if err := sleepCtx(ctx, h.delay); err != nil {
		return false, err
	}
	if fail {
		return false, errors.New("the hub is gone")
	}
	return h.fakeHub.PutChunk(ctx, id, digest, slots, size, body)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// poolDisk is testCapacity bytes whose slots are random, compressible, zero, or a copy of an
// earlier slot (dedup within the disk), in a pattern set by seed.
func poolDisk(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	d := make([]byte, testCapacity)
	for s := 0; s*testChunk < len(d); s++ {
		p := d[s*testChunk : min((s+1)*testChunk, len(d))]
		switch s % 4 {
		case 0:
			for i := range p {
				p[i] = byte(r.Uint32())
			}
		case 1:
			copy(p, bytes.Repeat([]byte(fmt.Sprintf("line %d of a log\n", s)), len(p)/10))
		case 2: // zero
		case 3:
			if s >= 4 {
				copy(p, d[(s-3)*testChunk:])
			}
		}
	}
	return d
}

// Several uploads at once, sharing a budget of a few slot buffers, over a slow hub: every one
// finishes and records every slot with its bytes, the buffers handed out never exceed the
// budget (nor do the buffers ever allocated), and all of them come back to the pool.
func TestUploadsShareOneBudget(t *testing.T) {
	const uploads = 6
	size := chunk.HeaderSize + testChunk
	pool := newBufferPool(int64(5*size), 2) // one group of 4 and one more buffer
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, uploads)
	hubs := make([]*slowHub, uploads)
	disks := make([][]byte, uploads)
	for i := range uploads {
		hubs[i] = &slowHub{fakeHub: newFakeHub(), delay: 2 * time.Millisecond}
		disks[i] = poolDisk(uint64(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var slots []int64
			for s := int64(0); s*testChunk < testCapacity; s++ {
				slots = append(slots, s)
			}
			c := &Counters{}
			errs[i] = upload(ctx, hubs[i], pool, uploadTask{SessionID: "s", Reader: memDisk(disks[i]), Capacity: testCapacity,
				ChunkSize: testChunk, Slots: slots}, c, NewMetrics(nil), UploadOptions{})
			if errs[i] == nil && c.BytesRead.Load() != testCapacity {
				errs[i] = fmt.Errorf("read %d bytes of %d", c.BytesRead.Load(), testCapacity)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		h := hubs[i].fakeHub
		for s := int64(0); s*testChunk < testCapacity; s++ {
			p := disks[i][s*testChunk : min((s+1)*testChunk, testCapacity)]
			d, ok := h.slots[s]
			if !ok {
				t.Fatalf("upload %d: slot %d not recorded", i, s)
			}
			if d != chunk.Sum(p).String() && !(isZeroDigest(d) && d == chunk.ZeroDigest(len(p)).String()) {
				t.Fatalf("upload %d: slot %d recorded as %s", i, s, d)
			}
			if !isZeroDigest(d) && !bytes.Equal(h.chunks[d], p) {
				t.Fatalf("upload %d: the hub's chunk of slot %d differs from the disk", i, s)
			}
		}
	}
	if pool.Peak() > pool.Budget() || pool.allocated.Load() > pool.Budget() {
		t.Fatalf("peak %d and %d allocated bytes, budget %d", pool.Peak(), pool.allocated.Load(), pool.Budget())
	}
	if pool.Peak() < int64(4*size) {
		t.Fatalf("peak %d: the uploads never held a group of 4 buffers at once", pool.Peak())
	}
	if pool.InUse() != 0 {
		t.Fatalf("%d bytes still handed out after every upload ended", pool.InUse())
	}
}

// An upload that fails mid-way returns the error, leaves no goroutine behind and gives the
// whole of its share back, so that another upload on the same pool still runs to its end.
func TestUploadFailureReleasesItsBuffers(t *testing.T) {
	size := chunk.HeaderSize + testChunk
	pool := newBufferPool(int64(5*size), 1)
	var slots []int64
	for s := int64(0); s*testChunk < testCapacity; s++ {
		slots = append(slots, s)
	}
	before := runtime.NumGoroutine()
	bad := &slowHub{fakeHub: newFakeHub(), delay: time.Millisecond, failAt: 2}
	err := upload(t.Context(), bad, pool, uploadTask{SessionID: "s", Reader: memDisk(poolDisk(1)), Capacity: testCapacity,
		ChunkSize: testChunk, Slots: slots}, &Counters{}, NewMetrics(nil), UploadOptions{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("the hub is gone")) {
		t.Fatalf("upload against a failing hub: %v", err)
	}
	if pool.InUse() != 0 {
		t.Fatalf("%d bytes still handed out after the upload failed", pool.InUse())
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines before the upload, %d after", before, n)
	}
	good := &slowHub{fakeHub: newFakeHub()}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := upload(ctx, good, pool, uploadTask{SessionID: "s", Reader: memDisk(poolDisk(2)), Capacity: testCapacity,
		ChunkSize: testChunk, Slots: slots}, &Counters{}, NewMetrics(nil), UploadOptions{}); err != nil {
		t.Fatalf("upload after a failed one: %v", err)
	}
	if got := len(good.recorded()); int64(got) != int64(len(slots)) {
		t.Fatalf("recorded %d slots of %d", got, len(slots))
	}
}

// A process's pool sets the encoders' share aside from its budget and keeps room for at least
// one slot buffer of the default chunk size.
func TestNewBufferPool(t *testing.T) {
	for _, budget := range []int64{80 << 20, 256 << 20, 16 << 20} {
		p := NewBufferPool(budget)
		enc := int64(len(p.encoders))
		if enc < 1 || enc > 4 {
			t.Fatalf("budget %d: %d encoders", budget, enc)
		}
		if want := max(budget-enc*encoderShare, chunk.HeaderSize+defaultChunkSize); p.Budget() != want {
			t.Fatalf("budget %d: %d for slots with %d encoders, want %d", budget, p.Budget(), enc, want)
		}
	}
	if p := NewBufferPool(80 << 20); len(p.encoders) != min(2, runtime.GOMAXPROCS(0)) {
		t.Fatalf("80 MiB: %d encoders", len(p.encoders))
	}
}

// An encoder is counted in the budget as encoderShare: its history and its output buffer must
// fit in it. Beyond it the agent's heap outgrows the budget its memory limit is set from, and
// the garbage collector then runs on nearly every allocation.
func TestSealerFitsItsShare(t *testing.T) {
	p := newBufferPool(chunk.HeaderSize+defaultChunkSize, 1)
	room := make([]byte, chunk.HeaderSize+defaultChunkSize)
	slot := make([]byte, defaultChunkSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range slot {
		if i%3 == 0 {
			slot[i] = byte(rng.IntN(8)) // compressible, as binaries are: the full pass runs
		}
	}
	// Two collections empty sync.Pools (their victim caches too) on either side.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	var codec chunk.Codec
	err := p.withSealer(t.Context(), func(s *sealer) error {
		for range 3 {
			copy(room[chunk.HeaderSize:], slot)
			blob, err := s.seal(room)
			if err != nil {
				return err
			}
			h, err := chunk.ParseHeader(blob)
			if err != nil {
				return err
			}
			codec = h.Codec
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(p)
	runtime.KeepAlive(room)
	runtime.KeepAlive(slot)
	if codec != chunk.CodecZstd {
		t.Fatalf("the slot was stored with codec %v, want zstd: the test does not exercise the encoder", codec)
	}
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > encoderShare {
		t.Fatalf("an encoder holds %.1f MiB after sealing, more than the %d MiB its share counts", float64(grown)/(1<<20), encoderShare>>20)
	}
}
