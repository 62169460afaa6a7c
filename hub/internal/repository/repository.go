// Package repository owns backup repositories: the format on top of a blob store
// (store.Store) — the repo.json descriptor, content-addressed chunk blobs and fixed indexes —
// and the registry of the hub's repositories in the catalog.
//
// Keys in the store:
//
//	repo.json                                    format version, id, chunk size, digest algorithm,
//	                                             encryption and key check (encrypted repositories)
//	keys/<slot id>.json                          a key slot wrapping the master key (keys.go)
//	chunks/ab/cd/<sha256 hex>                    one immutable chunk blob (shared/chunk) per digest;
//	                                             ab and cd are the first two and next two hex digits;
//	                                             in an encrypted repository the keyed name (seal.go)
//	indexes/<vm uuid>/<disk id>/<backup id>.fidx one fixed index (hub/internal/fidx) per disk and backup
//	vmconfigs/<vm uuid>/<backup id>.json         the VM configuration (api.VMConfig) of one backup
//	quarantine/<sha256 hex>.<unix nanoseconds>   a chunk blob found damaged, moved out of chunks/
//	                                             (QuarantineChunk) so that it is uploaded again
//
// An encrypted repository (format 2) seals every chunk, index and VM configuration with
// AES-256-GCM and names chunks by a keyed digest; see seal.go and keys.go.
//
// A local repository keeps each object in the file of the same relative path (store/local), so
// the on-disk layout is the key layout. Every write is durable when it returns (see store.Store),
// so a chunk or index that a method reported as written survives a crash.
//
// Zero slots (chunk.ZeroDigest of their length) are never stored: PutChunk refuses them and
// readers of an index produce zeros for them without asking the repository.
package repository

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/sendense/sendense/hub/internal/buffers"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/local"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// FormatVersion is the repository layout version written to repo.json of a plain repository.
const FormatVersion = 1

// FormatVersionEncrypted is the layout version of an encrypted repository. It is a version of its
// own so that a hub that predates encryption refuses the repository instead of misreading it.
const FormatVersionEncrypted = 2

// DefaultChunkSize is the slot size of new repositories: 4 MiB.
const DefaultChunkSize = 4 << 20

// Chunk sizes outside these bounds are refused: below 64 KiB the index and per-chunk overhead
// dominate, above 64 MiB a single slot costs too much memory in flight.
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
)

// ErrNotRepository is returned by Open for a store (or directory) without repo.json.
var ErrNotRepository = errors.New("not a sendense repository")

// ErrLocked is returned by LockGC while another holder, in any process, has the lock.
var ErrLocked = store.ErrLocked

// ErrRetained is returned by a removal of an object under a retention date that has not
// passed (an S3 repository with Object Lock); nothing was removed.
var ErrRetained = store.ErrRetained

// descriptorKey is the key of repo.json; descriptorLimit bounds what Open reads of it.
const (
	descriptorKey   = "repo.json"
	descriptorLimit = 64 << 10
)

// Descriptor is the content of repo.json.
type Descriptor struct {
	FormatVersion int       `json:"format_version"`
	ID            string    `json:"id"`
	ChunkSize     int64     `json:"chunk_size"`
	Digest        string    `json:"digest"` // "sha256"
	CreatedAt     time.Time `json:"created_at"`
	// Encryption is "aes-256-gcm" in an encrypted repository, empty otherwise.
	Encryption string `json:"encryption,omitempty"`
	// KeyCheck is a keyed tag of the id under the master key (seal.go): it recognises the right
	// key before any object is read.
	KeyCheck string `json:"key_check,omitempty"`
}

// Option configures Init and Open.
type Option func(*options)

type options struct {
	secret       []byte
	passwordFile string
	encrypt      bool
	kdfCost      KDF
	durability   Durability
	bootID       func() (string, error)
	logger       *slog.Logger
}

// WithLogger gives the repository a logger for what it does on its own (recovery at Open).
func WithLogger(log *slog.Logger) Option { return func(o *options) { o.logger = log } }

// WithSecret gives the content of a password file: what unlocks an encrypted repository at Open,
// or the first key slot's secret with Encrypt at Init.
func WithSecret(b []byte) Option { return func(o *options) { o.secret = b } }

// WithPasswordFile is WithSecret with the content of the file at path, read when the repository
// is opened (or created). An empty path is no option.
func WithPasswordFile(path string) Option { return func(o *options) { o.passwordFile = path } }

// Encrypt makes Init create an encrypted repository, its master key wrapped in a first key slot
// under the secret (WithSecret or WithPasswordFile).
func Encrypt() Option { return func(o *options) { o.encrypt = true } }

// WithKDFCost sets the argon2id cost of password slots this repository adds (default
// DefaultKDFCost); tests lower it.
func WithKDFCost(k KDF) Option { return func(o *options) { o.kdfCost = k } }

func collect(opts []Option) (options, error) {
	o := options{kdfCost: DefaultKDFCost, durability: DurabilityCommit, bootID: readBootID, logger: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	if o.secret == nil && o.passwordFile != "" {
		b, err := ReadSecretFile(o.passwordFile)
		if err != nil {
			return o, err
		}
		o.secret = b
	}
	return o, nil
}

// Repository is the repository format on top of a blob store. Every method is safe for
// concurrent use by many goroutines, and by many processes or hosts using the same store, with
// the guarantees the store gives (see store.Store); where a guarantee holds only within one
// process, the method says so.
type Repository struct {
	store store.Store
	desc  Descriptor
	// lockPeriod is how long a backup's objects are retained (S3 Object Lock) after the backup
	// or a retention run that keeps it; set by the registry from the catalog record.
	lockPeriod time.Duration
	maxBlob    int // largest blob accepted or read: chunk.MaxBlobLen(chunk size)

	// dec decodes zstd payloads with DecodeAll; it holds one decoder per CPU and is safe for
	// concurrent use. Each DecodeAll stops at the capacity of its destination, the plaintext
	// length the header declares, so a hostile payload cannot expand beyond one slot.
	dec *zstd.Decoder
	// plainBufs and payloadBufs keep buffers of chunk size and of maxBlob for reuse: a 4 MiB
	// allocation per chunk would dominate the garbage collector's work and the heap.
	plainBufs   *buffers.List
	payloadBufs *buffers.List
	// decoding admits one upload's decode and hash per CPU at once (checkBlob): the work is
	// CPU-bound, so more at once only hold more plaintext buffers (measured with 32 uploads in
	// flight on 2 CPUs: a hub of 179–192 MiB resident instead of 213–214).
	decoding chan struct{}

	// inflight serialises PutChunk per digest within this process, so that of concurrent puts
	// of one new chunk exactly one reports it stored: the channel of a digest is closed when
	// its current holder finishes.
	mu       sync.Mutex
	inflight map[chunk.Digest]chan struct{}

	// indexMu serialises index writes and removals in this process: the check for an existing
	// index and the write that follows must not interleave with another writer of the same index.
	indexMu sync.Mutex

	// Encryption: seal is nil in a plain repository. master is the unwrapped master key, slotID
	// the slot that gave it, kdfCost the cost of password slots added.
	seal    *sealer
	master  []byte
	slotID  string
	kdfCost KDF

	// deferred is the per-commit durability state (durability.go); nil in the per-chunk mode or
	// on a store without deferred writes. markerMu guards its marker.
	deferred *deferredState
	markerMu sync.Mutex
	logger   *slog.Logger
}

// keptBuffers is how many buffers of each kind a repository keeps for reuse: one per chunk
// upload an agent may have in flight.
const keptBuffers = api.MaxUploadsPerAgent

func newRepository(s store.Store, desc Descriptor) (*Repository, error) {
	maxBlob := chunk.MaxBlobLen(int(desc.ChunkSize))
	if desc.Encryption != "" {
		maxBlob = chunk.MaxSealedBlobLen(int(desc.ChunkSize))
	}
	r := &Repository{store: s, desc: desc, maxBlob: maxBlob, inflight: map[chunk.Digest]chan struct{}{},
		plainBufs: buffers.New(keptBuffers, 0), payloadBufs: buffers.New(keptBuffers, 0),
		decoding: make(chan struct{}, runtime.GOMAXPROCS(0))}
	// The output limit is the cap of each DecodeAll destination (WithDecodeAllCapLimit). The
	// memory bound is set to the largest chunk rather than this repository's chunk size because
	// the decoder also refuses frames whose window exceeds it, and a stream encoder may announce
	// a window (8 MiB by default) larger than the chunk it compressed.
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(chunk.MaxPlaintextLen),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, fmt.Errorf("create zstd decoder: %w", err)
	}
	r.dec = dec
	return r, nil
}

// CheckChunkSize checks a chunk size for a new repository (0 stands for DefaultChunkSize): a
// power of two between MinChunkSize and MaxChunkSize. The error is an *api.FieldError.
func CheckChunkSize(chunkSize int64) error {
	if chunkSize != 0 && (chunkSize < MinChunkSize || chunkSize > MaxChunkSize || chunkSize&(chunkSize-1) != 0) {
		return &api.FieldError{Field: "chunk_size", Msg: fmt.Sprintf("%d: must be a power of two between 64 KiB and 64 MiB", chunkSize)}
	}
	return nil
}

// Init creates a repository in s, which must not hold one, with a random id. A chunk size of 0
// stands for DefaultChunkSize. With Encrypt it is an encrypted repository: a random master key,
// wrapped in one key slot under the secret given, which is written before repo.json so that no
// repository exists without a slot. The repository owns s from then on (see Close).
func Init(ctx context.Context, s store.Store, chunkSize int64, opts ...Option) (*Repository, error) {
	if err := CheckChunkSize(chunkSize); err != nil {
		return nil, err
	}
	o, err := collect(opts)
	if err != nil {
		return nil, err
	}
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if _, err := s.Stat(ctx, descriptorKey); err == nil {
		return nil, errors.New("the store holds a repository already")
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	desc := Descriptor{FormatVersion: FormatVersion, ID: "repo-" + hex.EncodeToString(id[:]), ChunkSize: chunkSize, Digest: "sha256", CreatedAt: time.Now().UTC()}
	var master []byte
	var slot *KeySlot
	if o.encrypt {
		if o.secret == nil {
			return nil, fmt.Errorf("init repository: %w", ErrKeyRequired)
		}
		sec, err := parseSecret(o.secret)
		if err != nil {
			return nil, fmt.Errorf("init repository: %w", err)
		}
		master = make([]byte, masterKeyLen)
		if _, err := rand.Read(master); err != nil {
			return nil, err
		}
		desc.FormatVersion, desc.Encryption = FormatVersionEncrypted, encryptionAlg
		if desc.KeyCheck, err = keyCheck(master, desc.ID); err != nil {
			return nil, err
		}
		if slot, err = newSlot(desc.ID, master, sec, o.kdfCost); err != nil {
			return nil, fmt.Errorf("init repository: %w", err)
		}
		if err := putSlot(ctx, s, slot); err != nil {
			return nil, fmt.Errorf("init repository: %w", err)
		}
	}
	b, err := json.MarshalIndent(desc, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := s.Put(ctx, descriptorKey, append(b, '\n')); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	r, err := newRepository(s, desc)
	if err != nil {
		return nil, err
	}
	r.kdfCost = o.kdfCost
	if master != nil {
		if err := r.setKey(master, slot.ID); err != nil {
			return nil, err
		}
	}
	r.setDurability(o)
	return r, nil
}

func (r *Repository) setKey(master []byte, slotID string) error {
	sl, err := newSealer(master, r.desc.ID)
	if err != nil {
		return err
	}
	r.seal, r.master, r.slotID = sl, master, slotID
	return nil
}

// Open opens the repository in s: ErrNotRepository when s holds no repo.json. An encrypted
// repository is unlocked with the secret given (WithSecret, WithPasswordFile) before anything but
// repo.json and the key slots is read: ErrKeyRequired without one, ErrWrongKey when it opens no
// slot. The repository owns s from then on (see Close).
func Open(ctx context.Context, s store.Store, opts ...Option) (*Repository, error) {
	o, err := collect(opts)
	if err != nil {
		return nil, err
	}
	b, err := s.Get(ctx, descriptorKey, nil, descriptorLimit)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotRepository
	}
	if err != nil {
		return nil, fmt.Errorf("read repo.json: %w", err)
	}
	var desc Descriptor
	if err := json.Unmarshal(b, &desc); err != nil {
		return nil, fmt.Errorf("repo.json: %w", err)
	}
	switch {
	case desc.FormatVersion == FormatVersion && desc.Encryption == "":
	case desc.FormatVersion == FormatVersionEncrypted && desc.Encryption == encryptionAlg && desc.KeyCheck != "":
	default:
		return nil, fmt.Errorf("repository format %d (encryption %q), this hub reads formats %d and %d (%s)", desc.FormatVersion, desc.Encryption, FormatVersion, FormatVersionEncrypted, encryptionAlg)
	}
	if desc.Digest != "sha256" || desc.ChunkSize < MinChunkSize || desc.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("repo.json: unsupported digest %q or chunk size %d", desc.Digest, desc.ChunkSize)
	}
	var master []byte
	var slotID string
	if desc.Encryption != "" {
		if o.secret == nil {
			return nil, ErrKeyRequired
		}
		if master, slotID, err = unlock(ctx, s, desc, o.secret); err != nil {
			return nil, fmt.Errorf("unlock: %w", err)
		}
	}
	r, err := newRepository(s, desc)
	if err != nil {
		return nil, err
	}
	r.kdfCost = o.kdfCost
	if master != nil {
		if err := r.setKey(master, slotID); err != nil {
			return nil, err
		}
	}
	r.setDurability(o)
	if err := r.recoverUnsynced(ctx, o.bootID); err != nil {
		return nil, err
	}
	return r, nil
}

// InitDir creates a repository in the local directory dir (created if missing).
func InitDir(ctx context.Context, dir string, chunkSize int64, log *slog.Logger, opts ...Option) (*Repository, error) {
	if err := CheckChunkSize(chunkSize); err != nil {
		return nil, err
	}
	s, err := local.Create(ctx, dir, log)
	if err != nil {
		return nil, err
	}
	r, err := Init(ctx, s, chunkSize, opts...)
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return r, nil
}

// OpenDir opens the repository in the local directory dir: ErrNotRepository when dir holds
// none (then nothing in dir is changed).
func OpenDir(ctx context.Context, dir string, log *slog.Logger, opts ...Option) (*Repository, error) {
	if _, err := os.Stat(filepath.Join(dir, descriptorKey)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotRepository)
	}
	s, err := local.Open(ctx, dir, log)
	if err != nil {
		return nil, err
	}
	r, err := Open(ctx, s, opts...)
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return r, nil
}

// Close makes what this process stored durable and closes the repository's store.
func (r *Repository) Close() error {
	err := r.closeDeferred(context.Background())
	return errors.Join(err, r.store.Close())
}

// setDurability applies the durability options.
func (r *Repository) setDurability(o options) {
	r.logger = o.logger
	if d, ok := r.store.(store.Deferrer); ok && o.durability != DurabilityChunk {
		r.deferred = &deferredState{d: d, bootID: o.bootID}
	}
}

// ID is the repository's identity from repo.json.
func (r *Repository) ID() string { return r.desc.ID }

// ChunkSize is the slot size of every index in this repository.
func (r *Repository) ChunkSize() int64 { return r.desc.ChunkSize }

// CheckWritable proves the repository accepts a durable write by storing and removing a probe.
func (r *Repository) CheckWritable(ctx context.Context) error {
	var id [8]byte
	_, _ = rand.Read(id[:])
	key := "probe-" + hex.EncodeToString(id[:])
	if err := r.store.Put(ctx, key, []byte("probe")); err != nil {
		return err
	}
	return r.store.Remove(ctx, key)
}

// tempCleaner is implemented by stores that keep temp files (store/local) or leave removal
// markers behind when a process dies (store/s3).
type tempCleaner interface {
	// CleanTemp removes (with dryRun: counts) the temp files that no live writer owns, and
	// returns how many it found. It is safe while other processes write to the store.
	CleanTemp(ctx context.Context, dryRun bool) (int, error)
}

var (
	_ tempCleaner = (*local.Store)(nil)
	_ tempCleaner = (*s3.Store)(nil)
)

// CleanTemp removes the temp files of writers that died (with dryRun: only counts them) and
// returns how many it found; stores without temp files have none. Opening a repository already
// cleans up after writers dead by then; this finds those that died since.
func (r *Repository) CleanTemp(ctx context.Context, dryRun bool) (int, error) {
	tc, ok := r.store.(tempCleaner)
	if !ok {
		return 0, nil
	}
	return tc.CleanTemp(ctx, dryRun)
}

// LockGC takes the repository's garbage collection lock without waiting: ErrLocked while
// another collection, in this process or any other using the store, holds it. Two sweeps of one
// repository at once would each be safe (RemoveChunkIfOlder is), but they double the work and
// the second's report would be wrong; the lock makes the command-line "repo gc" and a serving
// hub's scheduled collection, or several hubs, take turns. The lock is released by release, or
// when the holding process ends.
func (r *Repository) LockGC(ctx context.Context) (release func() error, err error) {
	release, err = r.store.Lock(ctx, "gc")
	if err != nil {
		return nil, fmt.Errorf("lock repository for garbage collection: %w", err)
	}
	return release, nil
}
