// Package fidx owns the fixed index format: the digest of every fixed-size slot of one disk at
// one point in time. Every backup is a complete index, so a restore never walks a chain; an
// incremental backup is its parent's index with the changed slots replaced.
//
// An index file is laid out as follows; all integers are little-endian:
//
//	offset      size  field
//	     0         4  magic "SDFX"
//	     4         1  format version, 1
//	     5         3  reserved, 0
//	     8         8  chunk (slot) size in bytes, MinChunkSize..MaxChunkSize
//	    16         8  disk size (capacity) in bytes
//	    24         8  slot count n = ceil(disk size / chunk size)
//	    32         8  creation time, seconds since 1970-01-01 UTC (signed)
//	    40         4  creation time, nanoseconds 0..999999999
//	    44         4  reserved, 0
//	    48      32·n  the digest of every slot, in disk order
//	    48+32·n   32  SHA-256 over every byte before it (the integrity of the file itself)
//
// A zero slot holds chunk.ZeroDigest of its length; its chunk is never stored.
package fidx

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sendense/sendense/shared/chunk"
)

// Magic opens every index file.
const Magic = "SDFX"

// Version is the index format version this package reads and writes.
const Version = 1

// Sizes of the fixed parts of an index file.
const (
	HeaderSize  = 48
	TrailerSize = sha256.Size
)

// Bounds on the fields. A slot is one chunk, so it fits chunk.MaxPlaintextLen. MaxSlots (32 Mi
// slots, a 1 GiB index) is far beyond vSphere's 62 TB disk limit at the default 4 MiB slots
// (15.5 Mi slots) and keeps a hostile or damaged header from asking for absurd allocations.
const (
	MinChunkSize = 4 << 10
	MaxChunkSize = chunk.MaxPlaintextLen
	MaxSlots     = 32 << 20
)

// Errors returned for an index that cannot be used. Errors from UnmarshalBinary wrap
// ErrBadMagic, ErrUnsupportedVersion or ErrCorrupt; errors from New, Derive, Validate and
// MarshalBinary wrap ErrInvalid or ErrSizeChanged.
var (
	// ErrBadMagic: the bytes are not an index file.
	ErrBadMagic = errors.New("not a fixed index (bad magic)")
	// ErrUnsupportedVersion: an index of a format version this code does not read.
	ErrUnsupportedVersion = errors.New("unsupported fixed index version")
	// ErrCorrupt: the file is damaged or inconsistent (truncated, bad trailer, wrong slot count).
	ErrCorrupt = errors.New("corrupt fixed index")
	// ErrInvalid: an Index value that cannot be encoded (bad sizes, wrong number of digests).
	ErrInvalid = errors.New("invalid fixed index")
	// ErrSizeChanged: Derive was asked for a disk size other than the parent's. A resized disk
	// needs a full backup.
	ErrSizeChanged = errors.New("disk size changed")
)

// Index is the digest of every slot of one disk. Digests[i] covers bytes
// [i·ChunkSize, min((i+1)·ChunkSize, DiskSize)). An Index is a plain value: it is not safe for
// concurrent mutation, and callers set changed slots by assigning to Digests.
type Index struct {
	ChunkSize int64
	DiskSize  int64
	Created   time.Time
	Digests   []chunk.Digest
}

// SlotCount returns ceil(diskSize / chunkSize), the number of slots of such a disk.
func SlotCount(diskSize, chunkSize int64) int64 {
	return chunk.Grid{Capacity: diskSize, ChunkSize: chunkSize}.Slots()
}

func checkSizes(diskSize, chunkSize int64) error {
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return fmt.Errorf("chunk size %d outside %d..%d", chunkSize, MinChunkSize, MaxChunkSize)
	}
	if diskSize < 0 {
		return fmt.Errorf("negative disk size %d", diskSize)
	}
	if n := SlotCount(diskSize, chunkSize); n > MaxSlots {
		return fmt.Errorf("disk size %d with chunk size %d needs %d slots, more than %d", diskSize, chunkSize, n, MaxSlots)
	}
	return nil
}

// New returns the index of a disk of diskSize bytes cut into chunkSize slots, every slot zero,
// created now.
func New(diskSize, chunkSize int64) (*Index, error) {
	if err := checkSizes(diskSize, chunkSize); err != nil {
		return nil, fmt.Errorf("new index: %w: %s", ErrInvalid, err)
	}
	x := &Index{ChunkSize: chunkSize, DiskSize: diskSize, Created: time.Now().UTC()}
	n := int(SlotCount(diskSize, chunkSize))
	x.Digests = make([]chunk.Digest, n)
	if n > 0 {
		full := chunk.ZeroDigest(int(chunkSize))
		for i := range x.Digests {
			x.Digests[i] = full
		}
		x.Digests[n-1] = chunk.ZeroDigest(x.SlotLen(n - 1))
	}
	return x, nil
}

// Derive returns the starting point of an incremental index: a copy of parent, created now. The
// disk must still have the parent's size; otherwise it returns ErrSizeChanged, because slots of
// a resized disk do not line up with the parent's and a full backup is needed.
func Derive(parent *Index, diskSize int64) (*Index, error) {
	if err := parent.Validate(); err != nil {
		return nil, fmt.Errorf("derive index: parent: %w", err)
	}
	if diskSize != parent.DiskSize {
		return nil, fmt.Errorf("derive index: %w: parent covers %d bytes, disk has %d", ErrSizeChanged, parent.DiskSize, diskSize)
	}
	x := parent.Clone()
	x.Created = time.Now().UTC()
	return x, nil
}

// Clone returns a deep copy of x.
func (x *Index) Clone() *Index {
	c := *x
	c.Digests = slices.Clone(x.Digests)
	return &c
}

// SlotCount returns the number of slots, ceil(DiskSize / ChunkSize).
func (x *Index) SlotCount() int {
	return int(SlotCount(x.DiskSize, x.ChunkSize))
}

// Grid returns the slot grid of the indexed disk.
func (x *Index) Grid() chunk.Grid { return chunk.Grid{Capacity: x.DiskSize, ChunkSize: x.ChunkSize} }

// SlotOffset returns the disk offset of slot i.
func (x *Index) SlotOffset(i int) int64 { return x.Grid().Offset(int64(i)) }

// SlotLen returns the length of slot i: ChunkSize, except for a shorter last slot when the disk
// size is not a multiple of the chunk size.
func (x *Index) SlotLen(i int) int { return int(x.Grid().Len(int64(i))) }

// IsZeroSlot reports whether slot i holds only zeros, that is whether its digest is the zero
// digest of its length. Such a slot has no stored chunk.
func (x *Index) IsZeroSlot(i int) bool {
	return x.Digests[i] == chunk.ZeroDigest(x.SlotLen(i))
}

// Referenced returns the digests of the chunks x needs, each once, in order of first use: every
// digest except zero slots.
func (x *Index) Referenced() []chunk.Digest {
	n := len(x.Digests)
	if n == 0 {
		return nil
	}
	zeroFull := chunk.ZeroDigest(int(x.ChunkSize))
	zeroLast := chunk.ZeroDigest(x.SlotLen(n - 1))
	seen := make(map[chunk.Digest]struct{})
	var out []chunk.Digest
	for i, d := range x.Digests {
		if d == zeroFull && i < n-1 || d == zeroLast && i == n-1 {
			continue
		}
		if _, dup := seen[d]; dup {
			continue
		}
		seen[d] = struct{}{}
		out = append(out, d)
	}
	return out
}

// Validate checks that x can be encoded: sizes within bounds and one digest per slot.
func (x *Index) Validate() error {
	if err := checkSizes(x.DiskSize, x.ChunkSize); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, err)
	}
	if want := x.SlotCount(); len(x.Digests) != want {
		return fmt.Errorf("%w: %d digests for %d slots (disk size %d, chunk size %d)", ErrInvalid, len(x.Digests), want, x.DiskSize, x.ChunkSize)
	}
	return nil
}

// EncodedSize returns the length of x's encoding.
func (x *Index) EncodedSize() int {
	return HeaderSize + len(x.Digests)*chunk.DigestSize + TrailerSize
}

// MarshalBinary encodes x in the index file format.
func (x *Index) MarshalBinary() ([]byte, error) {
	if err := x.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, x.EncodedSize())
	copy(b[0:4], Magic)
	b[4] = Version
	le := binary.LittleEndian
	le.PutUint64(b[8:16], uint64(x.ChunkSize))
	le.PutUint64(b[16:24], uint64(x.DiskSize))
	le.PutUint64(b[24:32], uint64(len(x.Digests)))
	le.PutUint64(b[32:40], uint64(x.Created.Unix()))
	le.PutUint32(b[40:44], uint32(x.Created.Nanosecond()))
	off := HeaderSize
	for i := range x.Digests {
		off += copy(b[off:], x.Digests[i][:])
	}
	sum := sha256.Sum256(b[:off])
	copy(b[off:], sum[:])
	return b, nil
}

// UnmarshalBinary decodes an index file, checking everything: magic, version, reserved bytes,
// sizes, slot count against disk and chunk size, file length against slot count, and the
// trailer. On error x is left unchanged and the error names the problem.
func (x *Index) UnmarshalBinary(b []byte) error {
	if len(b) >= len(Magic) && string(b[:len(Magic)]) != Magic {
		return fmt.Errorf("%w: % x", ErrBadMagic, b[:len(Magic)])
	}
	if len(b) < HeaderSize+TrailerSize {
		return fmt.Errorf("%w: truncated: %d bytes, an index has at least %d", ErrCorrupt, len(b), HeaderSize+TrailerSize)
	}
	if b[4] != Version {
		return fmt.Errorf("%w: %d, this code reads %d", ErrUnsupportedVersion, b[4], Version)
	}
	if !bytes.Equal(b[5:8], []byte{0, 0, 0}) || !bytes.Equal(b[44:48], []byte{0, 0, 0, 0}) {
		return fmt.Errorf("%w: reserved header bytes are not zero", ErrCorrupt)
	}
	le := binary.LittleEndian
	chunkSize, diskSize, count := le.Uint64(b[8:16]), le.Uint64(b[16:24]), le.Uint64(b[24:32])
	sec, nsec := int64(le.Uint64(b[32:40])), le.Uint32(b[40:44])
	if chunkSize > MaxChunkSize || diskSize > 1<<62 {
		return fmt.Errorf("%w: chunk size %d or disk size %d out of range", ErrCorrupt, chunkSize, diskSize)
	}
	if err := checkSizes(int64(diskSize), int64(chunkSize)); err != nil {
		return fmt.Errorf("%w: %s", ErrCorrupt, err)
	}
	if want := SlotCount(int64(diskSize), int64(chunkSize)); count != uint64(want) {
		return fmt.Errorf("%w: header says %d slots, disk size %d with chunk size %d has %d", ErrCorrupt, count, diskSize, chunkSize, want)
	}
	if nsec >= 1e9 {
		return fmt.Errorf("%w: creation time nanoseconds %d out of range", ErrCorrupt, nsec)
	}
	want := HeaderSize + int(count)*chunk.DigestSize + TrailerSize
	if len(b) != want {
		what := "truncated"
		if len(b) > want {
			what = "trailing bytes"
		}
		return fmt.Errorf("%w: %s: %d bytes, %d slots need %d", ErrCorrupt, what, len(b), count, want)
	}
	body := b[:len(b)-TrailerSize]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], b[len(body):]) {
		return fmt.Errorf("%w: trailer checksum mismatch", ErrCorrupt)
	}
	digests := make([]chunk.Digest, count)
	for i := range digests {
		copy(digests[i][:], body[HeaderSize+i*chunk.DigestSize:])
	}
	*x = Index{
		ChunkSize: int64(chunkSize),
		DiskSize:  int64(diskSize),
		Created:   time.Unix(sec, int64(nsec)).UTC(),
		Digests:   digests,
	}
	return nil
}
