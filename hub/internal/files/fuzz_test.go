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
// ext2 with block maps) behind a GPT, and behind an MBR with an extended partition.
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
				child := p + "/" + e.Name
				if _, err := d.Stat(child); err != nil && errors.Is(err, ErrBadPath) && e.Name != ".." {
					// A name read from the image may be ".." or hold "/": refused, never escaping.
					continue
				}
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
	} {
		raw, err := os.ReadFile(filepath.Join("testdata/fuzz/FuzzOpenDisk", tc.seed))
		if err != nil {
			t.Fatal(err)
		}
		q := strings.TrimSuffix(strings.TrimPrefix(string(raw), "go test fuzz v1\n[]byte("), ")\n")
		s, err := strconv.Unquote(q)
		if err != nil {
			t.Fatalf("%s: %v", tc.seed, err)
		}
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
		}
	}
}
