package files_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/files/filestest"
)

// ntfsTree is the source tree of tree and its NTFS filesystem, filled by ntfs-3g.
func ntfsTree(t *testing.T) (src string, fs []byte) {
	t.Helper()
	src, _ = tree(t)
	fixture.ntfsOnce.Do(func() {
		start := time.Now()
		fixture.ntfs = filestest.MkfsNTFS(t, src, 64<<20, nil)
		t.Logf("NTFS image made in %v", time.Since(start))
	})
	if fixture.ntfs == nil {
		t.Fatal("the NTFS fixture could not be made (see the first test)")
	}
	return src, fixture.ntfs
}

// The tree through NTFS as ntfs-3g writes it: the 10,000 entries of many in a B+ tree index
// ($INDEX_ALLOCATION), big.bin non-resident over several chunks, small files resident,
// sparse.img with a sparse run, Interix symlinks, non-ASCII names in UTF-16, mtimes to 100 ns,
// etc/shadow... read-only files as 0444.
func TestReadNTFSBehindEveryTable(t *testing.T) {
	src, fs := ntfsTree(t)
	want := filestest.NTFSNodes(t, src)
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
			checkNodes(t, d, vol, src, want)
		})
	}
}

// Without mounting anything (mkntfs, then ntfscp): a file larger than a chunk, a resident one,
// a name outside the BMP (a surrogate pair in UTF-16), and 300 names in the root's B+ tree.
func TestReadNTFSMadeWithoutMounting(t *testing.T) {
	src, _ := tree(t)
	dir := t.TempDir()
	copied := map[string]string{
		"big.bin":   filepath.Join(src, "big.bin"),
		"hosts":     filepath.Join(src, "etc/hosts"),
		"日本語 🙂.txt": filepath.Join(src, "données/日本語.txt"),
	}
	when := time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC)
	for i := range 300 {
		p := filepath.Join(dir, fmt.Sprintf("e%03d", i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("entry %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, when, when.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
		copied[fmt.Sprintf("entry-%03d", i)] = p
	}
	fs := filestest.MkntfsCopy(t, 32<<20, copied)
	d, err := files.OpenDisk(bytes.NewReader(fs), int64(len(fs)), 4<<20, 8)
	if err != nil {
		t.Fatal(err)
	}
	es, err := d.ReadDir("/disk")
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(copied) {
		t.Fatalf("%d entries listed, %d copied", len(es), len(copied))
	}
	for _, e := range es {
		from, ok := copied[e.Name]
		if !ok {
			t.Fatalf("%q listed, not copied", e.Name)
		}
		want, _ := os.ReadFile(from)
		fi, _ := os.Stat(from)
		fe, r, err := d.Open("/disk/" + e.Name)
		if err != nil {
			t.Fatalf("open %s: %v", e.Name, err)
		}
		got, err := io.ReadAll(io.NewSectionReader(r, 0, fe.Size))
		if err != nil || !bytes.Equal(got, want) || e.Size != int64(len(want)) || e.Type != files.TypeFile || e.Mode != 0o644 {
			t.Fatalf("%s: %+v, %d bytes read (%v), want %d", e.Name, e, len(got), err, len(want))
		}
		// ntfscp -t keeps whole seconds.
		if !e.Mtime.Equal(fi.ModTime().UTC().Truncate(time.Second)) {
			t.Fatalf("%s: mtime %v, want %v", e.Name, e.Mtime, fi.ModTime().UTC())
		}
	}
}
