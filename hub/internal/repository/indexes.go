package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository/store"
)

// Errors of the index store. Callers branch on them with errors.Is; every returned error names
// the index concerned.
var (
	// ErrIndexNotFound: no index is stored under that reference.
	ErrIndexNotFound = errors.New("index not found")
	// ErrIndexExists: a different index is stored under that reference already. Indexes are
	// immutable; writing identical content again is not an error.
	ErrIndexExists = errors.New("a different index exists under this reference")
	// ErrIndexDamaged: the stored index file fails its checks (wrapping the fidx.Err* cause).
	ErrIndexDamaged = errors.New("index damaged")
	// ErrMissingChunk: WriteIndex was given an index naming a chunk the repository lacks.
	ErrMissingChunk = errors.New("index names a missing chunk")
	// ErrInvalidIndex: an index that does not fit this repository (another chunk size, or sizes
	// fidx refuses).
	ErrInvalidIndex = errors.New("invalid index")
	// ErrInvalidRef: an IndexRef component that is not a safe file name.
	ErrInvalidRef = errors.New("invalid index reference")
)

// MaxRefComponentLen bounds each IndexRef component, in bytes (file systems allow 255).
const MaxRefComponentLen = 200

const (
	indexPrefix = "indexes/"
	indexExt    = ".fidx"
	// indexLimit bounds what ReadIndex reads: the largest index fidx accepts.
	indexLimit = fidx.HeaderSize + 32*fidx.MaxSlots + fidx.TrailerSize
)

// IndexRef names one index: one disk of one VM at one backup. Each component becomes a key
// component of indexes/<VMUUID>/<DiskID>/<BackupID>.fidx.
type IndexRef struct {
	VMUUID   string
	DiskID   string
	BackupID string
}

// String returns the reference as "vm/disk/backup".
func (r IndexRef) String() string {
	return r.VMUUID + "/" + r.DiskID + "/" + r.BackupID
}

// Validate checks that every component is a safe file name: 1 to MaxRefComponentLen bytes of
// valid UTF-8, not starting with "." (which also excludes "." and ".."), and without "/", "\",
// NUL or other control characters.
func (r IndexRef) Validate() error {
	for _, c := range []struct{ name, v string }{{"vm uuid", r.VMUUID}, {"disk id", r.DiskID}, {"backup id", r.BackupID}} {
		if err := checkComponent(c.v); err != nil {
			return fmt.Errorf("%w: %s %q: %s", ErrInvalidRef, c.name, c.v, err)
		}
	}
	return nil
}

func checkComponent(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxRefComponentLen:
		return fmt.Errorf("%d bytes, more than %d", len(s), MaxRefComponentLen)
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case strings.HasPrefix(s, "."):
		return errors.New(`starts with "."`)
	}
	for _, c := range s {
		if c == '/' || c == '\\' || c < 0x20 || c == 0x7f {
			return fmt.Errorf("contains %q", c)
		}
	}
	return nil
}

func indexKey(r IndexRef) string {
	return indexPrefix + r.VMUUID + "/" + r.DiskID + "/" + r.BackupID + indexExt
}

// WriteIndex stores idx under ref and returns the SHA-256 (lowercase hex) of the index file
// (of its plaintext, in an encrypted repository, where the file is sealed), which the catalog can
// record to check the file later.
//
// It first checks that every chunk idx names (fidx.Index.Referenced: all but zero slots) is in
// the repository, and refuses with ErrMissingChunk naming one that is not, writing nothing.
// It then writes durably: when it returns nil the index survives a crash. Indexes are immutable: writing the same content again returns nil,
// different content ErrIndexExists (checked within this process: two processes must not write
// one reference). An index of another chunk size returns ErrInvalidIndex. Safe for concurrent
// use.
func (r *Repository) WriteIndex(ctx context.Context, ref IndexRef, idx *fidx.Index) (digest string, err error) {
	if err := ref.Validate(); err != nil {
		return "", fmt.Errorf("write index: %w", err)
	}
	if idx.ChunkSize != r.desc.ChunkSize {
		return "", fmt.Errorf("write index %s: %w: chunk size %d, repository uses %d", ref, ErrInvalidIndex, idx.ChunkSize, r.desc.ChunkSize)
	}
	b, err := idx.MarshalBinary()
	if err != nil {
		return "", fmt.Errorf("write index %s: %w: %w", ref, ErrInvalidIndex, err)
	}
	for i, d := range idx.Referenced() {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return "", fmt.Errorf("write index %s: %w", ref, err)
			}
		}
		ok, err := r.HasChunk(ctx, d)
		if err != nil {
			return "", fmt.Errorf("write index %s: %w", ref, err)
		}
		if !ok {
			return "", fmt.Errorf("write index %s: %w: %s", ref, ErrMissingChunk, d)
		}
	}
	sum := sha256.Sum256(b)
	digest = hex.EncodeToString(sum[:])

	key := indexKey(ref)
	stored, err := r.sealObject(key, b)
	if err != nil {
		return "", fmt.Errorf("write index %s: %w", ref, err)
	}

	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	old, err := r.store.Get(ctx, key, nil, int64(len(stored)))
	switch {
	case err == nil && r.sameObject(key, old, b):
		return digest, nil
	case err == nil, errors.Is(err, store.ErrTooLarge):
		return "", fmt.Errorf("write index %s: %w", ref, ErrIndexExists)
	case !errors.Is(err, store.ErrNotFound):
		return "", fmt.Errorf("write index %s: %w", ref, err)
	}
	// Every chunk named exists; make them durable, whoever wrote them, before the index is
	// (durability.go). A refused write changes nothing, so this comes after the checks.
	if err := r.syncChunks(ctx); err != nil {
		return "", fmt.Errorf("write index %s: %w", ref, err)
	}
	if err := r.store.Put(ctx, key, stored); err != nil {
		return "", fmt.Errorf("write index %s: %w", ref, err)
	}
	return digest, nil
}

// ReadIndex reads and checks the index stored under ref: ErrIndexNotFound when there is none,
// ErrIndexDamaged when the file fails fidx's checks (magic, sizes, trailer) or does not match
// the repository's chunk size.
func (r *Repository) ReadIndex(ctx context.Context, ref IndexRef) (*fidx.Index, error) {
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read index %s: %w", ref, err)
	}
	b, err := r.store.Get(ctx, indexKey(ref), nil, indexLimit+r.objectOverhead())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("read index %s: %w", ref, ErrIndexNotFound)
	case errors.Is(err, store.ErrTooLarge):
		return nil, fmt.Errorf("read index %s: %w: %w", ref, ErrIndexDamaged, err)
	case err != nil:
		return nil, fmt.Errorf("read index %s: %w", ref, err)
	}
	if b, err = r.openObject(indexKey(ref), b); err != nil {
		return nil, fmt.Errorf("read index %s: %w: %w", ref, ErrIndexDamaged, err)
	}
	var x fidx.Index
	if err := x.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("read index %s: %w: %w", ref, ErrIndexDamaged, err)
	}
	if x.ChunkSize != r.desc.ChunkSize {
		return nil, fmt.Errorf("read index %s: %w: chunk size %d, repository uses %d", ref, ErrIndexDamaged, x.ChunkSize, r.desc.ChunkSize)
	}
	return &x, nil
}

// RemoveIndex deletes the index stored under ref durably (ErrIndexNotFound when there is none).
// The chunks it named stay until garbage collection.
func (r *Repository) RemoveIndex(ctx context.Context, ref IndexRef) error {
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("remove index: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove index %s: %w", ref, err)
	}
	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	if err := r.store.Remove(ctx, indexKey(ref)); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("remove index %s: %w", ref, ErrIndexNotFound)
	} else if err != nil {
		return fmt.Errorf("remove index %s: %w", ref, err)
	}
	return nil
}

// RemoveDamagedIndex removes the index under ref when it is there and does not read back sound
// (ErrIndexDamaged), so that it can be written again, and leaves a sound or absent one as it is.
// A damaged index under a retention date (S3 Object Lock), which no one can remove before that
// date, is hidden instead (store.Hider): the key reads as absent, and its retained versions go
// with the key's removal once their dates passed.
func (r *Repository) RemoveDamagedIndex(ctx context.Context, ref IndexRef) error {
	r.indexMu.Lock() // the index is judged and removed at once: not one written meanwhile
	defer r.indexMu.Unlock()
	if _, err := r.ReadIndex(ctx, ref); !errors.Is(err, ErrIndexDamaged) {
		return nil // sound, absent (written next), or unreadable for a reason the write reports
	}
	if err := r.removeOrHide(ctx, indexKey(ref)); err != nil {
		return fmt.Errorf("remove the damaged index %s: %w", ref, err)
	}
	return nil
}

// removeOrHide removes the object under key, or hides it where a retention date keeps it and
// the store can (store.Hider). A missing object is not an error.
func (r *Repository) removeOrHide(ctx context.Context, key string) error {
	err := r.store.Remove(ctx, key)
	if h, ok := r.store.(store.Hider); ok && errors.Is(err, store.ErrRetained) {
		err = h.Hide(ctx, key)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// WalkIndexes calls fn for every index of the repository, in ascending order of their keys.
// Entries that are not index files with valid reference components are skipped. Indexes written
// or removed during the walk may or may not be visited. An error from fn stops the walk and is
// returned as is.
func (r *Repository) WalkIndexes(ctx context.Context, fn func(ref IndexRef) error) error {
	var fnErr error
	err := r.store.List(ctx, indexPrefix, func(info store.Info) error {
		parts := strings.Split(strings.TrimPrefix(info.Key, indexPrefix), "/")
		if len(parts) != 3 {
			return nil
		}
		backup, ok := strings.CutSuffix(parts[2], indexExt)
		ref := IndexRef{VMUUID: parts[0], DiskID: parts[1], BackupID: backup}
		if !ok || ref.Validate() != nil {
			return nil
		}
		fnErr = fn(ref)
		return fnErr
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return fmt.Errorf("walk indexes: %w", err)
	}
	return nil
}

// sealObject returns what the repository stores for an index or VM configuration of content
// plain under key: plain itself, or its sealed envelope in an encrypted repository.
func (r *Repository) sealObject(key string, plain []byte) ([]byte, error) {
	if r.seal == nil {
		return plain, nil
	}
	b, err := r.seal.sealObject(key, plain)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return b, nil
}

// openObject returns the content of an index or VM configuration stored as b under key.
func (r *Repository) openObject(key string, b []byte) ([]byte, error) {
	if r.seal == nil {
		return b, nil
	}
	return r.seal.openObject(key, b)
}

// sameObject reports whether the object stored as old under key has content plain.
func (r *Repository) sameObject(key string, old, plain []byte) bool {
	got, err := r.openObject(key, old)
	return err == nil && bytes.Equal(got, plain)
}

// objectOverhead is what sealing adds to an index or VM configuration.
func (r *Repository) objectOverhead() int64 {
	if r.seal == nil {
		return 0
	}
	return objectOverhead
}
