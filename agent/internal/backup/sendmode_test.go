package backup

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// countingHub counts what the uploader asks the hub: the distinct non-zero digests of each
// record request (as sendMode counts them; a group's copies of one slot are asked about once),
// the chunks it uploads (unnamed: those it sends for the hub to name), the uploads of chunks the
// hub already held, and the requests that record zero slots. It refuses a batch larger than the hub's limit, as the hub does.
type countingHub struct {
	*fakeHub
	mu                  sync.Mutex
	asked, puts, inVain int
	unnamed             int
	zeroRequests        int
}

func (h *countingHub) RecordSlots(ctx context.Context, id string, b api.SlotBatch) (api.SlotBatchResult, error) {
	if len(b.Slots) > api.MaxSlotBatch {
		return api.SlotBatchResult{}, fmt.Errorf("%d slots in one batch, at most %d", len(b.Slots), api.MaxSlotBatch)
	}
	h.mu.Lock()
	zero := false
	distinct := map[string]bool{}
	for _, s := range b.Slots {
		if !isZeroDigest(s.Digest) {
			distinct[s.Digest] = true
		} else {
			zero = true
		}
	}
	h.asked += len(distinct)
	if zero {
		h.zeroRequests++
	}
	h.mu.Unlock()
	return h.fakeHub.RecordSlots(ctx, id, b)
}

func (h *countingHub) PutChunk(ctx context.Context, id, digest string, slots []int64, size int64, body func() (io.Reader, error)) (bool, error) {
	stored, err := h.fakeHub.PutChunk(ctx, id, digest, slots, size, body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.puts++
	if digest == "" {
		h.unnamed++
	}
	if err == nil && !stored {
		h.inVain++
	}
	return stored, err
}

// modeDisk is n slots of random bytes; slot s is zero when zero(s), and a copy of slot s-1 when
// s%8 == 1 (in the same group of 4, so that one upload carries both).
func modeDisk(n int, zero func(s int) bool) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	d := make([]byte, n*testChunk)
	for s := range n {
		p := d[s*testChunk : (s+1)*testChunk]
		switch {
		case zero(s):
		case s%8 == 1:
			copy(p, d[(s-1)*testChunk:])
		default:
			for i := range p {
				p[i] = byte(r.Uint32())
			}
		}
	}
	return d
}

// uploadAll uploads every slot of disk to hub through a pool of 8 slot buffers, starting in the
// direct mode when direct is set, and checks that each slot is recorded with its bytes.
func uploadAll(t *testing.T, hub *countingHub, disk []byte, direct bool) {
	t.Helper()
	size := chunk.HeaderSize + testChunk
	pool := newBufferPool(int64(8*size), 1)
	var slots []int64
	for s := int64(0); s*testChunk < int64(len(disk)); s++ {
		slots = append(slots, s)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := upload(ctx, hub, pool, uploadTask{SessionID: "s", Reader: memDisk(disk), Capacity: int64(len(disk)),
		ChunkSize: testChunk, Slots: slots, Direct: direct}, &Counters{}, NewMetrics(nil), UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	checkSlots(t, hub.fakeHub, disk)
	if pool.InUse() != 0 {
		t.Fatalf("%d bytes still handed out", pool.InUse())
	}
}

// While the hub lacks every chunk, the upload stops asking first after one window of chunks and
// uploads each distinct chunk once, with every slot that holds it; zero slots are still
// recorded. Without the direct mode every slot's digest would be asked about. Groups read once it
// is direct are not hashed: the hub names their chunks (copies within a group are still found).
func TestDirectUploadsWhileTheHubLacksEverything(t *testing.T) {
	const n = 400
	disk := modeDisk(n, func(s int) bool { return s%12 == 3 })
	hub := &countingHub{fakeHub: newFakeHub()}
	uploadAll(t, hub, disk, false)
	distinct := map[string]bool{}
	for s := range n {
		if p := disk[s*testChunk : (s+1)*testChunk]; !slices.Equal(p, make([]byte, len(p))) {
			distinct[chunk.Sum(p).String()] = true
		}
	}
	// One window (its last group may pass it by 3), and the groups the other recorders were
	// asking about when it closed: one each.
	if hub.asked > modeWindow+3+(recordersPerUpload-1)*4 {
		t.Fatalf("asked about %d digests: the upload never stopped asking first", hub.asked)
	}
	if hub.puts != len(distinct) || hub.inVain != 0 {
		t.Fatalf("%d uploads (%d of held chunks) for %d distinct chunks", hub.puts, hub.inVain, len(distinct))
	}
	// All but the window, what the recorders held then and what the readers had read ahead (the
	// pool's 8 buffers).
	if named := hub.puts - hub.unnamed; named > modeWindow+3+(recordersPerUpload-1)*4+8 {
		t.Fatalf("%d of %d uploads were named by the agent: direct groups were still hashed", named, hub.puts)
	}
}

// Once direct uploads find chunks the hub already holds (here: after 100 new slots, 300 it
// holds), the upload asks first again: a few chunks travel in vain, not hundreds.
func TestDirectUploadTurnsBackWhenTheHubHoldsChunks(t *testing.T) {
	const n, fresh = 400, 100
	disk := modeDisk(n, func(int) bool { return false })
	hub := &countingHub{fakeHub: newFakeHub()}
	for s := fresh; s < n; s++ {
		p := disk[s*testChunk : (s+1)*testChunk]
		hub.chunks[chunk.Sum(p).String()] = slices.Clone(p)
	}
	uploadAll(t, hub, disk, false)
	// Turned direct during the fresh part: far fewer than its 100 digests asked about there.
	if hub.asked > (n-fresh)+modeWindow+3+(recordersPerUpload-1)*4 {
		t.Fatalf("asked about %d digests: the upload never went direct", hub.asked)
	}
	// Back to asking first after more than 2 held ones, plus what was already on its way: an
	// upload's buffer goes back once its body is read, before the hub answers, so every sender
	// may hold one more chunk, and the pool's 8 buffers more.
	if hub.inVain > 3+sendersPerUpload+8 {
		t.Fatalf("%d chunks the hub held were uploaded: the upload never turned back", hub.inVain)
	}
	if hub.inVain < 3 {
		t.Fatalf("%d chunks the hub held were uploaded; direct uploads must have met more", hub.inVain)
	}
}

// An upload told to start direct (an incremental's changed slots) asks about no digest while
// the hub lacks every chunk: it uploads each distinct chunk once, unhashed, for the hub to name.
// When the hub turns out to hold them (a VM reverted to older data), it turns back to asking
// first after a few uploads in vain, as an upload that turned direct by itself does.
func TestUploadStartsDirectWhenTold(t *testing.T) {
	const n = 200
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("hub holds the data=%v", held), func(t *testing.T) {
			disk := modeDisk(n, func(s int) bool { return s%12 == 3 })
			hub := &countingHub{fakeHub: newFakeHub()}
			distinct := map[string]bool{}
			for s := range n {
				if p := disk[s*testChunk : (s+1)*testChunk]; !slices.Equal(p, make([]byte, len(p))) {
					distinct[chunk.Sum(p).String()] = true
					if held {
						hub.chunks[chunk.Sum(p).String()] = slices.Clone(p)
					}
				}
			}
			uploadAll(t, hub, disk, true)
			if held {
				// As in TestDirectUploadTurnsBackWhenTheHubHoldsChunks.
				if hub.inVain < 3 || hub.inVain > 3+sendersPerUpload+8 {
					t.Fatalf("%d chunks the hub held were uploaded, want 3 to %d", hub.inVain, 3+sendersPerUpload+8)
				}
				if hub.asked == 0 {
					t.Fatal("the upload never asked first")
				}
				return
			}
			if hub.asked != 0 {
				t.Fatalf("asked about %d digests: the upload did not start direct", hub.asked)
			}
			if hub.puts != len(distinct) || hub.unnamed != hub.puts || hub.inVain != 0 {
				t.Fatalf("%d uploads (%d unnamed, %d of held chunks) for %d distinct chunks", hub.puts, hub.unnamed, hub.inVain, len(distinct))
			}
		})
	}
}

// Zero slots are recorded in batches of up to api.MaxSlotBatch, not with a request per group of
// slots: whether the upload asks first (the hub holds the data) or uploads directly (it lacks
// it), 2,970 zero slots between the data cost a few requests, not the 743 groups' worth.
func TestZeroSlotsAreRecordedInBatches(t *testing.T) {
	const n = 3000
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("hub holds the data=%v", held), func(t *testing.T) {
			disk := modeDisk(n, func(s int) bool { return s%100 != 0 })
			hub := &countingHub{fakeHub: newFakeHub()}
			if held {
				for s := 0; s < n; s += 100 {
					p := disk[s*testChunk : (s+1)*testChunk]
					hub.chunks[chunk.Sum(p).String()] = slices.Clone(p)
				}
			}
			uploadAll(t, hub, disk, false)
			// Three full batches; a slow machine may flush a few more on the timer.
			if hub.zeroRequests > 12 {
				t.Fatalf("%d requests recorded the zero slots", hub.zeroRequests)
			}
			if held && hub.puts != 0 {
				t.Fatalf("%d chunks uploaded, the hub held them all", hub.puts)
			}
		})
	}
}

// A zero slot does not wait for its batch to fill for longer than the flush interval, so that
// an upload stopped in a long run of data does not read it again when resumed.
func TestZeroSlotsFlushWhileTheUploadRuns(t *testing.T) {
	hub := &countingHub{fakeHub: newFakeHub()}
	u := &uploader{hub: hub, t: uploadTask{SessionID: "s"}}
	in := make(chan api.SlotDigest, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- u.recordZeros(ctx, in, 10*time.Millisecond) }()
	in <- api.SlotDigest{Slot: 5, Digest: chunk.ZeroDigest(testChunk).String()}
	deadline := time.Now().Add(30 * time.Second)
	for {
		hub.fakeHub.mu.Lock()
		_, ok := hub.slots[5]
		hub.fakeHub.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the zero slot was not recorded while the upload ran on")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if hub.zeroRequests != 1 {
		t.Fatalf("%d requests for one zero slot", hub.zeroRequests)
	}
}
