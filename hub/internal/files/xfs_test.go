package files

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"
	"time"
)

// mkfs.xfs 6.1 writes every block of a protofile's file, so the images of the other tests hold
// no holes: here the extents of a file are given, over blocks of known bytes. Holes before,
// between and after extents and an unwritten (preallocated) extent read as zeros, across
// extent boundaries and at unaligned offsets.
func TestXFSFileHolesAndUnwritten(t *testing.T) {
	const bs = 512
	disk := make([]byte, 64*bs)
	for i := range disk {
		disk[i] = byte(i/bs) + 1 // every block its own non-zero value
	}
	fs := &xfs{r: bytes.NewReader(disk), bs: bs, dblocks: 64, agblocks: 64, agcount: 1, agblklog: 6}
	in := &xfsInode{ino: 99, size: 20*bs + 100}
	f := &xfsFile{fs: fs, in: in, ext: []xfsExtent{
		{startoff: 2, count: 3, off: 10 * bs},                  // blocks 2-4 ← disk blocks 10-12
		{startoff: 5, count: 2, off: 20 * bs, unwritten: true}, // blocks 5-6 preallocated
		{startoff: 9, count: 1, off: 30 * bs},                  // block 9 ← disk block 30
	}}
	want := make([]byte, in.size)
	for b := range 3 {
		copy(want[(2+b)*bs:(3+b)*bs], disk[(10+b)*bs:(11+b)*bs])
	}
	copy(want[9*bs:10*bs], disk[30*bs:31*bs])
	got, err := io.ReadAll(io.NewSectionReader(f, 0, in.size))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("whole file: %v, equal %v", err, bytes.Equal(got, want))
	}
	for _, r := range [][2]int64{{0, 1}, {bs - 3, 7}, {3*bs + 11, 3 * bs}, {9*bs - 1, bs + 2}, {20*bs + 50, 50}} {
		p := make([]byte, r[1])
		if n, err := f.ReadAt(p, r[0]); n != len(p) || err != nil || !bytes.Equal(p, want[r[0]:r[0]+r[1]]) {
			t.Fatalf("read %d at %d: %d %v", r[1], r[0], n, err)
		}
	}
	if n, err := f.ReadAt(make([]byte, 10), in.size-5); n != 5 || err != io.EOF {
		t.Fatalf("read past the end: %d %v", n, err)
	}
}

// Timestamps: seconds and nanoseconds since 1970 (negative seconds before it), and bigtime's
// nanoseconds since 1901-12-13T20:45:52Z.
func TestXFSTimestamps(t *testing.T) {
	fs := &xfs{}
	for _, tc := range []struct {
		raw  []byte
		big  bool
		want time.Time
	}{
		{[]byte{0x65, 0xe0, 0x7a, 0x00, 0x2f, 0x0a, 0x4b, 0x79}, false, time.Unix(0x65e07a00, 0x2f0a4b79).UTC()},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 5}, false, time.Unix(-1, 5).UTC()},
		{[]byte{0, 0, 0, 0, 0, 0, 0, 7}, true, time.Date(1901, 12, 13, 20, 45, 52, 7, time.UTC)},
		// 2^31 + 2^32 seconds after the bigtime epoch: 2106-02-07T06:28:16Z, past 32 bits.
		{be64((1<<31+1<<32)*1e9 + 123), true, time.Unix(1<<32, 123).UTC()},
	} {
		if got := fs.time(tc.raw, tc.big); !got.Equal(tc.want) {
			t.Errorf("%x big %v: %v, want %v", tc.raw, tc.big, got, tc.want)
		}
	}
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
	return b
}

// A data fork in btree format (a file of more extents than its inode holds; mkfs.xfs -p writes
// files whole, so no image of the other tests has one): a root in the inode pointing to two
// leaves, each checked for magic, level, owner and CRC.
func TestXFSBtreeFork(t *testing.T) {
	const bs = 1024
	disk := make([]byte, 64*bs)
	fs := &xfs{r: bytes.NewReader(disk), bs: bs, dblocks: 64, agblocks: 64, agcount: 1, agblklog: 6, v5: true}
	be := binary.BigEndian
	rec := func(startoff, startblock, count uint64) []byte {
		r := make([]byte, 16)
		be.PutUint64(r, startoff<<9|startblock>>43)
		be.PutUint64(r[8:], startblock<<21|count)
		return r
	}
	leaf := func(blk uint64, recs ...[]byte) {
		b := disk[blk*bs : (blk+1)*bs]
		be.PutUint32(b, 0x424d4133) // BMA3
		be.PutUint16(b[6:], uint16(len(recs)))
		be.PutUint64(b[56:], 99) // owner
		for i, r := range recs {
			copy(b[72+16*i:], r)
		}
		binary.LittleEndian.PutUint32(b[64:], crc32.Checksum(b, castagnoli))
	}
	leaf(10, rec(0, 40, 1), rec(2, 42, 1))
	leaf(11, rec(5, 50, 3))
	root := make([]byte, 4+16*2)
	be.PutUint16(root, 1)     // level
	be.PutUint16(root[2:], 2) // records
	be.PutUint64(root[4:], 0)
	be.PutUint64(root[12:], 5)
	be.PutUint64(root[20:], 10)
	be.PutUint64(root[28:], 11)
	in := &xfsInode{ino: 99, format: xfsFmtBtree, fork: root}
	ext, err := fs.extents(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []xfsExtent{{0, 1, 40 * bs, false}, {2, 1, 42 * bs, false}, {5, 3, 50 * bs, false}}
	if len(ext) != len(want) {
		t.Fatalf("extents %+v, want %+v", ext, want)
	}
	for i := range want {
		if ext[i] != want[i] {
			t.Fatalf("extents %+v, want %+v", ext, want)
		}
	}
	// A leaf of another inode, a damaged leaf, a leaf linked twice: refused.
	for name, damage := range map[string]func(){
		"owner":   func() { be.PutUint64(disk[11*bs+56:], 98) },
		"crc":     func() { disk[11*bs+80] ^= 1 },
		"cycle":   func() { be.PutUint64(root[28:], 10) },
		"outside": func() { be.PutUint64(root[28:], 64) },
	} {
		saved, savedRoot := bytes.Clone(disk), bytes.Clone(root)
		damage()
		if _, err := fs.extents(in); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
		copy(disk, saved)
		copy(root, savedRoot)
	}
}
