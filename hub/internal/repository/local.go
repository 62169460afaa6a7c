// Package repository owns backup repositories on the local filesystem: the repo.json descriptor,
// the content-addressed chunk store and the fixed indexes, all written durably.
//
// Layout under the repository root:
//
//	repo.json                                    format version, id, chunk size, digest algorithm
//	chunks/ab/cd/<sha256 hex>                    one immutable chunk blob (shared/chunk) per digest;
//	                                             ab and cd are the first two and next two hex digits
//	indexes/<vm uuid>/<disk id>/<backup id>.fidx one fixed index (shared/fidx) per disk and backup
//	tmp/                                         temp files of writes in progress (same file system)
//
// Every write goes temp file in tmp/ → write → fsync → rename into place → fsync the directory,
// so a chunk or index that a method reported as written survives a crash, and a crash leaves
// at most unreferenced files in tmp/ (see CleanTemp), never a partial chunk or index.
//
// Zero slots (chunk.ZeroDigest of their length) are never stored: PutChunk refuses them and
// readers of an index produce zeros for them without asking the repository.
package repository

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/sendense/sendense/shared/atomicfile"
	"github.com/sendense/sendense/shared/chunk"
)

// FormatVersion is the repository layout version written to repo.json.
const FormatVersion = 1

// DefaultChunkSize is the slot size of new repositories: 4 MiB.
const DefaultChunkSize = 4 << 20

// Chunk sizes outside these bounds are refused: below 64 KiB the index and per-chunk overhead
// dominate, above 64 MiB a single slot costs too much memory in flight.
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
)

// ErrNotRepository is returned by Open for a directory without repo.json.
var ErrNotRepository = errors.New("not a sendense repository")

// Descriptor is the content of repo.json.
type Descriptor struct {
	FormatVersion int       `json:"format_version"`
	ID            string    `json:"id"`
	ChunkSize     int64     `json:"chunk_size"`
	Digest        string    `json:"digest"` // "sha256"
	CreatedAt     time.Time `json:"created_at"`
}

// Local is a repository in a local directory. Every method is safe for concurrent use by many
// goroutines. One process at a time should write to a repository directory: the guarantees
// against concurrent writers of one chunk or index hold within a process.
type Local struct {
	root    string
	desc    Descriptor
	maxBlob int // largest blob file accepted or read: chunk.MaxBlobLen(chunk size)

	// dec decodes zstd payloads with DecodeAll; it holds one decoder per CPU and is safe for
	// concurrent use. Each DecodeAll stops at the capacity of its destination, the plaintext
	// length the header declares, so a hostile payload cannot expand beyond one slot.
	dec *zstd.Decoder
	// plainBufs and payloadBufs hold *[]byte of chunk size and of maxBlob capacity, reused
	// across calls: a 4 MiB allocation per chunk would dominate the garbage collector's work.
	plainBufs   sync.Pool
	payloadBufs sync.Pool

	// inflight serialises PutChunk and RemoveChunk per digest: the channel of a digest is
	// closed when its current holder finishes.
	mu       sync.Mutex
	inflight map[chunk.Digest]chan struct{}

	// chunkDirs has one bit per chunks/ab/cd directory known to exist durably in this process.
	chunkDirs [256 * 256 / 64]atomic.Uint64

	// indexMu serialises index writes and removals: the check for an existing index and the
	// rename that follows must not interleave with another writer of the same index.
	indexMu sync.Mutex
}

func newLocal(root string, desc Descriptor) (*Local, error) {
	l := &Local{root: root, desc: desc, maxBlob: chunk.MaxBlobLen(int(desc.ChunkSize)), inflight: map[chunk.Digest]chan struct{}{}}
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
	l.dec = dec
	return l, nil
}

// Init creates a repository in dir (created if missing, must be empty of a repository). The id
// is random unless given.
func Init(dir string, chunkSize int64) (*Local, error) {
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize || chunkSize&(chunkSize-1) != 0 {
		return nil, fmt.Errorf("chunk size %d: must be a power of two between %d and %d", chunkSize, MinChunkSize, MaxChunkSize)
	}
	if _, err := os.Stat(filepath.Join(dir, "repo.json")); err == nil {
		return nil, fmt.Errorf("%s already holds a repository", dir)
	}
	for _, d := range []string{dir, filepath.Join(dir, "chunks"), filepath.Join(dir, "indexes"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("create repository directory: %w", err)
		}
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	desc := Descriptor{FormatVersion: FormatVersion, ID: "repo-" + hex.EncodeToString(id[:]), ChunkSize: chunkSize, Digest: "sha256", CreatedAt: time.Now().UTC()}
	b, err := json.MarshalIndent(desc, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "repo.json"), append(b, '\n'), 0o640); err != nil {
		return nil, err
	}
	return newLocal(dir, desc)
}

// Open opens an existing repository.
func Open(dir string) (*Local, error) {
	b, err := os.ReadFile(filepath.Join(dir, "repo.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("read repo.json: %w", err)
	}
	var desc Descriptor
	if err := json.Unmarshal(b, &desc); err != nil {
		return nil, fmt.Errorf("%s/repo.json: %w", dir, err)
	}
	if desc.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%s: repository format %d, this hub reads format %d", dir, desc.FormatVersion, FormatVersion)
	}
	if desc.Digest != "sha256" || desc.ChunkSize < MinChunkSize || desc.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("%s/repo.json: unsupported digest %q or chunk size %d", dir, desc.Digest, desc.ChunkSize)
	}
	return newLocal(dir, desc)
}

// ID is the repository's identity from repo.json.
func (l *Local) ID() string { return l.desc.ID }

// ChunkSize is the slot size of every index in this repository.
func (l *Local) ChunkSize() int64 { return l.desc.ChunkSize }

// Root is the repository directory.
func (l *Local) Root() string { return l.root }

// CheckWritable proves the repository accepts a durable write by creating and removing a file.
func (l *Local) CheckWritable() error {
	p := filepath.Join(l.root, "tmp", ".probe-"+fmt.Sprint(time.Now().UnixNano()))
	if err := atomicfile.WriteFile(p, []byte("probe"), 0o600); err != nil {
		return err
	}
	return os.Remove(p)
}
