package fidx

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/chunk"
)

const mib = 1 << 20

func TestNewSlots(t *testing.T) {
	for _, tc := range []struct {
		name              string
		disk, chunk       int64
		wantSlots, last   int
		wantZeroLastShort bool
	}{
		{"exact", 16 * mib, 4 * mib, 4, 4 * mib, false},
		{"short last", 10*mib + 512, 4 * mib, 3, 2*mib + 512, true},
		{"one byte", 1, 4 * mib, 1, 1, true},
		{"empty disk", 0, 4 * mib, 0, 0, false},
		{"smaller chunks", 1 * mib, 64 << 10, 16, 64 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := New(tc.disk, tc.chunk)
			if err != nil {
				t.Fatal(err)
			}
			if x.SlotCount() != tc.wantSlots || len(x.Digests) != tc.wantSlots {
				t.Fatalf("slots = %d (digests %d), want %d", x.SlotCount(), len(x.Digests), tc.wantSlots)
			}
			if x.Created.IsZero() {
				t.Error("Created not set")
			}
			var total int64
			for i := range tc.wantSlots {
				if !x.IsZeroSlot(i) {
					t.Errorf("slot %d of a new index is not zero", i)
				}
				if x.SlotOffset(i) != total {
					t.Errorf("SlotOffset(%d) = %d, want %d", i, x.SlotOffset(i), total)
				}
				total += int64(x.SlotLen(i))
			}
			if total != tc.disk {
				t.Fatalf("slot lengths sum to %d, want disk size %d", total, tc.disk)
			}
			if tc.wantSlots > 0 {
				last := tc.wantSlots - 1
				if x.SlotLen(last) != tc.last {
					t.Fatalf("last slot length %d, want %d", x.SlotLen(last), tc.last)
				}
				if x.Digests[last] != chunk.ZeroDigest(tc.last) {
					t.Fatal("last slot does not hold the zero digest of its own length")
				}
			}
			if r := x.Referenced(); len(r) != 0 {
				t.Fatalf("a new index references %d chunks", len(r))
			}
		})
	}
}

func TestNewRefusesBadSizes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		disk, chunk int64
	}{
		{"zero chunk", 10, 0},
		{"tiny chunk", 10, 512},
		{"huge chunk", 10, 128 * mib},
		{"negative disk", -1, 4 * mib},
		{"too many slots", int64(MaxSlots+1) * 4096, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.disk, tc.chunk); !errors.Is(err, ErrInvalid) {
				t.Fatalf("New(%d, %d) error = %v, want ErrInvalid", tc.disk, tc.chunk, err)
			}
		})
	}
}

func testIndex(t *testing.T) *Index {
	t.Helper()
	x, err := New(5*4*mib+100, 4*mib) // 6 slots, last one 100 bytes
	if err != nil {
		t.Fatal(err)
	}
	x.Created = time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)
	a, b := chunk.Sum([]byte("a")), chunk.Sum([]byte("b"))
	x.Digests[0] = a
	x.Digests[2] = b
	x.Digests[3] = a
	x.Digests[5] = chunk.Sum([]byte("last"))
	return x
}

func TestReferenced(t *testing.T) {
	x := testIndex(t)
	want := []chunk.Digest{chunk.Sum([]byte("a")), chunk.Sum([]byte("b")), chunk.Sum([]byte("last"))}
	if got := x.Referenced(); !slices.Equal(got, want) {
		t.Fatalf("Referenced = %v, want %v", got, want)
	}
	// The zero digest of a full slot in the short last slot is real data (4 MiB of zeros cannot
	// fit in 100 bytes, so it can only be a chunk someone named): it must be referenced.
	x.Digests[5] = chunk.ZeroDigest(4 * mib)
	if got := x.Referenced(); !slices.Contains(got, chunk.ZeroDigest(4*mib)) {
		t.Fatalf("Referenced = %v, want it to include the full zero digest in the short slot", got)
	}
	if x.IsZeroSlot(5) {
		t.Fatal("IsZeroSlot(5) with a full-slot zero digest in a 100-byte slot")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		x    func() *Index
	}{
		{"mixed", func() *Index { return testIndex(t) }},
		{"empty disk", func() *Index {
			x, _ := New(0, 4*mib)
			return x
		}},
		{"zero time", func() *Index {
			x := testIndex(t)
			x.Created = time.Time{}
			return x
		}},
		{"pre-1970 time", func() *Index {
			x := testIndex(t)
			x.Created = time.Date(1960, 1, 1, 0, 0, 0, 5, time.UTC)
			return x
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := tc.x()
			b, err := x.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != x.EncodedSize() {
				t.Fatalf("encoded %d bytes, EncodedSize says %d", len(b), x.EncodedSize())
			}
			var y Index
			if err := y.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if y.ChunkSize != x.ChunkSize || y.DiskSize != x.DiskSize || !y.Created.Equal(x.Created) || !slices.Equal(y.Digests, x.Digests) {
				t.Fatalf("round trip differs:\n got %+v\nwant %+v", y, x)
			}
			b2, err := y.MarshalBinary()
			if err != nil || !bytes.Equal(b, b2) {
				t.Fatalf("re-encoding differs (err %v)", err)
			}
		})
	}
}

func TestLayout(t *testing.T) {
	x := testIndex(t)
	b, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if string(b[:4]) != "SDFX" || b[4] != 1 {
		t.Fatalf("magic/version = %q %d", b[:4], b[4])
	}
	if le.Uint64(b[8:]) != 4*mib || le.Uint64(b[16:]) != uint64(x.DiskSize) || le.Uint64(b[24:]) != 6 {
		t.Fatal("sizes not at the documented offsets")
	}
	if int64(le.Uint64(b[32:])) != x.Created.Unix() || le.Uint32(b[40:]) != 123456789 {
		t.Fatal("creation time not at the documented offsets")
	}
	if !bytes.Equal(b[48:80], x.Digests[0][:]) {
		t.Fatal("first digest not at offset 48")
	}
	sum := sha256.Sum256(b[:len(b)-32])
	if !bytes.Equal(b[len(b)-32:], sum[:]) {
		t.Fatal("trailer is not the SHA-256 of the rest")
	}
}

// reseal recomputes the trailer so that a test reaches the checks behind it.
func reseal(b []byte) []byte {
	sum := sha256.Sum256(b[:len(b)-TrailerSize])
	copy(b[len(b)-TrailerSize:], sum[:])
	return b
}

func TestUnmarshalRejects(t *testing.T) {
	good, err := testIndex(t).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"short", good[:40], ErrCorrupt},
		{"truncated", good[:len(good)-1], ErrCorrupt},
		{"one slot missing", reseal(mut(func(b []byte) []byte {
			return append(b[:len(b)-TrailerSize-32], b[len(b)-TrailerSize:]...)
		})), ErrCorrupt},
		{"trailing bytes", append(bytes.Clone(good), 0), ErrCorrupt},
		{"bad magic", mut(func(b []byte) []byte { b[3] = 'Y'; return b }), ErrBadMagic},
		{"version 2", mut(func(b []byte) []byte { b[4] = 2; return b }), ErrUnsupportedVersion},
		{"digest flipped", mut(func(b []byte) []byte { b[100] ^= 1; return b }), ErrCorrupt},
		{"trailer flipped", mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrCorrupt},
		{"disk size changed", mut(func(b []byte) []byte { b[16] ^= 1; return b }), ErrCorrupt},
		{"slot count wrong, resealed", reseal(mut(func(b []byte) []byte { le.PutUint64(b[24:], 7); return b })), ErrCorrupt},
		{"disk size wrong, resealed", reseal(mut(func(b []byte) []byte { le.PutUint64(b[16:], 40*mib); return b })), ErrCorrupt},
		{"chunk size zero, resealed", reseal(mut(func(b []byte) []byte { le.PutUint64(b[8:], 0); return b })), ErrCorrupt},
		{"chunk size huge, resealed", reseal(mut(func(b []byte) []byte { le.PutUint64(b[8:], 1<<63); return b })), ErrCorrupt},
		{"reserved byte, resealed", reseal(mut(func(b []byte) []byte { b[6] = 1; return b })), ErrCorrupt},
		{"nanoseconds, resealed", reseal(mut(func(b []byte) []byte { le.PutUint32(b[40:], 1e9); return b })), ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := &Index{ChunkSize: 1}
			err := x.UnmarshalBinary(tc.b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("UnmarshalBinary error = %v, want %v", err, tc.want)
			}
			if x.ChunkSize != 1 || x.Digests != nil {
				t.Fatal("UnmarshalBinary changed the index on error")
			}
		})
	}
}

func TestMarshalRefusesInvalid(t *testing.T) {
	x := testIndex(t)
	x.Digests = x.Digests[:5]
	if _, err := x.MarshalBinary(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("MarshalBinary with a digest missing: %v, want ErrInvalid", err)
	}
}

func TestDeriveAndClone(t *testing.T) {
	parent := testIndex(t)
	parent.Created = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	child, err := Derive(parent, parent.DiskSize)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(child.Digests, parent.Digests) || child.ChunkSize != parent.ChunkSize {
		t.Fatal("derived index differs from its parent")
	}
	if !child.Created.After(parent.Created) {
		t.Fatalf("derived index created %v, parent %v", child.Created, parent.Created)
	}
	child.Digests[1] = chunk.Sum([]byte("changed"))
	if parent.Digests[1] == child.Digests[1] {
		t.Fatal("changing the derived index changed its parent")
	}

	for _, size := range []int64{parent.DiskSize + 1, parent.DiskSize - 1, 2 * parent.DiskSize} {
		if _, err := Derive(parent, size); !errors.Is(err, ErrSizeChanged) {
			t.Fatalf("Derive to size %d: %v, want ErrSizeChanged", size, err)
		}
	}
	broken := parent.Clone()
	broken.Digests = broken.Digests[:1]
	if _, err := Derive(broken, broken.DiskSize); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Derive from an invalid parent: %v, want ErrInvalid", err)
	}
}
