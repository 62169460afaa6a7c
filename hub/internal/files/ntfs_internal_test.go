package files

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sendense/sendense/hub/internal/files/filestest"
)

// ntfsFeatures is an NTFS image made by ntfs-3g with what the tree of the other tests does
// not hold, and the bytes each file of it must read as.
var ntfsFeatures struct {
	once sync.Once
	img  []byte
	want map[string][]byte // path below the volume → bytes
}

func pseudoRandom(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// featureImage makes a 24 MiB NTFS whose free space is cut into 4 KiB holes (a directory fill
// filled to the last cluster, then every other file removed) before frag is written into them:
// frag's data runs spill into an extension record ($ATTRIBUTE_LIST) and the MFT, grown between
// the files, is fragmented too. Also: a file with 40 hard links of 200-character names (its
// $FILE_NAMEs spill too), Windows symlinks and a junction (reparse points), a file with a DOS
// name, a compressed file, an alternate data stream, a read-only file, and a file whose data
// size is past its initialized size (ntfsfallocate).
func featureImage(t *testing.T) ([]byte, map[string][]byte) {
	t.Helper()
	ntfsFeatures.once.Do(func() {
		want := map[string][]byte{}
		write := func(p string, b []byte) {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		img := filestest.MkfsNTFS(t, "", 24<<20, func(mnt string) {
			at := func(p string) string { return filepath.Join(mnt, p) }
			write(at("links0"), []byte("linked\n"))
			want["links0"] = []byte("linked\n")
			for i := range 40 {
				name := fmt.Sprintf("link-%02d-%s", i, strings.Repeat("x", 200))
				if err := os.Link(at("links0"), at(name)); err != nil {
					t.Fatal(err)
				}
				want[name] = want["links0"]
			}
			for _, l := range []struct {
				name, target string
				junction     bool
			}{{"winlink", `..\etc\hosts`, false}, {"abslink", `C:\Windows\System32`, false}, {"junction", `C:\Users\Public`, true}} {
				if l.junction {
					if err := os.Mkdir(at(l.name), 0o755); err != nil {
						t.Fatal(err)
					}
				} else {
					write(at(l.name), nil)
				}
				if err := filestest.SetNTFSReparse(at(l.name), l.target, l.junction); err != nil {
					t.Fatal(err)
				}
			}
			write(at("LongFileName.txt"), []byte("long name\n"))
			want["LongFileName.txt"] = []byte("long name\n")
			if err := unix.Setxattr(at("LongFileName.txt"), "system.ntfs_dos_name", []byte("LONGFI~1.TXT"), 0); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(at("comp"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := filestest.SetNTFSAttributes(at("comp"), filestest.NTFSCompressed); err != nil {
				t.Fatal(err)
			}
			// In a directory marked compressed, ntfs-3g writes LZNT1: units that compress, units
			// that do not (stored), units of zeros (sparse).
			mixed := append(bytes.Repeat([]byte("compress me "), 6000), pseudoRandom(7, 70000)...)
			mixed = append(append(mixed, make([]byte, 200000)...), bytes.Repeat([]byte("tail "), 3000)...)
			for name, b := range map[string][]byte{
				"comp/c.txt":     bytes.Repeat([]byte("compress me "), 10000),
				"comp/rand.bin":  pseudoRandom(8, 100000),
				"comp/mixed.bin": mixed,
			} {
				write(at(name), b)
				want[name] = b
			}
			write(at("ads.txt"), []byte("main stream\n"))
			want["ads.txt"] = []byte("main stream\n")
			write(at("ads.txt:secret"), []byte("hidden\n"))
			write(at("ro.txt"), []byte("read only\n"))
			want["ro.txt"] = []byte("read only\n")
			if err := filestest.SetNTFSAttributes(at("ro.txt"), filestest.NTFSReadOnly); err != nil {
				t.Fatal(err)
			}
			pre := bytes.Repeat([]byte("abc"), 1000)
			write(at("pre"), pre)
			want["pre"] = append(pre, make([]byte, 1<<20-len(pre))...) // after ntfsfallocate below
			if err := os.MkdirAll(at("sub/dir"), 0o755); err != nil {
				t.Fatal(err)
			}
			write(at("sub/dir/victim"), []byte("victim\n"))
			write(at("sub/sibling"), []byte("sibling\n"))
			want["sub/sibling"] = []byte("sibling\n")

			// Fill the volume with 4 KiB files, then free every other one; reserve keeps 2 MiB in
			// one piece for ntfsfallocate.
			write(at("reserve"), make([]byte, 2<<20))
			if err := os.Mkdir(at("fill"), 0o755); err != nil {
				t.Fatal(err)
			}
			n := 0
			for ; ; n++ {
				err := os.WriteFile(at(fmt.Sprintf("fill/s%05d", n)), pseudoRandom(int64(n), 4096), 0o644)
				if errors.Is(err, syscall.ENOSPC) {
					_ = os.Remove(at(fmt.Sprintf("fill/s%05d", n)))
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for i := range n {
				if i%2 == 0 {
					if err := os.Remove(at(fmt.Sprintf("fill/s%05d", i))); err != nil {
						t.Fatal(err)
					}
				} else {
					want[fmt.Sprintf("fill/s%05d", i)] = pseudoRandom(int64(i), 4096)
				}
			}
			frag := pseudoRandom(-1, (n/2-64)*4096)
			write(at("frag"), frag)
			want["frag"] = frag
			if err := os.Remove(at("reserve")); err != nil {
				t.Fatal(err)
			}
		})
		f := filepath.Join(t.TempDir(), "fs.img")
		if err := os.WriteFile(f, img, 0o644); err != nil {
			t.Fatal(err)
		}
		fallocate := "/bin/ntfsfallocate"
		if p, err := exec.LookPath("ntfsfallocate"); err == nil {
			fallocate = p
		}
		if out, err := exec.Command(fallocate, "-l", "1048576", f, "/pre").CombinedOutput(); err != nil {
			t.Fatalf("ntfsfallocate: %v\n%s", err, out)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ntfsFeatures.img, ntfsFeatures.want = b, want
	})
	if ntfsFeatures.img == nil {
		t.Fatal("the NTFS image could not be made (see the first test)")
	}
	return ntfsFeatures.img, ntfsFeatures.want
}

func TestNTFSFeatures(t *testing.T) {
	img, want := featureImage(t)
	fs, err := openNTFS(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	// The image holds what the test is about.
	if len(fs.mft.runs) < 10 {
		t.Fatalf("the MFT has %d runs: not fragmented", len(fs.mft.runs))
	}
	for _, p := range []string{"frag", "links0"} {
		f, err := fs.walk([]string{p})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := fs.record(f.num)
		if err != nil || !rec.hasList {
			t.Fatalf("%s: no attribute list (%v)", p, err)
		}
	}
	f, _ := fs.walk([]string{"frag"})
	if parts := f.find(ntfsAttrData, ""); len(parts) < 2 {
		t.Fatalf("frag's data in %d extents", len(parts))
	}

	d, err := OpenDisk(bytes.NewReader(img), int64(len(img)), 4<<20, 8)
	if err != nil {
		t.Fatal(err)
	}
	// The root: each name once (no DOS alias, no stream, no metadata file), in order.
	root, err := d.ReadDir("/disk")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range root {
		names = append(names, e.Name)
	}
	wantRoot := []string{"LongFileName.txt", "abslink", "ads.txt", "comp", "fill", "frag", "junction", "links0"}
	for i := range 40 {
		wantRoot = append(wantRoot, fmt.Sprintf("link-%02d-%s", i, strings.Repeat("x", 200)))
	}
	wantRoot = append(wantRoot, "pre", "ro.txt", "sub", "winlink")
	sort.Strings(wantRoot)
	if strings.Join(names, "\n") != strings.Join(wantRoot, "\n") {
		t.Fatalf("root lists %q, want %q", names, wantRoot)
	}
	for p, b := range want {
		e, r, err := d.Open("/disk/" + p)
		if err != nil {
			t.Fatalf("open %s: %v", p, err)
		}
		got, err := io.ReadAll(io.NewSectionReader(r, 0, e.Size))
		if err != nil || !bytes.Equal(got, b) || e.Size != int64(len(b)) {
			t.Fatalf("%s: %d bytes (%v), want %d, equal %v", p, len(got), err, len(b), bytes.Equal(got, b))
		}
		wantMode := uint32(0o644)
		if p == "ro.txt" {
			wantMode = 0o444
		}
		if e.Type != TypeFile || e.Mode != wantMode {
			t.Fatalf("%s: %+v", p, e)
		}
	}
	fill, err := d.ReadDir("/disk/fill")
	if err != nil || len(fill) != len(want)-50 {
		t.Fatalf("fill: %d entries (%v), want %d", len(fill), err, len(want)-50)
	}
	for _, l := range []struct{ p, target string }{{"winlink", `..\etc\hosts`}, {"abslink", `C:\Windows\System32`}, {"junction", `C:\Users\Public`}} {
		e, err := d.Stat("/disk/" + l.p)
		if err != nil || e.Type != TypeSymlink || e.Target != l.target || e.Mode != 0o777 || e.Size != int64(len(l.target)) {
			t.Fatalf("%s: %+v %v", l.p, e, err)
		}
		if _, err := d.ReadDir("/disk/" + l.p); !errors.Is(err, ErrNotDir) {
			t.Fatalf("%s is listed through: %v", l.p, err)
		}
	}
	for _, p := range []string{"comp/c.txt", "comp/mixed.bin"} {
		f, err := fs.walk(strings.Split(p, "/"))
		if err != nil {
			t.Fatal(err)
		}
		if in, err := fs.info(f); err != nil || in.dataFlags&ntfsFlagCompressed == 0 {
			t.Fatalf("%s is not compressed: %+v %v", p, in, err)
		}
	}
	for _, p := range []string{"/disk/$MFT", "/disk/$Extend", "/disk/LONGFI~1.TXT", "/disk/ads.txt:secret"} {
		if _, err := d.Stat(p); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat %s: %v", p, err)
		}
	}
}

// A damaged MFT record (a torn write: its update sequence does not match) fails the file it
// describes, and the listing of its directory; a damaged index block fails the listing of its
// directory. Everything else still reads.
func TestNTFSDamageIsReported(t *testing.T) {
	img, want := featureImage(t)
	fs, err := openNTFS(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	victim, err := fs.walk([]string{"sub", "dir", "victim"})
	if err != nil {
		t.Fatal(err)
	}
	recOff := recordOffset(fs, victim.num)

	fill, err := fs.walk([]string{"fill"})
	if err != nil {
		t.Fatal(err)
	}
	alloc := fill.find(ntfsAttrIndexAlloc, "$I30")
	if len(alloc) == 0 || len(alloc[0].runs) == 0 {
		t.Fatal("fill has no index allocation")
	}
	indxOff := alloc[0].runs[0].lcn * fs.clusterSize

	for _, tc := range []struct {
		name   string
		at     int64
		broken []string // paths that fail
		msg    string
	}{
		{"record", recOff + 1022, []string{"/disk/sub/dir/victim", "/disk/sub/dir"}, "update sequence mismatch"},
		{"index block", indxOff + 510, []string{"/disk/fill"}, "index block at VCN 0: update sequence mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(img)
			bad[tc.at] ^= 0xff
			d, err := OpenDisk(bytes.NewReader(bad), int64(len(bad)), 4<<20, 8)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.broken {
				var err error
				if p == tc.broken[0] && tc.name == "record" {
					_, err = d.Stat(p)
				} else {
					_, err = d.ReadDir(p)
				}
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("%s: %v, want %q", p, err, tc.msg)
				}
			}
			for _, p := range []string{"sub/sibling", "frag", "links0", "pre"} {
				e, r, err := d.Open("/disk/" + p)
				if err != nil {
					t.Fatalf("beside the damage, %s: %v", p, err)
				}
				got, err := io.ReadAll(io.NewSectionReader(r, 0, e.Size))
				if err != nil || !bytes.Equal(got, want[p]) {
					t.Fatalf("beside the damage, %s: %v", p, err)
				}
			}
			if _, err := d.ReadDir("/disk"); err != nil {
				t.Fatalf("the root beside the damage: %v", err)
			}
		})
	}
}

// recordOffset returns where the bytes of MFT record num lie on the volume.
func recordOffset(fs *ntfs, num int64) int64 {
	off := num * fs.recordSize
	i := sort.Search(len(fs.mft.runs), func(i int) bool {
		r := fs.mft.runs[i]
		return (r.vcn+r.length)*fs.clusterSize > off
	})
	r := fs.mft.runs[i]
	return r.lcn*fs.clusterSize + off - r.vcn*fs.clusterSize
}

// An EFS-encrypted file (the attribute set in $STANDARD_INFORMATION: ntfs-3g cannot make one)
// is listed, and its download refused naming the feature, not served as ciphertext.
func TestNTFSEncryptedIsRefused(t *testing.T) {
	img, _ := featureImage(t)
	fs, err := openNTFS(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := fs.walk([]string{"ro.txt"})
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(img)
	rec := bad[recordOffset(fs, f.num):]
	le := binary.LittleEndian
	attr := int(le.Uint16(rec[20:])) // the first attribute: $STANDARD_INFORMATION
	if le.Uint32(rec[attr:]) != ntfsAttrStandardInfo {
		t.Fatal("the first attribute is not $STANDARD_INFORMATION")
	}
	value := attr + int(le.Uint16(rec[attr+20:]))
	le.PutUint32(rec[value+32:], le.Uint32(rec[value+32:])|ntfsFileEncrypted)
	d, err := OpenDisk(bytes.NewReader(bad), int64(len(bad)), 4<<20, 8)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := d.Stat("/disk/ro.txt"); err != nil || e.Type != TypeFile || e.Size != 10 {
		t.Fatalf("stat: %+v %v", e, err)
	}
	if _, _, err := d.Open("/disk/ro.txt"); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "encrypted (EFS)") {
		t.Fatalf("open: %v", err)
	}
}
