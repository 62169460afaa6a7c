package api_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/files/filestest"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// fsFixture is a source tree and a GPT disk holding its ext4 filesystem as p1, made once:
// writing 10,000 files and mkfs take seconds.
var fsFixture struct {
	once  sync.Once
	dir   string // holds src
	src   string
	disk  []byte
	fsOff int64 // where p1 starts on the disk
}

func fileDisk(t *testing.T) (string, []byte) {
	t.Helper()
	fsFixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "api-files-test-")
		if err != nil {
			t.Fatal(err)
		}
		fsFixture.dir = dir // removed by TestMain
		src := filepath.Join(dir, "src")
		filestest.Tree(t, src)
		fs := filestest.MkfsExt4(t, src, 48<<20)
		_ = os.RemoveAll(dir + "/fs") // nothing else is kept on disk but the tree
		fsFixture.src, fsFixture.disk = src, filestest.GPTDisk(fs)
	})
	if fsFixture.disk == nil {
		t.Fatal("the fixture could not be made (see the first test)")
	}
	return fsFixture.src, fsFixture.disk
}

func (h *testHub) filesGet(token, backupID, route, p, rangeHdr string) (*http.Response, []byte, error) {
	u := h.URL + api.Path(route, backupID, "disk-2000") + "?path=" + url.QueryEscape(p)
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if rangeHdr != "" {
		req.Header.Set("Range", rangeHdr)
	}
	resp, err := h.client(nil).Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func (h *testHub) listFiles(token, backupID, p string) (api.FileList, int, api.Error) {
	h.t.Helper()
	resp, b, err := h.filesGet(token, backupID, api.PathBackupFiles, p, "")
	if err != nil {
		h.t.Fatalf("list %q: %v", p, err)
	}
	var l api.FileList
	var e api.Error
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &l); err != nil {
			h.t.Fatalf("list %q: %v", p, err)
		}
	} else if err := json.Unmarshal(b, &e); err != nil {
		h.t.Fatalf("list %q: %d %q", p, resp.StatusCode, b)
	}
	return l, resp.StatusCode, e
}

// downloads returns sendense_hub_file_downloads_total{kind, outcome}.
func downloads(t *testing.T, reg *prometheus.Registry, kind, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sendense_hub_file_downloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["kind"] == kind && l["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series sendense_hub_file_downloads_total{kind=%q,outcome=%q}", kind, outcome)
	return 0
}

// checkFilesOverHTTP lists everything below vol over the API and compares it with the source
// tree src: every entry's metadata, and every non-empty file's bytes downloaded. It returns
// how many files it downloaded.
func checkFilesOverHTTP(t *testing.T, h *testHub, viewer, id, vol, src string) int {
	t.Helper()
	return checkNodesOverHTTP(t, h, viewer, id, vol, src, filestest.Nodes(t, src))
}

// checkNodesOverHTTP is checkFilesOverHTTP against the nodes want.
func checkNodesOverHTTP(t *testing.T, h *testHub, viewer, id, vol, src string, want map[string]filestest.Node) int {
	t.Helper()
	seen, downloaded := 0, 0
	var walk func(rel string)
	walk = func(rel string) {
		l, code, e := h.listFiles(viewer, id, path.Join(vol, rel))
		if code != http.StatusOK || l.Path != path.Join(vol, rel) {
			t.Fatalf("list %s: %d %+v (path %q)", rel, code, e, l.Path)
		}
		for _, en := range l.Entries {
			p := path.Join(rel, en.Name)
			if p == "lost+found" {
				continue
			}
			w, ok := want[p]
			if !ok {
				t.Fatalf("%s: listed, not in the source", p)
			}
			seen++
			if en.Type != w.Type || en.Mode != w.Mode || !en.Mtime.Equal(w.Mtime) || en.Target != w.Target || (w.Type != "dir" && en.Size != w.Size) {
				t.Fatalf("%s: got %+v, want %+v", p, en, w)
			}
			switch {
			case en.Type == api.FileTypeDir:
				walk(p)
			case en.Type == api.FileTypeFile && en.Size > 0:
				resp, got, err := h.filesGet(viewer, id, api.PathBackupFileContent, path.Join(vol, p), "")
				srcBytes, _ := os.ReadFile(filepath.Join(src, p))
				if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, srcBytes) || resp.ContentLength != en.Size {
					t.Fatalf("download %s: %v %v, %d bytes, want %d", p, resp.Status, err, len(got), len(srcBytes))
				}
				downloaded++
			}
		}
	}
	walk("")
	if seen != len(want) || seen < filestest.ManyEntries {
		t.Fatalf("%d entries listed, the source has %d", seen, len(want))
	}
	return downloaded
}

// The same tree in XFS, behind an MBR: listed and downloaded over the API as it went in.
func TestXFSFileRestoreOverHTTP(t *testing.T) {
	src, _ := fileDisk(t)
	// 60 MiB: the harness takes at most 1024 slots of 64 KiB in one batch.
	disk := filestest.MBRDisk(filestest.MkfsXFS(t, src, 60<<20, "-d", "agcount=2"))
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		id := h.backupImage(a, operator, disk)
		top, code, e := h.listFiles(viewer, id, "/")
		if code != http.StatusOK || len(top.Entries) != 1 || top.Entries[0].Name != "p1" || top.Entries[0].Type != api.FileTypeDir {
			t.Fatalf("top level: %d %+v %+v", code, top, e)
		}
		if n := checkFilesOverHTTP(t, h, viewer, id, "/p1", src); n < 10 {
			t.Fatalf("%d files downloaded", n)
		}
		big, _ := os.ReadFile(filepath.Join(src, "big.bin"))
		resp, got, err := h.filesGet(viewer, id, api.PathBackupFileContent, "/p1/big.bin", "bytes=4194000-4195000")
		if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, big[4194000:4195001]) {
			t.Fatalf("range across a chunk boundary: %v %v", resp.Status, err)
		}
	})
}

// The same tree in NTFS (filled by ntfs-3g), behind a GPT: listed and downloaded over the API
// as it went in, with the modes NTFS attributes give and mtimes to 100 ns.
func TestNTFSFileRestoreOverHTTP(t *testing.T) {
	src, _ := fileDisk(t)
	// 60 MiB: the harness takes at most 1024 slots of 64 KiB in one batch.
	disk := filestest.GPTDisk(filestest.MkfsNTFS(t, src, 60<<20, nil))
	want := filestest.NTFSNodes(t, src)
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		id := h.backupImage(a, operator, disk)
		top, code, e := h.listFiles(viewer, id, "/")
		if code != http.StatusOK || len(top.Entries) != 1 || top.Entries[0].Name != "p1" || top.Entries[0].Type != api.FileTypeDir {
			t.Fatalf("top level: %d %+v %+v", code, top, e)
		}
		if n := checkNodesOverHTTP(t, h, viewer, id, "/p1", src, want); n < 10 {
			t.Fatalf("%d files downloaded", n)
		}
		big, _ := os.ReadFile(filepath.Join(src, "big.bin"))
		resp, got, err := h.filesGet(viewer, id, api.PathBackupFileContent, "/p1/big.bin", "bytes=4194000-4195000")
		if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, big[4194000:4195001]) {
			t.Fatalf("range across a chunk boundary: %v %v", resp.Status, err)
		}
		sparse, _ := os.ReadFile(filepath.Join(src, "sparse.img"))
		resp, got, err = h.filesGet(viewer, id, api.PathBackupFileContent, "/p1/sparse.img", "bytes=4000-8199")
		if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, sparse[4000:8200]) {
			t.Fatalf("range across the sparse file's hole: %v %v", resp.Status, err)
		}
		// The metadata files are not the guest's: not found.
		if resp, _, _ := h.filesGet(viewer, id, api.PathBackupFileContent, "/p1/$MFT", ""); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("$MFT: %d", resp.StatusCode)
		}
	})
}

func TestFileRestoreOverHTTP(t *testing.T) {
	src, disk := fileDisk(t)
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		id := h.backupImage(a, operator, disk)

		top, code, e := h.listFiles(viewer, id, "/")
		if code != http.StatusOK || top.Path != "/" || len(top.Entries) != 1 || top.Entries[0].Name != "p1" || top.Entries[0].Type != api.FileTypeDir {
			t.Fatalf("top level: %d %+v %+v", code, top, e)
		}
		downloaded := checkFilesOverHTTP(t, h, viewer, id, "/p1", src)
		if got := downloads(t, h.Reg, "file", "ok"); got != float64(downloaded) {
			t.Fatalf("downloads metric %v, want %d", got, downloaded)
		}

		// Range, within the file larger than a chunk and across the sparse file's hole.
		big, _ := os.ReadFile(filepath.Join(src, "big.bin"))
		sparse, _ := os.ReadFile(filepath.Join(src, "sparse.img"))
		for _, tc := range []struct {
			p, hdr string
			want   []byte
			rng    string
		}{
			{"/p1/big.bin", "bytes=5000000-5999999", big[5000000:6000000], fmt.Sprintf("bytes 5000000-5999999/%d", len(big))},
			{"/p1/big.bin", "bytes=-7", big[len(big)-7:], fmt.Sprintf("bytes %d-%d/%d", len(big)-7, len(big)-1, len(big))},
			{"/p1/sparse.img", "bytes=4000-8199", sparse[4000:8200], fmt.Sprintf("bytes 4000-8199/%d", len(sparse))},
		} {
			resp, got, err := h.filesGet(viewer, id, api.PathBackupFileContent, tc.p, tc.hdr)
			if err != nil || resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != tc.rng || !bytes.Equal(got, tc.want) {
				t.Fatalf("%s %s: %v %v %q, equal %v", tc.p, tc.hdr, resp.Status, err, resp.Header.Get("Content-Range"), bytes.Equal(got, tc.want))
			}
		}
		if resp, _, _ := h.filesGet(viewer, id, api.PathBackupFileContent, "/p1/etc/hosts", "bytes=9999-"); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("range past the end: %d", resp.StatusCode)
		}

		// A directory as tar.
		resp, tb, err := h.filesGet(viewer, id, api.PathBackupFileArchive, "/p1/données", "")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("archive: %v %v", resp.Status, err)
		}
		tr := tar.NewReader(bytes.NewReader(tb))
		var names []string
		for {
			hd, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, hd.Name)
			if hd.Typeflag == tar.TypeReg {
				b, _ := io.ReadAll(tr)
				s, _ := os.ReadFile(filepath.Join(src, strings.TrimPrefix(hd.Name, "")))
				if !bytes.Equal(b, s) {
					t.Fatalf("archive %s: bytes differ", hd.Name)
				}
			}
		}
		if strings.Join(names, ",") != "données/,données/日本語.txt" {
			t.Fatalf("archive entries %q", names)
		}

		// Bad paths and missing ones: refused, named, nothing served.
		for _, tc := range []struct {
			route, p string
			code     int
		}{
			{api.PathBackupFileContent, "/p1/../../etc/passwd", http.StatusBadRequest},
			{api.PathBackupFileContent, "/../p1/etc/hosts", http.StatusBadRequest},
			{api.PathBackupFileContent, "/p1/etc/hosts\x00", http.StatusBadRequest},
			{api.PathBackupFiles, "/p1/etc/..//../..", http.StatusBadRequest},
			{api.PathBackupFileArchive, "/p1/..%2f..", http.StatusNotFound},           // a name with "%2f" in it: no such file
			{api.PathBackupFileContent, "/p1/etc/escape-link", http.StatusBadRequest}, // symlinks are not followed
			{api.PathBackupFileContent, "/p1/etc", http.StatusBadRequest},
			{api.PathBackupFiles, "/p1/etc/hosts", http.StatusBadRequest},
			{api.PathBackupFileArchive, "/p1/etc/hosts", http.StatusBadRequest},
			{api.PathBackupFileContent, "/p1/etc/nothing", http.StatusNotFound},
			{api.PathBackupFiles, "/p7", http.StatusNotFound},
		} {
			resp, b, err := h.filesGet(viewer, id, tc.route, tc.p, "")
			var e api.Error
			if err != nil || resp.StatusCode != tc.code || json.Unmarshal(b, &e) != nil || e.Error == "" {
				t.Fatalf("%s %q: %v %v %q, want %d with an error body", tc.route, tc.p, resp.Status, err, b, tc.code)
			}
		}
		if resp, _, _ := h.filesGet("", id, api.PathBackupFiles, "/", ""); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("no token: %d", resp.StatusCode)
		}
		if resp, _, _ := h.filesGet(viewer, "bk-nothing", api.PathBackupFiles, "/", ""); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("unknown backup: %d", resp.StatusCode)
		}

		// Each download is audited: who, what.
		evs := h.events(operator, "?type=audit")
		found := false
		for _, ev := range evs.Events {
			if ev.Details["file"] == "/p1/données/日本語.txt" && ev.Actor == "test-viewer" && ev.Details["backup_id"] == id &&
				ev.Details["disk_id"] == "disk-2000" && ev.Details["result"] == "complete" && ev.Outcome == "200" {
				found = true
			}
		}
		if !found {
			t.Fatalf("no audit event of the download of /p1/données/日本語.txt in %d events", len(evs.Events))
		}
	})
}

func TestDamagedChunkFailsOnlyItsFile(t *testing.T) {
	src, disk := fileDisk(t)
	big, _ := os.ReadFile(filepath.Join(src, "big.bin"))
	hosts, _ := os.ReadFile(filepath.Join(src, "etc/hosts"))
	// Where big.bin's bytes lie on the disk: its first 4 KiB are random, so found once.
	at := bytes.Index(disk, big[:4096])
	if at < 0 || !bytes.Equal(disk[at:at+len(big)], big) {
		t.Fatalf("big.bin is not contiguous on the disk (at %d)", at)
	}
	// A slot wholly inside the file, 2 MiB in: past the first MiB that is read before the
	// answer's status is sent.
	slot := (at + 2<<20 + testChunk - 1) / testChunk
	inFile := slot*testChunk - at
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		id := h.backupImage(a, operator, disk)
		d := chunk.Sum(disk[slot*testChunk : (slot+1)*testChunk]).String()
		p := filepath.Join(h.RepoDir, "chunks", d[:2], d[2:4], d)
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		_, _ = f.ReadAt(b[:], 200)
		b[0] ^= 0xff
		_, _ = f.WriteAt(b[:], 200)
		f.Close()

		// The whole file: the status went out before the damage; the connection breaks.
		resp, got, err := h.filesGet(viewer, id, api.PathBackupFileContent, "/p1/big.bin", "")
		if err == nil {
			t.Fatalf("a file over a damaged chunk was served whole: %v, %d bytes", resp.Status, len(got))
		}
		if len(got) > inFile || !bytes.Equal(got, big[:len(got)]) {
			t.Fatalf("%d bytes before the damage, or wrong ones (damage at %d)", len(got), inFile)
		}
		// A range starting at the damage: an error answer naming it.
		resp, body, err := h.filesGet(viewer, id, api.PathBackupFileContent, "/p1/big.bin", fmt.Sprintf("bytes=%d-%d", inFile, inFile+99))
		var e api.Error
		if err != nil || resp.StatusCode != http.StatusInternalServerError || json.Unmarshal(body, &e) != nil || e.Code != api.CodeDamaged {
			t.Fatalf("range over the damage: %v %v %q", resp.Status, err, body)
		}
		// The archive holding the file breaks too, never ends as if complete.
		if resp, b, err := h.filesGet(viewer, id, api.PathBackupFileArchive, "/p1", ""); err == nil {
			t.Fatalf("an archive over a damaged chunk ended cleanly: %v, %d bytes", resp.Status, len(b))
		}
		// Other files of the disk still read, and the range before the damage too.
		if resp, got, err := h.filesGet(viewer, id, api.PathBackupFileContent, "/p1/etc/hosts", ""); err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, hosts) {
			t.Fatalf("another file: %v %v", resp.Status, err)
		}
		if resp, got, err := h.filesGet(viewer, id, api.PathBackupFileContent, "/p1/big.bin", "bytes=0-1048575"); err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, big[:1<<20]) {
			t.Fatalf("the range before the damage: %v %v", resp.Status, err)
		}
		if l, code, e := h.listFiles(viewer, id, "/p1/many"); code != http.StatusOK || len(l.Entries) != filestest.ManyEntries {
			t.Fatalf("listing after the damage: %d %+v", code, e)
		}
		if v := downloads(t, h.Reg, "file", "failed"); v != 2 {
			t.Fatalf("failed file downloads %v, want 2", v)
		}
		if v := downloads(t, h.Reg, "archive", "failed"); v != 1 {
			t.Fatalf("failed archives %v, want 1", v)
		}
		failed := 0
		for _, ev := range h.events(operator, "?type=audit").Events {
			if ev.Details["file"] == "/p1/big.bin" && ev.Details["result"] == "failed" {
				failed++
			}
		}
		if failed != 2 {
			t.Fatalf("%d audit events of failed downloads of /p1/big.bin, want 2", failed)
		}
	})
}
