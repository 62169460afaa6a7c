// Package backup is the agent's data path: for one job it takes the snapshot, asks CBT what
// changed, reads the changed slots through a disk transport, skips zeros, hashes, compresses
// what the hub lacks and uploads it in parallel under a memory cap, resumably.
package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// sessionHub is what the uploader needs from the hub. Both calls are idempotent: RecordSlots
// records the slots whose chunk the hub holds and answers the digests it lacks; PutChunk stores
// a chunk and records the slots that hold it.
type sessionHub interface {
	RecordSlots(ctx context.Context, sessionID string, batch api.SlotBatch) (api.SlotBatchResult, error)
	PutChunk(ctx context.Context, sessionID, digest string, slots []int64, blob []byte) error
}

// Counters are a job's running totals; safe for concurrent use.
type Counters struct {
	BytesRead, BytesSent, BytesDeduplicated, BytesZero atomic.Int64
}

// Snapshot returns the counters as a progress report.
func (c *Counters) Progress() api.JobProgress {
	return api.JobProgress{BytesRead: c.BytesRead.Load(), BytesSent: c.BytesSent.Load(), BytesDeduplicated: c.BytesDeduplicated.Load(), BytesZero: c.BytesZero.Load()}
}

// remove takes the byte counters of o out of c: a disk's, once it is committed, leaves the
// job's running totals, which cover only what the hub has not recorded yet.
func (c *Counters) remove(o *Counters) {
	c.BytesRead.Add(-o.BytesRead.Load())
	c.BytesSent.Add(-o.BytesSent.Load())
	c.BytesDeduplicated.Add(-o.BytesDeduplicated.Load())
	c.BytesZero.Add(-o.BytesZero.Load())
}

// UploadOptions bound the uploader.
type UploadOptions struct {
	// MaxInFlight caps the memory of slots read but not yet acknowledged, with the compression
	// buffers that go with them (default 80 MiB).
	MaxInFlight int64
	// GroupSlots is how many consecutive slots one worker reads and records at once (default 4).
	GroupSlots int
}

// uploadTask describes one disk's upload.
type uploadTask struct {
	SessionID string
	Job       *Counters // also counted here when set (the job's totals)
	Reader    io.ReaderAt
	Capacity  int64
	ChunkSize int64
	Slots     []int64 // the slots to read, ascending
}

// upload reads, hashes and sends the task's slots. Workers each take a group of slots: read
// them, record their digests (the hub answers which chunks it lacks), compress and upload only
// those, and record them again. The number of workers follows from the memory cap, so memory in
// flight never exceeds it.
func upload(ctx context.Context, hub sessionHub, t uploadTask, c *Counters, m *Metrics, opts UploadOptions) error {
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 80 << 20
	}
	if opts.GroupSlots <= 0 {
		opts.GroupSlots = 4
	}
	if len(t.Slots) == 0 {
		return nil
	}
	workers := uploadWorkers(opts.MaxInFlight, opts.GroupSlots, t.ChunkSize)
	groups := make(chan []int64)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(groups)
		for i := 0; i < len(t.Slots); i += opts.GroupSlots {
			select {
			case groups <- t.Slots[i:min(i+opts.GroupSlots, len(t.Slots))]:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	zero := make([]byte, t.ChunkSize)
	for range workers {
		g.Go(func() error {
			w, err := newWorker(hub, t, c, m, opts.GroupSlots, zero)
			if err != nil {
				return err
			}
			defer w.enc.Close()
			for grp := range groups {
				if err := w.group(gctx, grp); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

type worker struct {
	hub sessionHub
	t   uploadTask
	c   *Counters
	m   *Metrics
	// bufs hold a group's slots, each after room for a blob header, so that a chunk is sealed
	// in place and the group's uploads need no buffer of their own.
	bufs [][]byte
	// out is where zstd compresses a slot before the result is copied over the slot's bytes.
	out  []byte
	zero []byte
	enc  *zstd.Encoder
	// sample holds the compressed samples of incompressible.
	sample []byte
}

func newWorker(hub sessionHub, t uploadTask, c *Counters, m *Metrics, group int, zero []byte) (*worker, error) {
	// No zstd frame checksum: the blob header carries a CRC-32C and the hub re-hashes the
	// plaintext with SHA-256 anyway.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	w := &worker{hub: hub, t: t, c: c, m: m, zero: zero, enc: enc, out: make([]byte, 0, chunk.MaxBlobLen(int(t.ChunkSize)))}
	for range group {
		w.bufs = append(w.bufs, make([]byte, chunk.HeaderSize+t.ChunkSize))
	}
	return w, nil
}

// add counts on the disk's counters and, when set, the job's.
func (w *worker) add(f func(c *Counters)) {
	f(w.c)
	if w.t.Job != nil {
		f(w.t.Job)
	}
}

// group handles consecutive slots: read, hash, record, upload what the hub lacks. The uploads
// of a group run at once, so that on a long round trip a worker waits for one answer per group
// rather than one per chunk.
func (w *worker) group(ctx context.Context, slots []int64) error {
	batch := api.SlotBatch{Slots: make([]api.SlotDigest, 0, len(slots))}
	plain := make(map[string][]byte, len(slots))
	blobs := make(map[string][]byte, len(slots)) // the slot's buffer from its header room on
	for i, s := range slots {
		off := s * w.t.ChunkSize
		n := min(w.t.ChunkSize, w.t.Capacity-off)
		buf := w.bufs[i][chunk.HeaderSize : chunk.HeaderSize+n]
		if err := readFull(w.t.Reader, buf, off); err != nil {
			return fmt.Errorf("read slot %d at offset %d: %w", s, off, err)
		}
		w.add(func(c *Counters) { c.BytesRead.Add(n) })
		w.m.readBytes.Add(float64(n))
		var d chunk.Digest
		if bytes.Equal(buf, w.zero[:n]) {
			d = chunk.ZeroDigest(int(n))
			w.add(func(c *Counters) { c.BytesZero.Add(n) })
			w.m.zeroBytes.Add(float64(n))
			w.m.slots.WithLabelValues("zero").Inc()
		} else {
			d = chunk.Sum(buf)
		}
		hex := d.String()
		plain[hex] = buf
		blobs[hex] = w.bufs[i][:chunk.HeaderSize+n]
		batch.Slots = append(batch.Slots, api.SlotDigest{Slot: s, Digest: hex})
	}
	res, err := w.hub.RecordSlots(ctx, w.t.SessionID, batch)
	if err != nil {
		return fmt.Errorf("record slots %d..%d: %w", slots[0], slots[len(slots)-1], err)
	}
	missing := make(map[string]bool, len(res.Missing))
	// Sealing overwrites a slot's bytes (only their length is used afterwards); the uploads then
	// run together, each recording the slots that hold its chunk: one round trip per missing
	// chunk, none more for the group, all of them at once.
	ug, uctx := errgroup.WithContext(ctx)
	for _, d := range res.Missing {
		room, ok := blobs[d]
		if !ok {
			return fmt.Errorf("hub asked for chunk %s that this batch does not hold", d)
		}
		if missing[d] {
			continue // named twice; its blob is sealed already
		}
		var holders []int64
		for _, sd := range batch.Slots {
			if sd.Digest == d {
				holders = append(holders, sd.Slot)
			}
		}
		blob, err := w.seal(room)
		if err != nil {
			return errors.Join(err, ug.Wait())
		}
		missing[d] = true
		ug.Go(func() error {
			if err := w.hub.PutChunk(uctx, w.t.SessionID, d, holders, blob); err != nil {
				return fmt.Errorf("upload chunk %s: %w", d, err)
			}
			w.add(func(c *Counters) { c.BytesSent.Add(int64(len(blob))) })
			w.m.sentBytes.Add(float64(len(blob)))
			return nil
		})
	}
	if err := ug.Wait(); err != nil {
		return err
	}
	for _, sd := range batch.Slots {
		n := int64(len(plain[sd.Digest]))
		switch {
		case missing[sd.Digest]:
			w.m.slots.WithLabelValues("uploaded").Inc()
		case sd.Digest != chunk.ZeroDigest(int(n)).String():
			w.add(func(c *Counters) { c.BytesDeduplicated.Add(n) })
			w.m.dedupBytes.Add(float64(n))
			w.m.slots.WithLabelValues("deduplicated").Inc()
		}
	}
	return nil
}

// seal turns room — chunk.HeaderSize bytes of room, then a slot's bytes — into a chunk blob in
// place: compressed with zstd, or raw when compression does not save at least 1/32 (random
// data, already compressed files). A slot whose samples do not compress (incompressible) is
// stored raw without a compression pass over all of it. The slot's bytes are overwritten.
func (w *worker) seal(room []byte) ([]byte, error) {
	p := room[chunk.HeaderSize:]
	n := len(p)
	blob, codec := room, chunk.CodecRaw
	if !w.incompressible(p) {
		out := w.enc.EncodeAll(p, w.out[:0])
		w.out = out[:0]
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
func (w *worker) incompressible(p []byte) bool {
	if len(p) < 4*sampleLen {
		return false
	}
	in, packed := 0, 0
	for _, off := range [3]int{0, len(p)/2 - sampleLen/2, len(p) - sampleLen} {
		w.sample = w.enc.EncodeAll(p[off:off+sampleLen], w.sample[:0])
		in += sampleLen
		packed += len(w.sample)
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
