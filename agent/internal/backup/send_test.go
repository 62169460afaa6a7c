package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// farHub reads each upload's body at once and answers delay later, as a hub a long round trip
// away does; it counts the uploads waiting for their answer.
type farHub struct {
	*fakeHub
	delay            time.Duration
	waiting, maxWait atomic.Int32
}

func (h *farHub) PutChunk(ctx context.Context, id, digest string, slots []int64, size int64, body func() (io.Reader, error)) (bool, error) {
	blob, err := readBody(body, size)
	if err != nil {
		return false, err
	}
	n := h.waiting.Add(1)
	for m := h.maxWait.Load(); n > m && !h.maxWait.CompareAndSwap(m, n); m = h.maxWait.Load() {
	}
	defer h.waiting.Add(-1)
	if err := sleepCtx(ctx, h.delay); err != nil {
		return false, err
	}
	return h.putBlob(digest, slots, blob)
}

// checkSlots fails unless every slot of disk is recorded on hub with its bytes.
func checkSlots(t *testing.T, hub *fakeHub, disk []byte) {
	t.Helper()
	for s := 0; s*testChunk < len(disk); s++ {
		p := disk[s*testChunk : min((s+1)*testChunk, len(disk))]
		d, ok := hub.slots[int64(s)]
		switch {
		case !ok:
			t.Fatalf("slot %d not recorded", s)
		case isZeroDigest(d):
			if d != chunk.ZeroDigest(len(p)).String() || !slices.Equal(p, make([]byte, len(p))) {
				t.Fatalf("slot %d recorded as zero", s)
			}
		case d != chunk.Sum(p).String() || !slices.Equal(hub.chunks[d], p):
			t.Fatalf("slot %d recorded as %s, not its bytes", s, d)
		}
	}
}

func allSlots(disk []byte) []int64 {
	var slots []int64
	for s := int64(0); s*testChunk < int64(len(disk)); s++ {
		slots = append(slots, s)
	}
	return slots
}

// A buffer goes back to the pool once its upload has read the blob, not when the hub answers:
// over a long round trip more chunks wait for their answer than the budget holds buffers, and
// the budget is never exceeded. Holding buffers until the answer allows at most 4 to wait.
func TestBufferReturnsOnceTheBodyIsRead(t *testing.T) {
	disk := modeDisk(64, func(int) bool { return false })
	size := chunk.HeaderSize + testChunk
	pool := newBufferPool(int64(4*size), 1)
	hub := &farHub{fakeHub: newFakeHub(), delay: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := upload(ctx, hub, pool, uploadTask{SessionID: "s", Reader: memDisk(disk), Capacity: int64(len(disk)),
		ChunkSize: testChunk, Slots: allSlots(disk)}, &Counters{}, NewMetrics(nil), UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	checkSlots(t, hub.fakeHub, disk)
	if w := hub.maxWait.Load(); w <= 4 {
		t.Fatalf("at most %d uploads waited for their answer at once: buffers are held until the hub answers", w)
	}
	if pool.Peak() > pool.Budget() || pool.InUse() != 0 {
		t.Fatalf("peak %d of a budget of %d, %d still in use", pool.Peak(), pool.Budget(), pool.InUse())
	}
}

// retryHub makes every upload take two attempts: the first reads readFirst bytes of the body
// (all of it when negative) and fails, between the attempts between runs (with the upload's
// digest, empty when the hub names the chunk, and slots), and the second is
// stored. It keeps the first attempt's readers.
type retryHub struct {
	*fakeHub
	readFirst int
	between   func(digest string, slots []int64)
	mu        sync.Mutex
	stale     []io.Reader
}

func (h *retryHub) PutChunk(_ context.Context, _ string, digest string, slots []int64, size int64, body func() (io.Reader, error)) (bool, error) {
	r, err := body()
	if err != nil {
		return false, err
	}
	if h.readFirst < 0 {
		_, err = io.Copy(io.Discard, r)
	} else {
		_, err = io.ReadFull(r, make([]byte, h.readFirst))
	}
	if err != nil {
		return false, err
	}
	h.mu.Lock()
	h.stale = append(h.stale, r)
	h.mu.Unlock()
	if h.between != nil {
		h.between(digest, slots)
	}
	blob, err := readBody(body, size)
	if err != nil {
		return false, err
	}
	return h.putBlob(digest, slots, blob)
}

// countingDisk counts the bytes read from it.
type countingDisk struct {
	memDisk
	read atomic.Int64
}

func (d *countingDisk) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.memDisk.ReadAt(p, off)
	d.read.Add(int64(n))
	return n, err
}

// A second attempt after the first read the whole blob (its buffer already back in the pool)
// reads the slot from the disk again and uploads the same bytes; one after a partial read
// reuses the buffer it still holds. Either way the first attempt's reader reads nothing more,
// and the upload ends even when readers hold the whole budget meanwhile.
func TestRetryAfterTheBodyWasRead(t *testing.T) {
	for _, tc := range []struct {
		name      string
		readFirst int
		reread    bool
	}{{"whole body read", -1, true}, {"part of the body read", 100, false}} {
		t.Run(tc.name, func(t *testing.T) {
			disk := modeDisk(64, func(s int) bool { return s%5 == 4 })
			d := &countingDisk{memDisk: memDisk(disk)}
			// One group's worth of budget: the buffers given back after the first attempts go
			// to the readers at once, and the second attempts must not wait for them.
			pool := newBufferPool(int64(4*(chunk.HeaderSize+testChunk)), 1)
			hub := &retryHub{fakeHub: newFakeHub(), readFirst: tc.readFirst}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if err := upload(ctx, hub, pool, uploadTask{SessionID: "s", Reader: d, Capacity: int64(len(disk)),
				ChunkSize: testChunk, Slots: allSlots(disk)}, &Counters{}, NewMetrics(nil), UploadOptions{}); err != nil {
				t.Fatal(err)
			}
			checkSlots(t, hub.fakeHub, disk)
			// Every slot is read once; with re-reads, every uploaded chunk once more.
			var uploaded int64
			for _, c := range hub.chunks {
				uploaded += int64(len(c))
			}
			want := int64(len(disk))
			if tc.reread {
				want += uploaded
			}
			if got := d.read.Load(); got != want {
				t.Fatalf("%d bytes read from the disk, want %d", got, want)
			}
			for _, r := range hub.stale {
				if n, err := r.Read(make([]byte, 10)); n != 0 || (err != io.EOF && !errors.Is(err, errRevoked)) {
					t.Fatalf("a stale reader read %d bytes (%v)", n, err)
				}
			}
			if pool.InUse() != 0 {
				t.Fatalf("%d bytes still in use", pool.InUse())
			}
		})
	}
}

// A slot that reads back with other bytes for a second attempt fails the upload: what the
// first attempt sent can no longer be vouched for. A chunk the agent named is checked against
// its digest; one sent for the hub to name (after the upload went direct), against its CRC-32C.
func TestRetryOfAChangedSlotFails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slots int
		named bool
		want  string
	}{{"named chunk", 8, true, "read chunk " + strings.Repeat("[0-9a-f]", 64) + " again"}, {"chunk the hub names", 96, false, "read chunk of slot [0-9]+ again"}} {
		t.Run(tc.name, func(t *testing.T) {
			disk := &changingDisk{b: modeDisk(tc.slots, func(int) bool { return false })}
			pool := newBufferPool(int64(8*(chunk.HeaderSize+testChunk)), 1)
			var once sync.Once
			hub := &retryHub{fakeHub: newFakeHub(), readFirst: -1, between: func(digest string, slots []int64) {
				if (digest != "") == tc.named {
					once.Do(func() { disk.flip(slots[0]) })
				}
			}}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err := upload(ctx, hub, pool, uploadTask{SessionID: "s", Reader: disk, Capacity: int64(len(disk.b)),
				ChunkSize: testChunk, Slots: allSlots(disk.b)}, &Counters{}, NewMetrics(nil), UploadOptions{})
			if !errors.Is(err, errChunkChanged) || !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Fatalf("upload of a slot that changed between attempts: %v, want %v matching %q", err, errChunkChanged, tc.want)
			}
			if pool.InUse() != 0 {
				t.Fatalf("%d bytes still in use", pool.InUse())
			}
		})
	}
}

// changingDisk is a disk whose slots flip changes under its readers.
type changingDisk struct {
	mu sync.Mutex
	b  []byte
}

func (d *changingDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return memDisk(d.b).ReadAt(p, off)
}

func (d *changingDisk) flip(slot int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.b[slot*testChunk : (slot+1)*testChunk] {
		d.b[slot*testChunk+int64(i)] ^= 0xff
	}
}

// squeezeHub fails the first attempt of every upload after reading its body, once the readers
// hold the whole budget (or 100 ms passed): every second attempt then needs a buffer while
// none is free, as after a hub failed with many uploads in flight.
type squeezeHub struct {
	*fakeHub
	pool *BufferPool
}

func (h *squeezeHub) PutChunk(ctx context.Context, id, digest string, slots []int64, size int64, body func() (io.Reader, error)) (bool, error) {
	r, err := body()
	if err != nil {
		return false, err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return false, err
	}
	for deadline := time.Now().Add(100 * time.Millisecond); h.pool.InUse() < h.pool.Budget() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return h.fakeHub.PutChunk(ctx, id, digest, slots, size, body)
}

// Second attempts do not wait for the budget, which readers may hold while they wait for the
// senders: the upload ends.
func TestRetriesWhileReadersHoldTheBudget(t *testing.T) {
	disk := modeDisk(96, func(int) bool { return false })
	size := chunk.HeaderSize + testChunk
	pool := newBufferPool(int64(4*size), 1)
	hub := &squeezeHub{fakeHub: newFakeHub(), pool: pool}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := upload(ctx, hub, pool, uploadTask{SessionID: "s", Reader: memDisk(disk), Capacity: int64(len(disk)),
		ChunkSize: testChunk, Slots: allSlots(disk)}, &Counters{}, NewMetrics(nil), UploadOptions{}); err != nil {
		t.Fatalf("upload with every first attempt failed: %v", err)
	}
	checkSlots(t, hub.fakeHub, disk)
	if pool.InUse() != 0 {
		t.Fatalf("%d bytes still in use", pool.InUse())
	}
}

// limitHub refuses a chunk upload while the agent has limit others in flight, as the hub does
// (busy); every limitHub of a test shares inFlight, as the disks of one agent share a hub.
type limitHub struct {
	*fakeHub
	delay          time.Duration
	inFlight, peak *atomic.Int32
}

func (h *limitHub) PutChunk(ctx context.Context, id, digest string, slots []int64, size int64, body func() (io.Reader, error)) (bool, error) {
	n := h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	for m := h.peak.Load(); n > m && !h.peak.CompareAndSwap(m, n); m = h.peak.Load() {
	}
	if n > api.MaxUploadsPerAgent {
		return false, fmt.Errorf("busy: upload %d in flight, at most %d per agent", n, api.MaxUploadsPerAgent)
	}
	blob, err := readBody(body, size)
	if err != nil {
		return false, err
	}
	if err := sleepCtx(ctx, h.delay); err != nil {
		return false, err
	}
	return h.putBlob(digest, slots, blob)
}

// Three disks uploaded at once by one process, 50 ms from the hub: together they keep within the
// hub's limit of uploads per agent and fill it, though each upload alone may have as many in
// flight and a buffer goes back before the answer.
func TestUploadsOfOneProcessShareTheHubsLimit(t *testing.T) {
	size := chunk.HeaderSize + testChunk
	pool := newBufferPool(int64(8*size), 1)
	var inFlight, peak atomic.Int32
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	disks := make([][]byte, 3)
	hubs := make([]*limitHub, 3)
	for i := range disks {
		disks[i] = modeDisk(96+i, func(int) bool { return false })
		hubs[i] = &limitHub{fakeHub: newFakeHub(), delay: 50 * time.Millisecond, inFlight: &inFlight, peak: &peak}
		g.Go(func() error {
			return upload(gctx, hubs[i], pool, uploadTask{SessionID: "s", Reader: memDisk(disks[i]), Capacity: int64(len(disks[i])),
				ChunkSize: testChunk, Slots: allSlots(disks[i])}, &Counters{}, NewMetrics(nil), UploadOptions{})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for i := range disks {
		checkSlots(t, hubs[i].fakeHub, disks[i])
	}
	if p := peak.Load(); p < api.MaxUploadsPerAgent/2 {
		t.Fatalf("at most %d uploads in flight at once for three disks 50 ms away", p)
	}
	t.Logf("at most %d chunk uploads in flight at once (limit %d)", peak.Load(), api.MaxUploadsPerAgent)
}
