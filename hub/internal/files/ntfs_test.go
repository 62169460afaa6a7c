package files_test

import (
	"bytes"
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
