// Package store defines the blob store under a repository: a flat namespace of objects named by
// slash-separated keys, with the guarantees the repository format relies on. It knows nothing
// of chunks or indexes; implementations (a local directory, later an S3-compatible bucket) are
// checked by one conformance suite, storetest.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors of every store. Callers branch on them with errors.Is; every returned error names the
// key concerned. Other errors are I/O errors: transient or not, the store cannot tell, and a
// caller may retry them.
var (
	// ErrNotFound: no object is stored under the key. Permanent until someone puts one.
	ErrNotFound = errors.New("object not found")
	// ErrTooLarge: Get found an object larger than the caller's limit and read none of it.
	ErrTooLarge = errors.New("object larger than the limit")
	// ErrInvalidKey: a key or lock name that CheckKey refuses. Permanent.
	ErrInvalidKey = errors.New("invalid key")
	// ErrLocked: the lock is held by another holder, in this process or another.
	ErrLocked = errors.New("lock held by another holder")
	// ErrExists: Rename found an object under its destination key and moved nothing.
	ErrExists = errors.New("object exists")
	// ErrRetained: a removal met an object under a retention date (S3 Object Lock) that has
	// not passed, and removed nothing. Permanent until that date.
	ErrRetained = errors.New("object under retention")
)

// MaxKeyLen bounds a key in bytes (S3's limit).
const MaxKeyLen = 1024

// Info describes one stored object.
type Info struct {
	Key  string
	Size int64
	// ModTime is when the object was last put or touched, from the store's clock. Garbage
	// collection compares it with a cutoff; clocks of the store and of its users may differ
	// by a few seconds, which callers absorb with a margin.
	ModTime time.Time
}

// Store is a blob store. Every method is safe for concurrent use by many goroutines, and by many
// processes (or hosts) opening the same store, with the guarantees each method states. Methods
// that take a ctx stop early when it ends; an operation stopped that way either happened
// completely or not at all.
type Store interface {
	// Put stores data under key. When Put returns nil the object is durable: it survives a crash
	// or power loss of the store's host. Readers see the old object or the new one, never a
	// partial one, and a failed Put leaves nothing visible under key. Putting over an existing
	// object replaces it atomically; concurrent Puts of one key leave exactly one of their
	// contents. Putting the same content again is harmless, so Put is idempotent. The new
	// object's ModTime is the time of the Put.
	Put(ctx context.Context, key string, data []byte) error

	// Get returns the whole object under key, written over dst's storage when cap(dst) suffices
	// and in a new slice otherwise. An object larger than limit bytes (limit > 0) returns
	// ErrTooLarge without being read, so a damaged or hostile object cannot make the caller
	// allocate. A missing object returns ErrNotFound.
	Get(ctx context.Context, key string, dst []byte, limit int64) ([]byte, error)

	// Stat describes the object under key; ErrNotFound when there is none.
	Stat(ctx context.Context, key string) (Info, error)

	// List calls fn for every object whose key starts with prefix, in ascending byte order of
	// the keys. Objects put or removed during the listing may or may not be visited; every
	// object present for the whole listing is visited once. Things in the store that are not
	// objects (temporary files, locks) are never listed. An error from fn stops the listing and
	// is returned as is.
	List(ctx context.Context, prefix string, fn func(Info) error) error

	// Touch sets the object's ModTime to now, or returns ErrNotFound. When Touch returns nil the
	// object exists under key with a ModTime no earlier than the call's start, and
	// RemoveIfOlder with a cutoff before that time, from any process, does not remove it: a
	// RemoveIfOlder racing with Touch either spares the object or makes Touch return
	// ErrNotFound. A caller that needs the object then puts it again. A store whose objects
	// carry retention dates (S3 Object Lock) may retain the object for a while instead of
	// changing its ModTime: RemoveIfOlder then answers ErrRetained until the date passes.
	Touch(ctx context.Context, key string) error

	// RemoveIfOlder removes the object under key only if its ModTime is before cutoff, and
	// reports whether it did and the size of what it removed. A missing object is not an error
	// (false, 0, nil). It is safe against Touch and Put from any process as Touch states: an
	// object touched or put at or after cutoff is never removed. A removal is durable on return.
	RemoveIfOlder(ctx context.Context, key string, cutoff time.Time) (removed bool, size int64, err error)

	// Remove removes the object under key durably; ErrNotFound when there is none.
	Remove(ctx context.Context, key string) error

	// Rename moves the object under from to the key to, which must hold none: ErrNotFound when
	// from holds none, ErrExists when to holds one (then nothing is moved). It moves whichever
	// object is under from at one instant, whole: a reader of to sees it complete or not at all.
	// The move is durable on return; a crash during it leaves the object under from, under to, or
	// under both, never under neither. The content is unchanged; the ModTime may be the time of
	// the move. A Touch of from racing with Rename either lands before the move (and the touched
	// object is moved) or returns ErrNotFound. Of concurrent Renames of one from, at most one
	// moves the object; the others return ErrNotFound.
	Rename(ctx context.Context, from, to string) error

	// Lock takes the exclusive lock called name (a single key component) without waiting:
	// ErrLocked when another holder, in this process or any other, has it. The lock is held
	// until release is called or the holding process ends (a crash releases it). Locks are
	// advisory: they exclude other Lock calls, not other operations. name lives in a namespace
	// of its own, apart from the keys.
	Lock(ctx context.Context, name string) (release func() error, err error)

	// Close releases the store's resources. Locks still held are released.
	Close() error
}

// Deferrer is an optional interface of a Store whose Put pays for its durability per object
// (a local file system's fsyncs) and that can pay it once for many objects instead. Callers
// discover it by type assertion; a Store without it makes every Put durable on return.
type Deferrer interface {
	// PutDeferred is Put without the durability: the object is complete and visible to every
	// reader at once, exactly as after Put, but a crash of the host (not only of the process)
	// before the next Sync may leave it missing, or present with damaged content.
	PutDeferred(ctx context.Context, key string, data []byte) error

	// Sync makes durable every object that any process on this host put, deferred or not,
	// before Sync was called.
	Sync(ctx context.Context) error

	// SyncOwn makes durable every object this Store put deferred before SyncOwn was called
	// (and whose PutDeferred had returned), and need not wait for anything else. A call made
	// while another runs returns only once both calls' objects are durable.
	SyncOwn(ctx context.Context) error
}

// Hider is an optional interface of a Store whose objects may carry retention dates (S3 Object
// Lock), for an object that must be written again while a date keeps it from being removed.
// Callers discover it by type assertion.
type Hider interface {
	// Hide makes the object under key read as absent, as after Remove, without removing what
	// a retention date keeps: the retained versions stay stored, apart from the key's objects,
	// until a removal of the key once their dates passed. A Put under key afterwards stores the
	// object anew. ErrNotFound when there is no object.
	Hide(ctx context.Context, key string) error
}

// Prefetcher is an optional interface of a Store that can start reading an object in the
// background, so that a Get soon after finds it in memory (a local file system's page cache).
// Callers discover it by type assertion.
type Prefetcher interface {
	// Prefetch starts reading the object under key and returns without waiting for the read. It
	// is only a hint: a missing object or a failure is ignored, and Get reports it.
	Prefetch(key string)
}

// CheckKey checks that key is a valid object key: at most MaxKeyLen bytes of valid UTF-8,
// components separated by "/", each non-empty, not starting with "." (which also excludes "."
// and ".."), and without "\" or control characters. Such keys are safe as relative file paths
// and as S3 object names alike.
func CheckKey(key string) error {
	if key == "" || len(key) > MaxKeyLen || !utf8.ValidString(key) {
		return fmt.Errorf("%w: %q: empty, longer than %d bytes or not UTF-8", ErrInvalidKey, key, MaxKeyLen)
	}
	for c := range strings.SplitSeq(key, "/") {
		if c == "" || c[0] == '.' {
			return fmt.Errorf("%w: %q: empty component or one starting with \".\"", ErrInvalidKey, key)
		}
		for _, r := range c {
			if r == '\\' || r < 0x20 || r == 0x7f {
				return fmt.Errorf("%w: %q: contains %q", ErrInvalidKey, key, r)
			}
		}
	}
	return nil
}

// CheckName checks that name is a valid lock name: a key of one component.
func CheckName(name string) error {
	if strings.Contains(name, "/") {
		return fmt.Errorf("%w: lock name %q contains \"/\"", ErrInvalidKey, name)
	}
	return CheckKey(name)
}
