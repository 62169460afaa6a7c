package files

import (
	"bytes"
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
