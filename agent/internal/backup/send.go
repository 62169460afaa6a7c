package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/sendense/sendense/shared/chunk"
)

// send seals a missing chunk in place with one of the pool's encoders and uploads it. The
// buffer goes back to the pool as soon as the upload has read the blob out of it — the bytes are
// then on their way, and the hub's answer takes a round trip the buffer need not wait for — so
// over a long round trip the budget keeps the link full. An attempt that must be repeated after
// that reads the slot from the disk again into the pool's retry buffer, checks that it still
// hashes to the chunk's digest and seals it again.
func (u *uploader) send(ctx context.Context, mc missingChunk) error {
	blob, err := u.seal(ctx, mc.buf, mc.n)
	if err != nil {
		return err
	}
	cu := &chunkUpload{u: u, ctx: ctx, mc: mc, buf: mc.buf, blob: blob, size: len(blob)}
	copy(cu.header[:], blob)
	done, err := u.pool.startUpload(ctx)
	if err != nil {
		cu.finish()
		return err
	}
	stored, err := u.hub.PutChunk(ctx, u.t.SessionID, mc.digest, mc.holders, int64(len(blob)), cu.body)
	done()
	cu.finish()
	if err != nil {
		return fmt.Errorf("upload chunk %s: %w", mc.name(), err)
	}
	if mc.direct {
		u.mode.uploaded(stored)
		if !stored {
			u.m.uploadsHeld.Inc()
		}
	}
	sent := int64(len(blob))
	u.add(func(c *Counters) { c.BytesSent.Add(sent) })
	u.m.sentBytes.Add(float64(sent))
	u.m.slots.WithLabelValues("uploaded").Add(float64(len(mc.holders)))
	return nil
}

// seal turns the first n bytes of a slot's buffer (after the header room) into a blob in place.
func (u *uploader) seal(ctx context.Context, sb slotBuf, n int64) ([]byte, error) {
	var blob []byte
	err := u.pool.withSealer(ctx, func(s *sealer) error {
		var err error
		blob, err = s.seal(sb.b[:chunk.HeaderSize+n])
		return err
	})
	return blob, err
}

// chunkUpload is one chunk's upload across its attempts: the buffer that holds its sealed blob
// while the upload has not read it to its end, the body of the attempt in progress.
type chunkUpload struct {
	u    *uploader
	ctx  context.Context // the upload's: body is called back without one
	mc   missingChunk
	size int // the blob's length, the same in every attempt
	// header is the first attempt's blob header: its CRC-32C covers the whole blob, so a chunk
	// without a digest read and sealed again must come out with the same header.
	header [chunk.HeaderSize]byte

	mu    sync.Mutex // serializes body and finish
	buf   slotBuf
	retry bool // buf is the pool's retry buffer
	blob  []byte
	cur   *slotBody
	// gone is set when the body read to its end gave the buffer back.
	gone atomic.Bool
}

// body returns a reader of the blob for the next attempt; the reader of the attempt before is
// revoked first, so that a connection still writing it can no longer touch the buffer.
func (cu *chunkUpload) body() (io.Reader, error) {
	cu.mu.Lock()
	defer cu.mu.Unlock()
	if cu.cur != nil {
		cu.cur.revoke()
	}
	if cu.gone.Load() {
		if err := cu.reread(); err != nil {
			return nil, err
		}
	}
	cu.cur = &slotBody{b: cu.blob, done: cu.release}
	return cu.cur, nil
}

// release gives the buffer back: the body was read to its end.
func (cu *chunkUpload) release() {
	cu.gone.Store(true)
	cu.giveBack()
}

// giveBack returns the buffer to where it came from: the budget, or the retry buffer's place.
func (cu *chunkUpload) giveBack() {
	if cu.retry {
		cu.u.pool.putRetry(cu.buf)
		return
	}
	cu.u.put(cu.buf)
}

// finish ends the upload: the last body is revoked and the buffer, when the upload never read
// it to its end (an answer before the whole body, a failure), goes back.
func (cu *chunkUpload) finish() {
	cu.mu.Lock()
	defer cu.mu.Unlock()
	if cu.cur != nil {
		cu.cur.revoke()
	}
	if !cu.gone.Load() {
		cu.gone.Store(true)
		cu.giveBack()
	}
}

// errChunkChanged is a slot read again for a repeated upload that no longer hashes to its chunk.
var errChunkChanged = errors.New("the slot read again does not hold its chunk's bytes: the disk changed under the snapshot")

// reread takes the pool's retry buffer (the upload holds none), reads the chunk's first slot
// into it again, checks its digest and seals it; the blob must come out as long as the first
// one, and for a chunk without a digest (the hub names it) with the same header, hence the same
// CRC-32C. The retry buffer is not part of the budget: a sender waiting for the budget would wait
// for readers that wait for senders.
func (cu *chunkUpload) reread() error {
	u, mc := cu.u, cu.mc
	sb, err := u.pool.getRetry(cu.ctx, chunk.HeaderSize+int(u.t.ChunkSize))
	if err != nil {
		return err
	}
	off := mc.holders[0] * u.t.ChunkSize
	p := sb.b[chunk.HeaderSize : chunk.HeaderSize+mc.n]
	err = readFull(u.t.Reader, p, off)
	if err == nil && mc.digest != "" && chunk.Sum(p).String() != mc.digest {
		err = fmt.Errorf("slot %d: %w", mc.holders[0], errChunkChanged)
	}
	var blob []byte
	if err == nil {
		blob, err = u.seal(cu.ctx, sb, mc.n)
	}
	switch {
	case err != nil:
	case mc.digest == "" && !bytes.Equal(blob[:chunk.HeaderSize], cu.header[:]):
		err = fmt.Errorf("slot %d: sealed again into another blob: %w", mc.holders[0], errChunkChanged)
	case len(blob) != cu.size:
		err = fmt.Errorf("slot %d sealed again into %d bytes, not %d", mc.holders[0], len(blob), cu.size)
	}
	if err != nil {
		u.pool.putRetry(sb)
		return fmt.Errorf("read chunk %s again for another attempt: %w", mc.name(), err)
	}
	u.m.readBytes.Add(float64(mc.n))
	cu.buf, cu.blob, cu.retry = sb, blob, true
	cu.gone.Store(false)
	return nil
}

// errRevoked is what a body revoked by a later attempt answers to a connection still reading it.
var errRevoked = errors.New("chunk body replaced by a later attempt")

// slotBody reads a blob held in a pooled buffer and calls done once when it has been read to
// its end: from then on the buffer is no longer this reader's. Revoked, it reads nothing more.
type slotBody struct {
	mu      sync.Mutex
	b       []byte // nil once read to the end or revoked
	off     int
	ended   bool
	revoked bool
	done    func()
}

func (r *slotBody) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.ended:
		return 0, io.EOF
	case r.revoked:
		return 0, errRevoked
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	if r.off == len(r.b) {
		r.b, r.ended = nil, true
		r.done()
	}
	return n, nil
}

// Len is the number of bytes left, which tells the HTTP client the length of the body.
func (r *slotBody) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b == nil {
		return 0
	}
	return len(r.b) - r.off
}

// revoke stops the reader from touching the buffer; it waits for a read in progress.
func (r *slotBody) revoke() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ended {
		r.b, r.revoked = nil, true
	}
}
