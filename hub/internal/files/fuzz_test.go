package files

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzOpenDisk reads partition tables and filesystems out of arbitrary bytes: it must never
// panic, allocate without bound or loop forever, whatever the image claims. The seed corpus in
// testdata/fuzz/FuzzOpenDisk holds small real filesystems made by mkfs (ext4 with extents,
// ext2 with block maps) behind a GPT, and behind an MBR with an extended partition, and XFS
// version 5 and version 4 on whole disks (1 KiB blocks, external log, cut after their last
// used block with the superblock's size to match), and NTFS on a whole disk and behind an MBR
// (mkntfs with 512-byte clusters, filled by ntfs-3g, cut after the root's index blocks with the
// boot sector's size to match; the clusters it does not read — $LogFile, $MFTMirr, $UpCase… —
// and the MFT records not in use are zeros).
func FuzzOpenDisk(f *testing.F) {
	f.Add([]byte{})
	mbr := make([]byte, 2048)
	mbr[446+4], mbr[446+8], mbr[446+12] = 0x05, 1, 3 // an extended partition whose chain loops
	mbr[510], mbr[511] = 0x55, 0xaa
	copy(mbr[512:], mbr[:512])
	f.Add(mbr)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := OpenDisk(bytes.NewReader(data), int64(len(data)), 4096, 4)
		if err != nil {
			return
		}
		top, err := d.ReadDir("/")
		if err != nil {
			return
		}
		budget := 300 // operations per input, so that one input stays fast
		var walk func(p string, depth int)
		walk = func(p string, depth int) {
			entries, err := d.ReadDir(p)
			if err != nil || depth > 4 {
				return
			}
			for _, e := range entries {
				if budget--; budget < 0 {
					return
				}
				if e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
					t.Fatalf("a listing returned the name %q", e.Name)
				}
				child := p + "/" + e.Name
				switch e.Type {
				case TypeDir:
					walk(child, depth+1)
				case TypeFile:
					if fe, r, err := d.Open(child); err == nil {
						_, _ = io.Copy(io.Discard, io.NewSectionReader(r, 0, min(fe.Size, 1<<20)))
					}
				}
			}
		}
		for _, v := range top {
			if v.Type == TypeDir {
				walk("/"+v.Name, 0)
				_ = d.WriteTar(&capped{n: 4 << 20}, "/"+v.Name, nil)
			}
		}
	})
}

// capped is a writer that fails after n bytes: an archive of a hostile image may claim
// terabytes of sparse files.
type capped struct{ n int }

func (w *capped) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, errors.New("capped")
	}
	w.n -= len(p)
	return len(p), nil
}

// TestFuzzSeedsRead checks that the seeds reach the parsers' depths: the MBR seed holds ext2
// (block maps) as p1 and ext4 (extents) as the logical partition p5, the GPT seed ext4 as p1.
func TestFuzzSeedsRead(t *testing.T) {
	for _, tc := range []struct {
		seed string
		vols []string
	}{
		{"mbr-ext2-and-logical-ext4", []string{"p1", "p5"}},
		{"gpt-ext4", []string{"p1"}},
		{"disk-xfs5", []string{"disk"}},
		{"disk-xfs4", []string{"disk"}},
		{"disk-ntfs", []string{"disk"}},
		{"mbr-ntfs", []string{"p1"}},
	} {
		s := string(seed(t, tc.seed))
		d, err := OpenDisk(strings.NewReader(s), int64(len(s)), 4096, 4)
		if err != nil {
			t.Fatalf("%s: %v", tc.seed, err)
		}
		for _, v := range tc.vols {
			e, r, err := d.Open("/" + v + "/d/sub/g")
			if err != nil {
				t.Fatalf("%s %s: %v", tc.seed, v, err)
			}
			b := make([]byte, e.Size)
			if _, err := r.ReadAt(b, 0); err != nil || string(b) != "abc" {
				t.Fatalf("%s %s: %q %v", tc.seed, v, b, err)
			}
			l, err := d.Stat("/" + v + "/longlink")
			if err != nil || l.Target != strings.Repeat("x", 70) {
				t.Fatalf("%s %s: long symlink %+v %v", tc.seed, v, l, err)
			}
			if !strings.HasPrefix(tc.seed, "disk-xfs") {
				continue
			}
			// XFS: a symlink in a block of its own, directories in one 4 KiB directory block made of
			// four filesystem blocks.
			l, err = d.Stat("/disk/remotelink")
			if err != nil || l.Target != strings.Repeat("y", 600) {
				t.Fatalf("%s: remote symlink %+v %v", tc.seed, l, err)
			}
			for dir, n := range map[string]int{"blk": 35, "blk60": 60} {
				es, err := d.ReadDir("/disk/" + dir)
				if err != nil || len(es) != n {
					t.Fatalf("%s: /%s: %d entries (%v), want %d", tc.seed, dir, len(es), err, n)
				}
			}
			if e, r, err := d.Open("/disk/blk/b7"); err != nil || e.Mode != 0o644 {
				t.Fatalf("%s: blk/b7: %+v %v", tc.seed, e, err)
			} else if b := make([]byte, 3); func() bool { _, err := r.ReadAt(b, 0); return err != nil }() || string(b) != "abc" {
				t.Fatalf("%s: blk/b7 reads %q", tc.seed, b)
			}
		}
	}
}

// seed returns the bytes of a seed of FuzzOpenDisk.
func seed(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata/fuzz/FuzzOpenDisk", name))
	if err != nil {
		t.Fatal(err)
	}
	q := strings.TrimSuffix(strings.TrimPrefix(string(raw), "go test fuzz v1\n[]byte("), ")\n")
	s, err := strconv.Unquote(q)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return []byte(s)
}

// A directory entry renamed "../xx" by a hostile image is neither listed nor archived: a tar
// of it would write outside the directory it is extracted into.
func TestHostileNamesAreDropped(t *testing.T) {
	img := seed(t, "gpt-ext4")
	at := bytes.Index(img, []byte("f.txt"))
	if at < 0 {
		t.Fatal("no entry f.txt in the seed")
	}
	copy(img[at:], "../xx")
	d, err := OpenDisk(bytes.NewReader(img), int64(len(img)), 4096, 4)
	if err != nil {
		t.Fatal(err)
	}
	es, err := d.ReadDir("/p1/d")
	if err != nil || len(es) != 1 || es[0].Name != "sub" {
		t.Fatalf("listing %+v %v, want only sub", es, err)
	}
	var buf bytes.Buffer
	if err := d.WriteTar(&buf, "/p1", nil); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte("../xx")) || !bytes.Contains(buf.Bytes(), []byte("p1/d/sub/g")) {
		t.Fatal("the archive holds the hostile name, or misses the rest")
	}
}

// Damage under a CRC of XFS version 5 is reported as such, for the structure it hits only.
func TestXFSDamageIsReported(t *testing.T) {
	img := seed(t, "disk-xfs5")
	x, err := openXFS(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenDisk(bytes.NewReader(img), int64(len(img)), 4096, 4)
	if err != nil {
		t.Fatal(err)
	}
	g, err := d.Stat("/disk/d/sub/g")
	if err != nil {
		t.Fatal(err)
	}
	off, _, err := x.inodeAddr(g.id)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(img)
	bad[off+60] ^= 1 // a bit of the size
	if d, err = OpenDisk(bytes.NewReader(bad), int64(len(bad)), 4096, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat("/disk/d/sub/g"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "CRC mismatch") {
		t.Fatalf("a damaged inode: %v", err)
	}
	if l, err := d.Stat("/disk/longlink"); err != nil || l.Target != strings.Repeat("x", 70) {
		t.Fatalf("beside the damage: %+v %v", l, err)
	}
	// A damaged superblock: the volume is listed as one this package cannot read.
	bad = bytes.Clone(img)
	bad[8] ^= 1
	if d, err = OpenDisk(bytes.NewReader(bad), int64(len(bad)), 4096, 4); err != nil {
		t.Fatal(err)
	}
	if top, err := d.ReadDir("/"); err != nil || len(top) != 1 || top[0].Type != TypeOther {
		t.Fatalf("damaged superblock: %+v %v", top, err)
	}
	if _, err := d.Stat("/disk/d"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "superblock CRC") {
		t.Fatalf("damaged superblock: %v", err)
	}
}

// lznt1Sample is one compressed LZNT1 chunk: three literals, then a back-reference of 9 bytes
// 3 back ("abc" + "abcabcabc"), then the end.
var lznt1Sample = []byte{0x05, 0x80, 0x08, 'a', 'b', 'c', 0x06, 0x20, 0, 0}

func TestLZNT1(t *testing.T) {
	dst := make([]byte, 64)
	n, err := lznt1(dst, lznt1Sample)
	if err != nil || string(dst[:n]) != "abcabcabcabc" {
		t.Fatalf("%q %v", dst[:n], err)
	}
	// A stored chunk (bit 15 clear), then a back-reference further back than the chunk holds.
	stored := append([]byte{0x03, 0x00}, "wxyz"...)
	if n, err := lznt1(dst, stored); err != nil || string(dst[:n]) != "wxyz" {
		t.Fatalf("stored: %q %v", dst[:n], err)
	}
	bad := bytes.Clone(lznt1Sample)
	bad[7] = 0x30 // 4 back from 3 bytes in
	if _, err := lznt1(dst, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a reference before the chunk: %v", err)
	}
}

// FuzzLZNT1 decompresses arbitrary bytes into a compression unit: never a panic, never a
// write past the unit.
func FuzzLZNT1(f *testing.F) {
	f.Add(lznt1Sample)
	f.Add(append([]byte{0x03, 0x00}, "wxyz"...))
	f.Fuzz(func(t *testing.T, src []byte) {
		dst := make([]byte, 8192)
		n, _ := lznt1(dst[:4096], src)
		if n < 0 || n > 4096 {
			t.Fatalf("%d bytes written into 4096", n)
		}
		for _, b := range dst[4096:] {
			if b != 0 {
				t.Fatal("written past the unit")
			}
		}
	})
}
