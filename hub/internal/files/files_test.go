package files_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/files/filestest"
)

// checkTree compares everything below vol of d with the source tree src: every entry's type,
// size, mode, mtime and target, and every file's bytes.
func checkTree(t *testing.T, d *files.Disk, vol, src string) {
	t.Helper()
	checkNodes(t, d, vol, src, filestest.Nodes(t, src))
}

// checkNodes compares everything below vol of d with want, and every file's bytes with those of
// the tree src.
func checkNodes(t *testing.T, d *files.Disk, vol, src string, want map[string]filestest.Node) {
	t.Helper()
	seen := 0
	var walk func(rel string)
	walk = func(rel string) {
		entries, err := d.ReadDir(path.Join("/", vol, rel))
		if err != nil {
			t.Fatalf("list /%s/%s: %v", vol, rel, err)
		}
		for _, e := range entries {
			p := path.Join(rel, e.Name)
			if rel == "" && e.Name == "lost+found" {
				continue
			}
			w, ok := want[p]
			if !ok {
				t.Fatalf("%s: listed, not in the source", p)
			}
			seen++
			if e.Type != w.Type || e.Mode != w.Mode || !e.Mtime.Equal(w.Mtime) || e.Target != w.Target || (w.Type != "dir" && e.Size != w.Size) {
				t.Fatalf("%s: got %+v, want %+v", p, e, w)
			}
			switch e.Type {
			case files.TypeDir:
				walk(p)
			case files.TypeFile:
				if e.Size == 0 {
					continue // most of the 10,000: each open would scan the directory again
				}
				fe, r, err := d.Open(path.Join("/", vol, p))
				if err != nil {
					t.Fatalf("open %s: %v", p, err)
				}
				got, err := io.ReadAll(io.NewSectionReader(r, 0, fe.Size))
				if err != nil {
					t.Fatalf("read %s: %v", p, err)
				}
				src, err := os.ReadFile(filepath.Join(src, p))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, src) {
					t.Fatalf("%s: %d bytes differ from the source's %d", p, len(got), len(src))
				}
			}
		}
	}
	walk("")
	if seen != len(want) {
		t.Fatalf("%d entries listed, the source has %d", seen, len(want))
	}
}

// fixture is the source tree and its ext4 filesystem, made once for every test of the package:
// writing 10,000 files and mkfs take seconds.
var fixture struct {
	once sync.Once
	dir  string
	src  string
	fs   []byte

	xfsOnce sync.Once
	xfs     []byte

	ntfsOnce sync.Once
	ntfs     []byte
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.dir != "" {
		_ = os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

func tree(t *testing.T) (src string, fs []byte) {
	t.Helper()
	fixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "files-test-")
		if err != nil {
			t.Fatal(err)
		}
		fixture.dir = dir
		filestest.Tree(t, filepath.Join(dir, "src"))
		fixture.fs = filestest.MkfsExt4(t, filepath.Join(dir, "src"), 48<<20)
		fixture.src = filepath.Join(dir, "src")
	})
	if fixture.fs == nil {
		t.Fatal("the fixture could not be made (see the first test)")
	}
	return fixture.src, fixture.fs
}

// xfsTree is the source tree of tree and its XFS filesystem.
func xfsTree(t *testing.T) (src string, fs []byte) {
	t.Helper()
	src, _ = tree(t)
	fixture.xfsOnce.Do(func() { fixture.xfs = filestest.MkfsXFS(t, src, 128<<20) })
	if fixture.xfs == nil {
		t.Fatal("the XFS fixture could not be made (see the first test)")
	}
	return src, fixture.xfs
}

// The same tree through XFS: a short-form root, the 10,000 entries of many in a node
// directory, block directories, local and remote symlinks, big.bin in extents.
func TestReadXFSBehindEveryTable(t *testing.T) {
	src, fs := xfsTree(t)
	junk := bytes.Repeat([]byte{0xa5}, 1<<20)
	for _, tc := range []struct {
		name string
		disk []byte
		vols []files.Entry
	}{
		{"whole disk", fs, []files.Entry{{Name: "disk", Type: "dir"}}},
		{"mbr", filestest.MBRDisk(junk, fs), []files.Entry{{Name: "p1", Type: "other"}, {Name: "p2", Type: "dir"}}},
		{"gpt", filestest.GPTDisk(fs, junk), []files.Entry{{Name: "p1", Type: "dir"}, {Name: "p2", Type: "other"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := files.OpenDisk(bytes.NewReader(tc.disk), int64(len(tc.disk)), 4<<20, 8)
			if err != nil {
				t.Fatal(err)
			}
			top, err := d.ReadDir("/")
			if err != nil {
				t.Fatal(err)
			}
			if len(top) != len(tc.vols) {
				t.Fatalf("top level %+v, want %+v", top, tc.vols)
			}
			vol := ""
			for i, e := range top {
				if e.Name != tc.vols[i].Name || e.Type != tc.vols[i].Type {
					t.Fatalf("top level %+v, want %+v", top, tc.vols)
				}
				if e.Type == "dir" && vol == "" {
					vol = e.Name
				}
			}
			checkTree(t, d, vol, src)
		})
	}
}

func TestReadExt4BehindEveryTable(t *testing.T) {
	src, fs := tree(t)
	small := filestest.MkfsExt4(t, t.TempDir(), 2<<20)
	junk := bytes.Repeat([]byte{0xa5}, 1<<20)
	for _, tc := range []struct {
		name string
		disk []byte
		vols []files.Entry // name and type of each top-level entry
	}{
		{"whole disk", fs, []files.Entry{{Name: "disk", Type: "dir"}}},
		{"mbr", filestest.MBRDisk(junk, fs, small), []files.Entry{{Name: "p1", Type: "other"}, {Name: "p2", Type: "dir"}, {Name: "p3", Type: "dir"}}},
		{"gpt", filestest.GPTDisk(fs, junk), []files.Entry{{Name: "p1", Type: "dir"}, {Name: "p2", Type: "other"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := files.OpenDisk(bytes.NewReader(tc.disk), int64(len(tc.disk)), 4<<20, 8)
			if err != nil {
				t.Fatal(err)
			}
			top, err := d.ReadDir("/")
			if err != nil {
				t.Fatal(err)
			}
			if len(top) != len(tc.vols) {
				t.Fatalf("top level %+v, want %+v", top, tc.vols)
			}
			vol := ""
			for i, e := range top {
				if e.Name != tc.vols[i].Name || e.Type != tc.vols[i].Type {
					t.Fatalf("top level %+v, want %+v", top, tc.vols)
				}
				if e.Type == "dir" && vol == "" {
					vol = e.Name
				}
			}
			checkTree(t, d, vol, src)
		})
	}
}

// Without the extent feature (ext2/ext3 layout), files map their blocks through direct, single,
// double indirect blocks: big.bin (2,305 blocks) needs the double, sparse.img holes in them.
func TestReadBlockMappedFiles(t *testing.T) {
	src, _ := tree(t)
	fs := filestest.MkfsExt4(t, src, 48<<20, "-O", "^extent,^64bit,^flex_bg,^huge_file,^dir_nlink,^extra_isize,^metadata_csum")
	d, err := files.OpenDisk(bytes.NewReader(fs), int64(len(fs)), 4<<20, 8)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, d, "disk", src)
}

func TestPathsAreNormalised(t *testing.T) {
	src, fs := tree(t)
	disk := filestest.GPTDisk(fs)
	d, err := files.OpenDisk(bytes.NewReader(disk), int64(len(disk)), 1<<20, 4)
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := os.ReadFile(filepath.Join(src, "etc/hosts"))
	for _, p := range []string{"/p1/etc/hosts", "p1/etc/hosts", "//p1/./etc//hosts", "/p1/bin/../etc/hosts", "/p1/etc/hosts/"} {
		e, r, err := d.Open(p)
		if err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		got, _ := io.ReadAll(io.NewSectionReader(r, 0, e.Size))
		if !bytes.Equal(got, hosts) {
			t.Fatalf("%q: %q", p, got)
		}
	}
	for _, tc := range []struct {
		path string
		want error
	}{
		{"/..", files.ErrBadPath},
		{"/p1/../../etc/hosts", files.ErrBadPath},
		{"../p1/etc/hosts", files.ErrBadPath},
		{"/p1/etc/hosts\x00.txt", files.ErrBadPath},
		{"/" + strings.Repeat("a/", 3000), files.ErrBadPath},
		{"/p1/etc/nothing", files.ErrNotFound},
		{"/p9/etc/hosts", files.ErrNotFound},
		{"/p1/etc/hosts/more", files.ErrNotDir},
		{"/p1/hosts-link/x", files.ErrNotDir}, // symlinks are not followed
		{"/p1/etc", files.ErrNotFile},
		{"/p1/hosts-link", files.ErrNotFile},
		{"/p1", files.ErrNotFile},
	} {
		if _, _, err := d.Open(tc.path); !errors.Is(err, tc.want) {
			t.Errorf("open %q: %v, want %v", tc.path, err, tc.want)
		}
	}
	if _, err := d.ReadDir("/p1/etc/hosts"); !errors.Is(err, files.ErrNotDir) {
		t.Fatalf("list a file: %v", err)
	}
}

func TestWriteTar(t *testing.T) {
	src, fs := tree(t)
	disk := filestest.MBRDisk(fs)
	d, err := files.OpenDisk(bytes.NewReader(disk), int64(len(disk)), 4<<20, 8)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var copied int64
	if err := d.WriteTar(&buf, "/p1/etc", func(n int64) { copied += n }); err != nil {
		t.Fatal(err)
	}
	want := filestest.Nodes(t, filepath.Join(src, "etc"))
	tr := tar.NewReader(&buf)
	got := map[string]bool{}
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(h.Name, "etc/"), "/")
		if h.Name == "etc/" {
			continue
		}
		w, ok := want[rel]
		if !ok || h.Mode != int64(w.Mode) || !h.ModTime.Equal(w.Mtime) || h.Linkname != w.Target {
			t.Fatalf("%s: %+v, want %+v", h.Name, h, w)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			s, _ := os.ReadFile(filepath.Join(src, "etc", rel))
			if !bytes.Equal(b, s) {
				t.Fatalf("%s: bytes differ", rel)
			}
			total += int64(len(b))
		}
		got[rel] = true
	}
	if len(got) != len(want) || copied != total {
		t.Fatalf("archive holds %v (%d bytes, %d counted), want %d entries", got, total, copied, len(want))
	}
}

// mkfs.ext4 -d keeps whole seconds: debugfs sets the nanoseconds and the epoch bits (the
// years after 2038) of the extra timestamp, which the reader must combine.
func TestMtimeNanosecondsAndEpoch(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	for _, n := range []string{"a", "b"} {
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	when := time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "a"), when, when); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(src, "b"), when, when); err != nil {
		t.Fatal(err)
	}
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		debugfs = "/usr/sbin/debugfs"
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, filestest.MkfsExt4(t, src, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{
		fmt.Sprintf("sif /a mtime_extra %#x", 123456789<<2),   // nanoseconds, epoch 0
		fmt.Sprintf("sif /b mtime_extra %#x", 987654321<<2|1), // and one epoch later: 2160
	} {
		if out, err := exec.Command(debugfs, "-w", "-R", cmd, img).CombinedOutput(); err != nil {
			t.Fatalf("debugfs %s: %v\n%s", cmd, err, out)
		}
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.OpenDisk(bytes.NewReader(b), int64(len(b)), 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]time.Time{
		"a": when.Add(123456789),
		"b": time.Unix(when.Unix()+1<<32, 987654321).UTC(),
	} {
		e, err := d.Stat("/disk/" + name)
		if err != nil || !e.Mtime.Equal(want) {
			t.Fatalf("%s: mtime %v (%v), want %v", name, e.Mtime, err, want)
		}
	}
}
