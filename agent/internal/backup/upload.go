// Package backup is the agent's data path: for one job it takes the snapshot, asks CBT what
// changed, reads the changed slots through a disk transport, skips zeros, hashes, compresses
// what the hub lacks and uploads it in parallel under one memory budget of the process, resumably.
package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// sessionHub is what the uploader needs from the hub. Both calls are idempotent: RecordSlots
// records the slots whose chunk the hub holds and answers the digests it lacks; PutChunk stores
// a chunk of size bytes (named by digest, or by the hub when digest is ""), records the slots
// that hold it and reports whether the hub lacked it.
// PutChunk calls body for a reader of the blob before each attempt it makes (and may call it
// once more to learn the length), and reads that reader to its end or not at all.
type sessionHub interface {
	RecordSlots(ctx context.Context, sessionID string, batch api.SlotBatch) (api.SlotBatchResult, error)
	PutChunk(ctx context.Context, sessionID, digest string, slots []int64, size int64, body func() (io.Reader, error)) (stored bool, err error)
}

// Counters are a job's running totals; safe for concurrent use.
type Counters struct {
	BytesRead, BytesSent, BytesDeduplicated, BytesZero atomic.Int64
	// committed holds what remove took out: the committed disks' counts.
	committed struct{ read, sent, dedup, zero atomic.Int64 }
}

// all returns the counts of this run of the job, committed disks included.
func (c *Counters) all() (read, sent, dedup, zero int64) {
	return c.BytesRead.Load() + c.committed.read.Load(), c.BytesSent.Load() + c.committed.sent.Load(),
		c.BytesDeduplicated.Load() + c.committed.dedup.Load(), c.BytesZero.Load() + c.committed.zero.Load()
}

// Snapshot returns the counters as a progress report.
func (c *Counters) Progress() api.JobProgress {
	return api.JobProgress{BytesRead: c.BytesRead.Load(), BytesSent: c.BytesSent.Load(), BytesDeduplicated: c.BytesDeduplicated.Load(), BytesZero: c.BytesZero.Load()}
}

// remove takes the byte counters of o out of c: a disk's, once it is committed, leaves the
// job's running totals, which cover only what the hub has not recorded yet.
func (c *Counters) remove(o *Counters) {
	for _, f := range []struct{ from, to, by *atomic.Int64 }{
		{&c.BytesRead, &c.committed.read, &o.BytesRead}, {&c.BytesSent, &c.committed.sent, &o.BytesSent},
		{&c.BytesDeduplicated, &c.committed.dedup, &o.BytesDeduplicated}, {&c.BytesZero, &c.committed.zero, &o.BytesZero},
	} {
		n := f.by.Load()
		f.from.Add(-n)
		f.to.Add(n)
	}
}

// UploadOptions bound the uploader.
type UploadOptions struct {
	// MaxInFlight is the process's budget for slots read but not yet acknowledged, with the
	// compression buffers that go with them (default 80 MiB), shared by every upload of the
	// Runner (one pool, see BufferPool).
	MaxInFlight int64
	// GroupSlots is how many consecutive slots are read and recorded at once (default 4).
	GroupSlots int
	// Pool, when set, is the budget to share instead of one made from MaxInFlight (several
	// Runners of one process).
	Pool *BufferPool
}

// Widths of an upload's stages. They bound goroutines, not memory: memory is the pool's.
const (
	readersPerUpload   = 2 // read and hash groups
	recordersPerUpload = 4 // record requests in flight
	// sendersPerUpload bounds one upload's chunk uploads in flight, and the pool keeps those of
	// every upload of the process within the hub's limit per agent. Each upload waits a round
	// trip for its answer, so together they must cover the link's bandwidth-delay product.
	sendersPerUpload = api.MaxUploadsPerAgent
)

// uploadTask describes one disk's upload.
type uploadTask struct {
	SessionID string
	Job       *Counters // also counted here when set (the job's totals)
	Reader    io.ReaderAt
	Capacity  int64
	ChunkSize int64
	Slots     []int64 // the slots to read, ascending
	Direct    bool    // start in the direct mode (see sendMode): the slots are expected to be new to the hub
}

// readGroup is consecutive slots read, each in its buffer after room for a blob header, so that
// a chunk is sealed in place and its upload needs no buffer of its own. A named group was hashed:
// each slot has its digest. A group read while the upload sends directly is not (hashing would
// only name chunks the hub names anyway, see sendMode): its non-zero slots have an empty digest.
type readGroup struct {
	slots   []int64
	bufs    []slotBuf
	lens    []int64
	digests []string // every slot's when named; otherwise only the zero slots'
	named   bool
}

// data returns the bytes of the group's i-th slot, as read.
func (rg *readGroup) data(i int) []byte {
	return rg.bufs[i].b[chunk.HeaderSize : chunk.HeaderSize+rg.lens[i]]
}

// copyOf returns the index in carriers of a slot holding the same bytes as slot i, or -1.
// carriers are slots of the group before i that are not zero and whose buffers are still held:
// the buffer of a copy goes back to the pool at once and may already hold other data. Unnamed
// slots are compared byte by byte: slots that differ mostly differ early, and even a group of
// four copies costs less to compare than to hash.
func (rg *readGroup) copyOf(i int, carriers []int) int {
	for c, j := range carriers {
		switch {
		case rg.lens[j] != rg.lens[i]:
		case rg.named:
			if rg.digests[j] == rg.digests[i] {
				return c
			}
		case bytes.Equal(rg.data(j), rg.data(i)):
			return c
		}
	}
	return -1
}

// zero reports whether the group's i-th slot is all zero bytes.
func (rg *readGroup) zero(i int) bool {
	return rg.digests[i] == chunk.ZeroDigest(int(rg.lens[i])).String()
}

// missingChunk is a chunk the hub lacks, in the buffer of one of the slots that hold it.
type missingChunk struct {
	digest  string // empty: unnamed, the hub names it
	holders []int64
	buf     slotBuf
	n       int64
	direct  bool // sent without asking the hub whether it lacks the chunk
}

// name is how messages name the chunk.
func (mc *missingChunk) name() string {
	if mc.digest == "" {
		return fmt.Sprintf("of slot %d", mc.holders[0])
	}
	return mc.digest
}

// upload reads, hashes and sends the task's slots in three overlapping stages, so that round
// trips to the hub overlap with reading and with each other: readers fill buffers from the
// pool with groups of slots and hash them (not while the upload sends directly); recorders record each group's digests (the hub
// answers which chunks it lacks) and give back the buffers of slots that are zero or already
// held — or, while the hub lacks nearly every chunk, pass the group's chunks on without asking
// (see sendMode); senders compress and upload the chunks, each recording the slots that hold
// it, and give their buffers back once acknowledged. Zero slots go to one more stage that
// records them in large batches (recordZeros). Memory in flight is the pool's, shared by every
// upload of the process.
func upload(ctx context.Context, hub sessionHub, pool *BufferPool, t uploadTask, c *Counters, m *Metrics, opts UploadOptions) error {
	if opts.GroupSlots <= 0 {
		opts.GroupSlots = 4
	}
	if len(t.Slots) == 0 {
		return nil
	}
	size := chunk.HeaderSize + int(t.ChunkSize)
	per := pool.groupFit(opts.GroupSlots, size)
	u := &uploader{hub: hub, pool: pool, t: t, c: c, m: m}
	u.mode.on = t.Direct
	// Whatever the stages still hold when they stop on an error goes back to the pool here,
	// after every stage has returned.
	defer u.releaseHeld()

	groups := make(chan []int64)
	read := make(chan *readGroup)
	missing := make(chan missingChunk)
	zeros := make(chan api.SlotDigest, api.MaxSlotBatch)
	u.zeros = zeros
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(groups)
		for i := 0; i < len(t.Slots); i += per {
			select {
			case groups <- t.Slots[i:min(i+per, len(t.Slots))]:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var readers, recorders atomic.Int32
	readers.Store(readersPerUpload)
	recorders.Store(recordersPerUpload)
	for range readersPerUpload {
		g.Go(func() error {
			defer func() {
				if readers.Add(-1) == 0 {
					close(read)
				}
			}()
			for grp := range groups {
				rg, err := u.read(gctx, grp, size)
				if err != nil {
					return err
				}
				select {
				case read <- rg:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	for range recordersPerUpload {
		g.Go(func() error {
			defer func() {
				if recorders.Add(-1) == 0 {
					close(missing)
					close(zeros)
				}
			}()
			for rg := range read {
				record := u.record
				if !rg.named || u.mode.isDirect() {
					record = u.direct
				}
				if err := record(gctx, rg, missing); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error { return u.recordZeros(gctx, zeros, zeroFlushAfter) })
	for range sendersPerUpload {
		g.Go(func() error {
			for mc := range missing {
				if err := u.send(gctx, mc); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

type uploader struct {
	hub  sessionHub
	pool *BufferPool
	t    uploadTask
	c    *Counters
	m    *Metrics
	held atomic.Int64 // budget bytes this upload holds
	mode sendMode
	// zeros takes the zero slots the recorders found to recordZeros.
	zeros chan<- api.SlotDigest
}

// add counts on the disk's counters and, when set, the job's.
func (u *uploader) add(f func(c *Counters)) {
	f(u.c)
	if u.t.Job != nil {
		f(u.t.Job)
	}
}

func (u *uploader) put(sb slotBuf) {
	u.held.Add(-sb.w)
	u.pool.put(sb)
}

// releaseHeld gives back the budget of buffers left in the stages by an error; the buffers
// themselves are left to the garbage collector.
func (u *uploader) releaseHeld() {
	if h := u.held.Swap(0); h > 0 {
		u.pool.inUse.Add(-h)
		u.pool.sem.Release(h)
	}
}

// read takes the buffers of a group from the pool at once and reads its slots; it hashes them
// unless the upload sends directly.
func (u *uploader) read(ctx context.Context, slots []int64, size int) (*readGroup, error) {
	bufs, err := u.pool.getGroup(ctx, len(slots), size)
	if err != nil {
		return nil, err
	}
	for _, b := range bufs {
		u.held.Add(b.w)
	}
	rg := &readGroup{slots: slots, bufs: bufs, lens: make([]int64, len(slots)), digests: make([]string, len(slots)), named: !u.mode.isDirect()}
	for i, s := range slots {
		off := s * u.t.ChunkSize
		n := min(u.t.ChunkSize, u.t.Capacity-off)
		buf := bufs[i].b[chunk.HeaderSize : chunk.HeaderSize+n]
		if err := readFull(u.t.Reader, buf, off); err != nil {
			return nil, fmt.Errorf("read slot %d at offset %d: %w", s, off, err)
		}
		u.add(func(c *Counters) { c.BytesRead.Add(n) })
		u.m.readBytes.Add(float64(n))
		rg.lens[i] = n
		switch {
		case isZero(buf):
			rg.digests[i] = chunk.ZeroDigest(int(n)).String()
			u.add(func(c *Counters) { c.BytesZero.Add(n) })
			u.m.zeroBytes.Add(float64(n))
			u.m.slots.WithLabelValues("zero").Inc()
		case rg.named:
			rg.digests[i] = chunk.Sum(buf).String()
		}
	}
	return rg, nil
}

// record records a group's digests, gives back the buffers of slots whose chunk the hub holds
// (or that are zero) and passes each missing chunk on, once, with the slots that hold it. Zero
// slots go to recordZeros: a group of nothing but zeros costs no round trip.
func (u *uploader) record(ctx context.Context, rg *readGroup, out chan<- missingChunk) error {
	var batch api.SlotBatch
	for i, s := range rg.slots {
		if !rg.zero(i) {
			batch.Slots = append(batch.Slots, api.SlotDigest{Slot: s, Digest: rg.digests[i]})
		}
	}
	var res api.SlotBatchResult
	if len(batch.Slots) > 0 {
		var err error
		if res, err = u.hub.RecordSlots(ctx, u.t.SessionID, batch); err != nil {
			return fmt.Errorf("record slots %d..%d: %w", rg.slots[0], rg.slots[len(rg.slots)-1], err)
		}
		u.mode.recorded(rg, len(res.Missing))
	}
	// The first slot holding a missing digest carries its chunk; every other buffer goes back.
	carrier := make(map[string]int, len(res.Missing))
	for _, d := range res.Missing {
		i := slices.Index(rg.digests, d)
		if i < 0 || rg.zero(i) {
			return fmt.Errorf("hub asked for chunk %s that this batch does not hold", d)
		}
		carrier[d] = i
	}
	var send []missingChunk
	for i, d := range rg.digests {
		ci, isMissing := carrier[d]
		switch {
		case rg.zero(i):
			if err := u.zero(ctx, rg.slots[i], d); err != nil {
				return err
			}
		case isMissing && ci == i:
			mc := missingChunk{digest: d, buf: rg.bufs[i], n: rg.lens[i]}
			for j, dj := range rg.digests {
				if dj == d {
					mc.holders = append(mc.holders, rg.slots[j])
				}
			}
			send = append(send, mc)
			continue
		case !isMissing:
			n := rg.lens[i]
			u.add(func(c *Counters) { c.BytesDeduplicated.Add(n) })
			u.m.dedupBytes.Add(float64(n))
			u.m.slots.WithLabelValues("deduplicated").Inc()
		}
		u.put(rg.bufs[i])
	}
	return pass(ctx, send, out)
}

// pass hands chunks on to the senders.
func pass(ctx context.Context, send []missingChunk, out chan<- missingChunk) error {
	for _, mc := range send {
		select {
		case out <- mc:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// direct passes a group's chunks on without asking the hub which it lacks: one upload per
// distinct non-zero content, carrying every slot of the group that holds it (the hub verifies
// and records it as after a record, and names it when the group is unnamed), the other buffers
// back at once, the zero slots to recordZeros.
func (u *uploader) direct(ctx context.Context, rg *readGroup, out chan<- missingChunk) error {
	var send []missingChunk
	var carriers []int // the slots whose buffers carry send's chunks, in its order
	for i := range rg.slots {
		if rg.zero(i) {
			if err := u.zero(ctx, rg.slots[i], rg.digests[i]); err != nil {
				return err
			}
			u.put(rg.bufs[i])
			continue
		}
		if c := rg.copyOf(i, carriers); c >= 0 {
			send[c].holders = append(send[c].holders, rg.slots[i])
			u.put(rg.bufs[i])
			continue
		}
		carriers = append(carriers, i)
		send = append(send, missingChunk{digest: rg.digests[i], holders: []int64{rg.slots[i]}, buf: rg.bufs[i], n: rg.lens[i], direct: true})
	}
	return pass(ctx, send, out)
}

// zero hands a zero slot to recordZeros.
func (u *uploader) zero(ctx context.Context, slot int64, digest string) error {
	select {
	case u.zeros <- api.SlotDigest{Slot: slot, Digest: digest}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// zeroFlushAfter bounds how long a zero slot waits in recordZeros for its batch to fill.
const zeroFlushAfter = 2 * time.Second

// recordZeros records the zero slots it receives in batches of up to api.MaxSlotBatch: when a
// batch is full, when its first slot has waited flushAfter (so that a resumed upload need not
// read them again) and when in closes. A zero slot holds no buffer and needs no answer from the
// hub (the all-zero chunk is always held), so it need not cost a round trip of its own: recorded
// group by group, the unused space of a thick disk over a 100 ms link took one round trip per
// four slots, a few at a time.
func (u *uploader) recordZeros(ctx context.Context, in <-chan api.SlotDigest, flushAfter time.Duration) error {
	var batch api.SlotBatch
	flush := func() error {
		if len(batch.Slots) == 0 {
			return nil
		}
		if _, err := u.hub.RecordSlots(ctx, u.t.SessionID, batch); err != nil {
			return fmt.Errorf("record %d zero slots from %d: %w", len(batch.Slots), batch.Slots[0].Slot, err)
		}
		batch.Slots = batch.Slots[:0]
		return nil
	}
	t := time.NewTimer(flushAfter)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case sd, ok := <-in:
			if !ok {
				return flush()
			}
			if len(batch.Slots) == 0 {
				t.Reset(flushAfter)
			}
			batch.Slots = append(batch.Slots, sd)
			if len(batch.Slots) < api.MaxSlotBatch {
				continue
			}
		case <-t.C:
		}
		t.Stop()
		if err := flush(); err != nil {
			return err
		}
	}
}

// sendMode chooses, group by group, how a group's chunks reach the hub. Record first: the
// group's digests are recorded and the hub answers which chunks it lacks, so only those travel,
// at the price of one round trip during which the group's buffers wait, and of hashing each
// slot on the agent as well as on the hub. Direct: every distinct chunk is uploaded at once,
// unhashed (the hub names it), and a chunk the hub already held travels in vain. An upload turns
// direct when at most 1 of the last modeWindow distinct chunks it asked about was held (a full
// backup into a repository without this data), and back as soon as more than 2 of the last
// modeWindow chunks it uploaded directly were held (a clone, a re-run full). So direct sends at
// most about 1/16 in vain, and over a long round trip the buffers of the in-flight budget each
// wait one round trip instead of two. A full backup starts by recording first when the disk has
// an earlier backup in the repository (a forced full, a CBT reset: most of its chunks may be
// held) or resumes a session, direct otherwise (the hub may then answer "held" only for copies
// within the session: the known-chunks rule); an incremental starts direct (uploadTask.Direct):
// what CBT reports changed since the parent is new data as a rule, and asking first would cost
// the agent a hash of every slot (a tenth of an incremental's time after 1 % changed). The mode
// changes what travels, never what is recorded.
type sendMode struct {
	mu     sync.Mutex
	on     bool
	n, hit int // in the current window: distinct chunks asked about (or uploaded directly), of them held
}

// modeWindow is how many distinct chunks a switch of sendMode looks at.
const modeWindow = 32

func (m *sendMode) isDirect() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.on
}

// recorded counts a group recorded first, of whose distinct non-zero digests missing were
// lacked by the hub.
func (m *sendMode) recorded(rg *readGroup, missing int) {
	distinct := map[string]bool{}
	for i, d := range rg.digests {
		if !rg.zero(i) {
			distinct[d] = true
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.on {
		return // a group that was read before the switch
	}
	m.n += len(distinct)
	m.hit += len(distinct) - missing
	if m.n >= modeWindow {
		m.on = m.hit <= 1
		m.n, m.hit = 0, 0
	}
}

// uploaded counts a chunk uploaded directly; stored is false when the hub already held it.
func (m *sendMode) uploaded(stored bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.on {
		return // uploaded after the switch back
	}
	m.n++
	if !stored {
		m.hit++
	}
	switch {
	case m.hit > 2:
		m.on = false
		m.n, m.hit = 0, 0
	case m.n >= modeWindow:
		m.n, m.hit = 0, 0
	}
}

// zeros is compared against a slot piece by piece to find all-zero slots.
var zeros [64 << 10]byte

// isZero reports whether p holds only zero bytes.
func isZero(p []byte) bool {
	for len(p) > 0 {
		k := min(len(p), len(zeros))
		if !bytes.Equal(p[:k], zeros[:k]) {
			return false
		}
		p = p[k:]
	}
	return true
}

// seal turns room — chunk.HeaderSize bytes of room, then a slot's bytes — into a chunk blob in
// place: compressed with zstd, or raw when compression does not save at least 1/32 (random
// data, already compressed files). A slot whose samples do not compress (incompressible) is
// stored raw without a compression pass over all of it. The slot's bytes are overwritten.
func (s *sealer) seal(room []byte) ([]byte, error) {
	p := room[chunk.HeaderSize:]
	n := len(p)
	blob, codec := room, chunk.CodecRaw
	if !s.incompressible(p) {
		out := s.enc.EncodeAll(p, s.out[:0])
		s.out = out[:0]
		if len(out) < n-n/32 {
			codec = chunk.CodecZstd
			blob = room[:chunk.HeaderSize+copy(p, out)]
		}
	}
	if err := chunk.SealBlob(blob, codec, n); err != nil {
		return nil, fmt.Errorf("seal chunk: %w", err)
	}
	return blob, nil
}

// sampleLen is the size of each of the three samples incompressible compresses; slots shorter
// than four samples are always compressed whole.
const sampleLen = 16 << 10

// incompressible compresses three samples of p (its start, middle and end) and reports whether
// together they save less than 1/64: then the whole slot would not save the 1/32 that zstd must
// (zstd does better on a whole slot than on small samples, hence the lower bar), and the pass
// is skipped. Random data and compressed files fail fast here at about 1 % of a full pass.
func (s *sealer) incompressible(p []byte) bool {
	if len(p) < 4*sampleLen {
		return false
	}
	in, packed := 0, 0
	for _, off := range [3]int{0, len(p)/2 - sampleLen/2, len(p) - sampleLen} {
		s.sample = s.enc.EncodeAll(p[off:off+sampleLen], s.sample[:0])
		in += sampleLen
		packed += len(s.sample)
	}
	return packed >= in-in/64
}

// readFull reads exactly len(p) bytes at off.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("short read: %d of %d bytes: %w", n, len(p), io.ErrUnexpectedEOF)
	}
	return err
}
