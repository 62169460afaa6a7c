package repository

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/shared/chunk"
)

// ErrChunkSound: QuarantineChunk read the chunk again after moving it aside and found it sound
// (a copy stored after the caller saw the damage); the chunk is back under its key.
var ErrChunkSound = errors.New("chunk is sound")

// quarantinePrefix holds damaged chunks moved out of chunks/, one object per quarantine:
// quarantine/<name hex>.<unix nanoseconds>, the name being ChunkName of the digest. The time keeps two quarantines of one digest (the
// chunk damaged, uploaded again, damaged again) apart.
const quarantinePrefix = "quarantine/"

func quarantineKey(d chunk.Digest, at time.Time) string {
	return quarantinePrefix + d.String() + "." + strconv.FormatInt(at.UnixNano(), 10)
}

// Quarantined is one damaged chunk object kept in quarantine.
type Quarantined struct {
	Key string
	// Digest is the chunk's stored name: its digest in a plain repository, the keyed name
	// (ChunkName) in an encrypted one.
	Digest chunk.Digest
	At     time.Time // when it was quarantined
	Size   int64
}

// QuarantineChunk moves chunk d, which a read found damaged, out of the chunk namespace and
// returns the key it went to (quarantine/<digest>.<unix nanoseconds>). From then on HasChunk,
// MissingChunks, TouchChunk and ReadChunk find no chunk d: the next backup holding its bytes is
// told the chunk is missing and uploads it again, PutChunk stores a fresh, checked copy, and
// WriteIndex refuses an index naming d until then. The damaged object is kept for an operator to
// inspect (WalkQuarantine) and removed by nobody else: garbage collection only sees chunks/.
//
// Only damage is quarantined. The object is checked again after the move, as ReadChunk checks
// it; when it is sound — a copy stored after the caller saw the damage, once another process
// had quarantined the damaged one — it goes back under its key (or is dropped when yet another
// copy took the key meanwhile) and ErrChunkSound is returned. When the moved object cannot be
// read back for another reason (an I/O error says nothing about the chunk), it goes back too and
// the error is returned. ErrChunkNotFound when there is no chunk d. Callers quarantine only after
// a read returned ErrChunkDamaged, never after ErrChunkNotFound or an I/O error.
//
// Of concurrent quarantines of d, in any process, one moves the object and the others return
// ErrChunkNotFound; within this process a PutChunk of d waits until the quarantine is done (and
// then stores the chunk again). Once the object is moved, the rest runs to its end even when ctx
// ends, so that a sound chunk is never left in quarantine by a cancelled caller.
func (r *Repository) QuarantineChunk(ctx context.Context, d chunk.Digest) (key string, err error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("quarantine chunk %s: %w", d, err)
	}
	unlock, err := r.lockDigest(ctx, d)
	if err != nil {
		return "", fmt.Errorf("quarantine chunk %s: %w", d, err)
	}
	defer unlock()
	key = quarantineKey(r.ChunkName(d), time.Now())
	switch err := r.store.Rename(ctx, r.keyOf(d), key); {
	case errors.Is(err, store.ErrNotFound):
		return "", fmt.Errorf("quarantine chunk %s: %w", d, ErrChunkNotFound)
	case err != nil:
		return "", fmt.Errorf("quarantine chunk %s: %w", d, err)
	}
	ctx = context.WithoutCancel(ctx)
	bp := r.payloadBufs.Get(r.maxBlob)
	defer r.payloadBufs.Put(bp)
	blob, err := r.store.Get(ctx, key, bp, int64(r.maxBlob))
	switch {
	case errors.Is(err, store.ErrTooLarge):
		return key, nil // damaged: no chunk of this repository is that large
	case err != nil:
		return "", fmt.Errorf("quarantine chunk %s: read it back: %w", d, errors.Join(err, r.unquarantine(ctx, d, key)))
	}
	pp := r.plainBufs.Get(int(r.desc.ChunkSize))
	defer r.plainBufs.Put(pp)
	if _, err := r.openStored(d, blob, pp); err != nil {
		return key, nil
	}
	if err := r.unquarantine(ctx, d, key); err != nil {
		return "", fmt.Errorf("quarantine chunk %s: put a sound chunk back: %w", d, err)
	}
	return "", fmt.Errorf("quarantine chunk %s: %w", d, ErrChunkSound)
}

// unquarantine moves the quarantined object key back to chunk d's key, or removes it when
// another copy of the chunk holds the key now.
func (r *Repository) unquarantine(ctx context.Context, d chunk.Digest, key string) error {
	err := r.store.Rename(ctx, key, r.keyOf(d))
	if errors.Is(err, store.ErrExists) {
		return r.store.Remove(ctx, key)
	}
	return err
}

// WalkQuarantine calls fn for every quarantined chunk object, in key order (by digest, then
// time). Objects in quarantine/ that QuarantineChunk did not name are skipped. An error from fn
// stops the walk and is returned as is.
func (r *Repository) WalkQuarantine(ctx context.Context, fn func(q Quarantined) error) error {
	var fnErr error
	err := r.store.List(ctx, quarantinePrefix, func(info store.Info) error {
		q, ok := parseQuarantineKey(info.Key)
		if !ok {
			return nil
		}
		q.Size = info.Size
		fnErr = fn(q)
		return fnErr
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return fmt.Errorf("walk quarantine: %w", err)
	}
	return nil
}

func parseQuarantineKey(key string) (Quarantined, bool) {
	rest, ok := strings.CutPrefix(key, quarantinePrefix)
	hexPart, nanos, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return Quarantined{}, false
	}
	d, err := chunk.ParseDigest(hexPart)
	if err != nil {
		return Quarantined{}, false
	}
	ns, err := strconv.ParseInt(nanos, 10, 64)
	if err != nil || quarantineKey(d, time.Unix(0, ns)) != key {
		return Quarantined{}, false
	}
	return Quarantined{Key: key, Digest: d, At: time.Unix(0, ns).UTC()}, true
}
