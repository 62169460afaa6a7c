package repository

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/shared/chunk"
)

// Errors of chunks. Callers branch on them with errors.Is; every returned error names
// the digest concerned.
var (
	// ErrChunkNotFound: the repository holds no chunk with that digest.
	ErrChunkNotFound = errors.New("chunk not found")
	// ErrChunkDamaged: the stored chunk cannot be read back as the plaintext its digest names
	// (bad framing, CRC mismatch, undecodable payload, or content that hashes differently). It
	// also wraps the underlying chunk.Err* when there is one.
	ErrChunkDamaged = errors.New("chunk damaged")
	// ErrBadBlob: an uploaded blob is malformed: bad framing or CRC (wrapping the chunk.Err*
	// cause), an undecodable payload, or a plaintext larger than the repository's chunk size.
	ErrBadBlob = errors.New("bad chunk blob")
	// ErrDigestMismatch: an uploaded blob is well formed but its plaintext does not hash to the
	// digest it was uploaded under.
	ErrDigestMismatch = errors.New("chunk digest mismatch")
	// ErrZeroChunk: an upload of an all-zero chunk. Zero slots are recognised by digest and never
	// stored.
	ErrZeroChunk = errors.New("zero chunks are not stored")
)

const chunkPrefix = "chunks/"

// chunkKey is chunks/ab/cd/<hex> of a chunk's stored name: two levels of 256 prefixes keep
// every listing level small.
func chunkKey(name chunk.Digest) string {
	return chunkPrefix + hex.EncodeToString(name[0:1]) + "/" + hex.EncodeToString(name[1:2]) + "/" + name.String()
}

// ChunkName returns the name the chunk with digest d is stored under: d itself in a plain
// repository, its keyed name (seal.go) in an encrypted one. WalkChunks reports names, and
// RemoveChunkIfOlder takes one; a caller that holds digests (an index, an upload session)
// compares them with ChunkName of each.
func (r *Repository) ChunkName(d chunk.Digest) chunk.Digest {
	if r.seal == nil {
		return d
	}
	return r.seal.name(d)
}

// keyOf is the store key of the chunk with digest d.
func (r *Repository) keyOf(d chunk.Digest) string { return chunkKey(r.ChunkName(d)) }

// HasChunk reports whether the repository holds a chunk with digest d. It does not read the
// chunk; VerifyChunk does.
func (r *Repository) HasChunk(ctx context.Context, d chunk.Digest) (bool, error) {
	_, err := r.store.Stat(ctx, r.keyOf(d))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("chunk %s: %w", d, err)
	}
}

// MissingChunks returns the digests of ds that the repository does not hold, each once, in the
// order of ds. An agent asks this before uploading, so known chunks cost no transfer. Zero
// digests are reported like any other; callers should not ask for zero slots.
func (r *Repository) MissingChunks(ctx context.Context, ds []chunk.Digest) ([]chunk.Digest, error) {
	var missing []chunk.Digest
	seen := make(map[chunk.Digest]struct{}, len(ds))
	for _, d := range ds {
		if _, dup := seen[d]; dup {
			continue
		}
		seen[d] = struct{}{}
		ok, err := r.HasChunk(ctx, d)
		if err != nil {
			return nil, err
		}
		if !ok {
			missing = append(missing, d)
		}
	}
	return missing, nil
}

// PutChunk stores blob (a shared/chunk blob) under digest d and reports whether it wrote it.
//
// The blob is checked completely before anything is written: framing and CRC, a plaintext no
// larger than the chunk size, decoding (raw or zstd, never expanding beyond the chunk size), the
// plaintext length, and the SHA-256 of the plaintext against d. A malformed blob returns
// ErrBadBlob, a well-formed blob of other content ErrDigestMismatch, the zero chunk ErrZeroChunk;
// in each case nothing is stored. The blob is checked even when the chunk exists already.
//
// When the chunk exists, PutChunk returns stored=false and leaves its content untouched (chunks
// are immutable) but refreshes its time, as TouchChunk does. Otherwise it returns stored=true
// only once the chunk is durable. PutChunk is idempotent and safe for concurrent calls with the
// same or different digests; within one process exactly one of concurrent puts of a new chunk
// reports it stored.
//
// "Durable" depends on the repository's Durability (durability.go): in the per-commit mode the
// chunk is complete and visible at once and made durable by the next WriteIndex, before the index
// that names it.
func (r *Repository) PutChunk(ctx context.Context, d chunk.Digest, blob []byte) (stored bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	h, payload, got, err := r.checkBlob(blob)
	if err == nil && got != d {
		err = fmt.Errorf("%w: plaintext hashes to %s", ErrDigestMismatch, got)
	}
	if err != nil {
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	return r.storeChunk(ctx, d, h, payload, blob)
}

// PutBlob is PutChunk for a blob that comes without a name: the repository names it by the
// SHA-256 of its plaintext, which it computes to check the blob anyway, and returns that name.
// An uploader that sends data it is not asked about (a full backup of new data) so spares the
// hash it would compute only to name the chunk. The checks, errors (except ErrDigestMismatch) and
// durability are PutChunk's.
func (r *Repository) PutBlob(ctx context.Context, blob []byte) (d chunk.Digest, stored bool, err error) {
	if err := ctx.Err(); err != nil {
		return d, false, fmt.Errorf("put blob: %w", err)
	}
	h, payload, d, err := r.checkBlob(blob)
	if err != nil {
		return d, false, fmt.Errorf("put blob: %w", err)
	}
	stored, err = r.storeChunk(ctx, d, h, payload, blob)
	return d, stored, err
}

// storeChunk stores a checked blob of header h and payload under d unless the chunk exists.
func (r *Repository) storeChunk(ctx context.Context, d chunk.Digest, h chunk.Header, payload, blob []byte) (stored bool, err error) {
	unlock, err := r.lockDigest(ctx, d)
	if err != nil {
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	defer unlock()
	// Touch first: it both tells whether the chunk exists and, when it does, refreshes its time
	// so that garbage collection in any process spares it. A chunk garbage collection takes at
	// the same moment makes Touch report it missing, and then it is written again.
	switch err := r.store.Touch(ctx, r.keyOf(d)); {
	case err == nil:
		return false, nil
	case !errors.Is(err, store.ErrNotFound):
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	if r.seal != nil {
		bp := r.payloadBufs.Get(r.maxBlob)
		defer r.payloadBufs.Put(bp)
		if blob, err = r.seal.sealChunk(bp, r.keyOf(d), h, payload); err != nil {
			return false, fmt.Errorf("put chunk %s: seal: %w", d, err)
		}
	}
	if err := r.putChunkBlob(ctx, r.keyOf(d), blob); err != nil {
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	return true, nil
}

// checkBlob verifies that blob is a well-formed, unsealed blob of a chunk that is not all zero,
// and returns its header, payload and the SHA-256 of its plaintext.
func (r *Repository) checkBlob(blob []byte) (h chunk.Header, payload []byte, sum chunk.Digest, err error) {
	if maxLen := chunk.MaxBlobLen(int(r.desc.ChunkSize)); len(blob) > maxLen {
		return h, nil, sum, fmt.Errorf("%w: %d bytes, more than the %d a chunk of %d bytes may take", ErrBadBlob, len(blob), maxLen, r.desc.ChunkSize)
	}
	h, payload, err = chunk.OpenBlob(blob)
	if err != nil {
		return h, nil, sum, fmt.Errorf("%w: %w", ErrBadBlob, err)
	}
	if h.Sealed() {
		// Only the hub seals, with the repository's key: an uploaded blob is always plain.
		return h, nil, sum, fmt.Errorf("%w: an uploaded blob must not be sealed", ErrBadBlob)
	}
	if int64(h.PlaintextLen) > r.desc.ChunkSize {
		return h, nil, sum, fmt.Errorf("%w: plaintext of %d bytes exceeds the chunk size %d", ErrBadBlob, h.PlaintextLen, r.desc.ChunkSize)
	}
	var plain []byte
	switch h.Codec {
	case chunk.CodecRaw:
		plain = payload
	default:
		r.decoding <- struct{}{}
		defer func() { <-r.decoding }()
		bp := r.plainBufs.Get(int(r.desc.ChunkSize))
		defer r.plainBufs.Put(bp)
		if plain, err = r.decode(h, payload, bp); err != nil {
			return h, nil, sum, fmt.Errorf("%w: %w", ErrBadBlob, err)
		}
	}
	sum = chunk.Sum(plain)
	if sum == chunk.ZeroDigest(len(plain)) {
		return h, nil, sum, ErrZeroChunk
	}
	return h, payload, sum, nil
}

// decode returns the plaintext of a payload whose header h has been checked, written over dst
// (reallocated when too small). The output is capped at h.PlaintextLen bytes while decoding, so a
// payload that expands further fails without allocating more.
func (r *Repository) decode(h chunk.Header, payload, dst []byte) ([]byte, error) {
	n := int(h.PlaintextLen)
	if cap(dst) < n {
		dst = make([]byte, 0, n)
	}
	switch h.Codec {
	case chunk.CodecRaw:
		return append(dst[:0], payload...), nil
	case chunk.CodecZstd:
		// With WithDecodeAllCapLimit the decoder stops at cap(dst), here exactly n bytes.
		out, err := r.dec.DecodeAll(payload, dst[:0:n])
		if err != nil {
			return nil, fmt.Errorf("decode zstd payload: %w", err)
		}
		if len(out) != n {
			return nil, fmt.Errorf("zstd payload decodes to %d bytes, header says %d", len(out), n)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: %d", chunk.ErrUnknownCodec, uint8(h.Codec))
	}
}

// lockDigest waits until no other PutChunk of d is in progress in this process and claims d;
// the returned function releases it.
func (r *Repository) lockDigest(ctx context.Context, d chunk.Digest) (unlock func(), err error) {
	for {
		r.mu.Lock()
		busy, ok := r.inflight[d]
		if !ok {
			mine := make(chan struct{})
			r.inflight[d] = mine
			r.mu.Unlock()
			return func() {
				r.mu.Lock()
				delete(r.inflight, d)
				r.mu.Unlock()
				close(mine)
			}, nil
		}
		r.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ReadChunk returns the plaintext of chunk d, written over dst's storage when cap(dst) suffices
// (the result is dst[:n]) and in a new slice otherwise. It checks the framing and CRC, decodes,
// and re-hashes the plaintext: it never returns bytes other than those d names. A missing chunk
// returns ErrChunkNotFound, one that fails any check ErrChunkDamaged; other errors are I/O
// errors. Zero slots are never stored, so reading a zero digest returns ErrChunkNotFound.
func (r *Repository) ReadChunk(ctx context.Context, d chunk.Digest, dst []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", d, err)
	}
	out, err := r.readChunk(ctx, d, dst)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s: %w", d, err)
	}
	return out, nil
}

// PrefetchChunk starts reading chunk d in the background when the store can (a local
// directory), so that a ReadChunk soon after does not wait for the disk. It is only a hint.
func (r *Repository) PrefetchChunk(d chunk.Digest) {
	if p, ok := r.store.(store.Prefetcher); ok {
		p.Prefetch(r.keyOf(d))
	}
}

func (r *Repository) readChunk(ctx context.Context, d chunk.Digest, dst []byte) ([]byte, error) {
	bp := r.payloadBufs.Get(r.maxBlob)
	defer r.payloadBufs.Put(bp)
	blob, err := r.store.Get(ctx, r.keyOf(d), bp, int64(r.maxBlob))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, ErrChunkNotFound
	case errors.Is(err, store.ErrTooLarge):
		return nil, fmt.Errorf("%w: %w", ErrChunkDamaged, err)
	case err != nil:
		return nil, err
	}
	return r.openStored(d, blob, dst)
}

// openStored checks a stored blob of chunk d as ReadChunk does and returns its plaintext over
// dst: an error wrapping ErrChunkDamaged when it fails any check.
func (r *Repository) openStored(d chunk.Digest, blob, dst []byte) ([]byte, error) {
	plain, err := r.openBlob(r.keyOf(d), blob, dst)
	if err != nil {
		return nil, err
	}
	if got := chunk.Sum(plain); got != d {
		return nil, fmt.Errorf("%w: plaintext hashes to %s", ErrChunkDamaged, got)
	}
	return plain, nil
}

// openBlob checks the framing and CRC of a blob stored under key, opens its seal and decodes its
// plaintext over dst: an error wrapping ErrChunkDamaged when any of that fails.
func (r *Repository) openBlob(key string, blob, dst []byte) ([]byte, error) {
	h, err := chunk.ParseHeader(blob[:min(len(blob), chunk.HeaderSize)])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChunkDamaged, err)
	}
	if int64(h.PlaintextLen) > r.desc.ChunkSize {
		return nil, fmt.Errorf("%w: plaintext of %d bytes exceeds the chunk size %d", ErrChunkDamaged, h.PlaintextLen, r.desc.ChunkSize)
	}
	payload := blob[chunk.HeaderSize:]
	if err := h.Check(payload); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChunkDamaged, err)
	}
	switch {
	case r.seal != nil:
		if payload, err = r.seal.openChunk(key, h, payload); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrChunkDamaged, err)
		}
	case h.Sealed():
		return nil, fmt.Errorf("%w: a sealed blob in a repository that is not encrypted", ErrChunkDamaged)
	}
	plain, err := r.decode(h, payload, dst)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChunkDamaged, err)
	}
	return plain, nil
}

// VerifyChunk re-reads chunk d and re-hashes its plaintext. It returns nil for a sound chunk,
// ErrChunkNotFound or ErrChunkDamaged otherwise (or an I/O error).
func (r *Repository) VerifyChunk(ctx context.Context, d chunk.Digest) error {
	bp := r.plainBufs.Get(int(r.desc.ChunkSize))
	defer r.plainBufs.Put(bp)
	_, err := r.ReadChunk(ctx, d, bp)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	return nil
}

// RemoveChunk deletes chunk d durably; ErrChunkNotFound when there is none. Unlike
// RemoveChunkIfOlder it does not spare a chunk in use: callers must know that no index, open
// upload or backup in any process needs it.
func (r *Repository) RemoveChunk(ctx context.Context, d chunk.Digest) error {
	if err := r.store.Remove(ctx, r.keyOf(d)); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("remove chunk %s: %w", d, ErrChunkNotFound)
	} else if err != nil {
		return fmt.Errorf("remove chunk %s: %w", d, err)
	}
	return nil
}

// WalkChunks calls fn for every chunk of the repository, in name order, with its stored name
// (ChunkName: the digest itself in a plain repository), the size of its blob file and its
// modification time (the time it was stored). Files in chunks/ that are not
// chunk blobs in their proper place are skipped. Chunks stored or removed during the walk may or
// may not be visited. An error from fn stops the walk and is returned as is.
func (r *Repository) WalkChunks(ctx context.Context, fn func(name chunk.Digest, size int64, modTime time.Time) error) error {
	var fnErr error
	err := r.store.List(ctx, chunkPrefix, func(info store.Info) error {
		d, ok := parseChunkKey(info.Key)
		if !ok {
			return nil
		}
		fnErr = fn(d, info.Size, info.ModTime)
		return fnErr
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return fmt.Errorf("walk chunks: %w", err)
	}
	return nil
}

// parseChunkKey returns the name of a key that is exactly chunkKey of it.
func parseChunkKey(key string) (chunk.Digest, bool) {
	rest, _ := strings.CutPrefix(key, chunkPrefix)
	i := strings.LastIndexByte(rest, '/')
	d, err := chunk.ParseDigest(rest[i+1:])
	if err != nil || chunkKey(d) != key {
		return chunk.Digest{}, false
	}
	return d, true
}

// Stats counts the chunks of the repository and the bytes their blob files take.
func (r *Repository) Stats(ctx context.Context) (chunks int64, bytes int64, err error) {
	err = r.WalkChunks(ctx, func(_ chunk.Digest, size int64, _ time.Time) error {
		chunks++
		bytes += size
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("repository stats: %w", err)
	}
	return chunks, bytes, nil
}

// TouchChunk sets a chunk's modification time to now; ErrChunkNotFound when there is none. A
// backup that reuses an existing chunk touches it, so that garbage collection, which only
// removes unreferenced chunks older than its cutoff, cannot remove it between the backup's
// decision and its index. When TouchChunk returns nil, no RemoveChunkIfOlder with an earlier
// cutoff, in any process, removes the chunk; when it races with one that wins, it returns
// ErrChunkNotFound and the caller must upload the chunk again.
func (r *Repository) TouchChunk(ctx context.Context, d chunk.Digest) error {
	if err := r.store.Touch(ctx, r.keyOf(d)); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("touch chunk %s: %w", d, ErrChunkNotFound)
	} else if err != nil {
		return fmt.Errorf("touch chunk %s: %w", d, err)
	}
	return nil
}

// ClockMargin is how far the times of the store's objects may lag this host's clock (an S3
// server's clock, whole seconds): garbage collection moves its cutoff back by at least this
// much. Zero for a local directory, whose times come from this host's kernel.
func (r *Repository) ClockMargin() time.Duration {
	if m, ok := r.store.(interface{ ClockMargin() time.Duration }); ok {
		return m.ClockMargin()
	}
	return 0
}

// TouchHolds is how long TouchChunk keeps a chunk from removal when that is not for good (a
// store that retains touched objects rather than moving their time: S3 Object Lock), else 0.
func (r *Repository) TouchHolds() time.Duration {
	if h, ok := r.store.(interface{ TouchHolds() time.Duration }); ok {
		return h.TouchHolds()
	}
	return 0
}

// RemovalParallelism is how many RemoveChunkIfOlder calls garbage collection runs at once: what
// the store suggests (an S3 store, whose removals are remote requests), else 1 (a local
// directory, whose removals are a few system calls each).
func (r *Repository) RemovalParallelism() int {
	if p, ok := r.store.(interface{ RemovalParallelism() int }); ok {
		return max(p.RemovalParallelism(), 1)
	}
	return 1
}

// RemoveChunkIfOlder removes the chunk stored under name (ChunkName of its digest, as WalkChunks
// reports it) only if its modification time is before cutoff, and reports whether it removed it
// and its size. A chunk that a backup touched or stored at or after
// cutoff survives, whichever process did it (see store.Store's RemoveIfOlder). A missing chunk
// is not an error.
func (r *Repository) RemoveChunkIfOlder(ctx context.Context, name chunk.Digest, cutoff time.Time) (bool, int64, error) {
	removed, size, err := r.store.RemoveIfOlder(ctx, chunkKey(name), cutoff)
	if err != nil {
		return false, 0, fmt.Errorf("remove chunk %s: %w", name, err)
	}
	return removed, size, nil
}
