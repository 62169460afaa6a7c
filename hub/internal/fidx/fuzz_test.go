package fidx

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/chunk"
)

// FuzzUnmarshalBinary feeds arbitrary bytes, as a damaged or hostile index file would, to
// UnmarshalBinary. It must not panic, must refuse with one of its documented errors and leave
// the Index untouched, must not allocate much more than the file itself whatever slot count the
// header claims, and an index it accepts must encode back to exactly the same bytes.
//
// When fixTrailer is set the harness rewrites the trailing SHA-256 before decoding, so that the
// fuzzer gets past the checksum and exercises the header checks behind it.
func FuzzUnmarshalBinary(f *testing.F) {
	for _, seed := range indexSeeds(f) {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, fixTrailer bool) {
		if fixTrailer && len(b) >= TrailerSize {
			b = bytes.Clone(b)
			body := b[:len(b)-TrailerSize]
			sum := sha256.Sum256(body)
			copy(b[len(body):], sum[:])
		}
		var x Index
		sentinel := Index{ChunkSize: 1, Digests: []chunk.Digest{{1}}}
		x = sentinel
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := x.UnmarshalBinary(b)
		runtime.ReadMemStats(&after)
		// The decoded digests are a copy of the file's; error messages and the Index itself
		// add little. 1 MiB of slack absorbs allocations by the fuzzing machinery.
		if grew := after.TotalAlloc - before.TotalAlloc; grew > uint64(2*len(b))+1<<20 {
			t.Fatalf("decoding %d bytes allocated %d bytes", len(b), grew)
		}
		if err != nil {
			if !errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrUnsupportedVersion) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v wraps none of ErrBadMagic, ErrUnsupportedVersion, ErrCorrupt", err)
			}
			if x.ChunkSize != sentinel.ChunkSize || len(x.Digests) != 1 || x.Digests[0] != sentinel.Digests[0] {
				t.Fatalf("a refused decode changed the index to %+v", x)
			}
			return
		}
		if err := x.Validate(); err != nil {
			t.Fatalf("accepted index does not validate: %v", err)
		}
		if x.EncodedSize() != len(b) {
			t.Fatalf("accepted %d bytes, the index encodes to %d", len(b), x.EncodedSize())
		}
		again, err := x.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted index does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted index encodes differently:\n got % x\nwant % x", again[:HeaderSize], b[:HeaderSize])
		}
	})
}

// indexSeeds returns valid index files and headers that claim far more slots than they hold.
func indexSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	for _, sz := range []struct{ disk, chunk int64 }{{0, 4 << 20}, {3*MinChunkSize + 1, MinChunkSize}, {8 << 20, 4 << 20}} {
		x, err := New(sz.disk, sz.chunk)
		if err != nil {
			tb.Fatal(err)
		}
		x.Created = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
		if len(x.Digests) > 0 {
			x.Digests[0] = chunk.Sum([]byte("sendense"))
		}
		b, err := x.MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	// Headers alone, with a consistent slot count of MaxSlots and then one more than MaxSlots.
	for _, disk := range []uint64{MinChunkSize * MaxSlots, MinChunkSize*MaxSlots + 1} {
		h := make([]byte, HeaderSize+TrailerSize)
		copy(h, Magic)
		h[4] = Version
		binary.LittleEndian.PutUint64(h[8:], MinChunkSize)
		binary.LittleEndian.PutUint64(h[16:], disk)
		binary.LittleEndian.PutUint64(h[24:], (disk+MinChunkSize-1)/MinChunkSize)
		seeds = append(seeds, h)
	}
	return append(seeds, seeds[2][:HeaderSize], []byte(Magic), nil)
}
