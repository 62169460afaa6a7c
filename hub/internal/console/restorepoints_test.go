package console_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/files/filestest"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/hub/internal/restoretest"
	wire "github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

const (
	fileBackup = "bk-files"
	hostsText  = "127.0.0.1 localhost\n10.0.0.5 db1\n"
)

// storedDisk is a restore point's disk in a real repository: a GPT disk whose p1 is an ext4
// filesystem of a small tree. Every read goes through restore's verified image.
type storedDisk struct {
	repo *repository.Repository
	ref  repository.IndexRef
	size int64
	img  []byte
	idx  *fidx.Index
}

// damagedRepo is the repository with some chunks reading as damaged, as restore sees a chunk
// that fails its digest.
type damagedRepo struct {
	*repository.Repository
	bad map[chunk.Digest]bool
}

func (d damagedRepo) ReadChunk(ctx context.Context, dg chunk.Digest, dst []byte) ([]byte, error) {
	if d.bad[dg] {
		return nil, fmt.Errorf("chunk %s: %w", dg, repository.ErrChunkDamaged)
	}
	return d.Repository.ReadChunk(ctx, dg, dst)
}
func (d damagedRepo) QuarantineChunk(context.Context, chunk.Digest) (string, error) {
	return "", errors.New("not moved in this test")
}

// damagedDisk is the stored disk with the chunks holding data bytes [from, to) damaged.
type damagedDisk struct {
	*storedDisk
	bad map[chunk.Digest]bool
}

func (s *storedDisk) damaged(t *testing.T, data []byte) *damagedDisk {
	t.Helper()
	off := int64(bytes.Index(s.img, data))
	if off < 0 {
		t.Fatal("the bytes to damage are not on the disk")
	}
	bad := map[chunk.Digest]bool{}
	for i := range s.idx.SlotCount() {
		so := s.idx.SlotOffset(i)
		if so+int64(s.idx.SlotLen(i)) > off && so < off+int64(len(data)) {
			bad[s.idx.Digests[i]] = true
		}
	}
	return &damagedDisk{storedDisk: s, bad: bad}
}

func (d *damagedDisk) OpenIn(ctx context.Context, backupID, diskID, _ string) (*restore.Image, restore.Disk, error) {
	return d.Open(ctx, backupID, diskID)
}

func (d *damagedDisk) Open(ctx context.Context, backupID, diskID string) (*restore.Image, restore.Disk, error) {
	if backupID != d.ref.BackupID || diskID != d.ref.DiskID {
		return nil, restore.Disk{}, fmt.Errorf("backup %s disk %s: %w", backupID, diskID, catalog.ErrNotFound)
	}
	img, err := restore.OpenImage(ctx, damagedRepo{d.repo, d.bad}, d.ref)
	if err != nil {
		return nil, restore.Disk{}, err
	}
	return img, restore.Disk{BackupID: backupID, DiskID: diskID, Size: img.Size(), IndexDigest: "d"}, nil
}

func (s *storedDisk) OpenIn(ctx context.Context, backupID, diskID, _ string) (*restore.Image, restore.Disk, error) {
	return s.Open(ctx, backupID, diskID)
}

func (s *storedDisk) Open(ctx context.Context, backupID, diskID string) (*restore.Image, restore.Disk, error) {
	if backupID != s.ref.BackupID || diskID != s.ref.DiskID {
		return nil, restore.Disk{}, fmt.Errorf("backup %s disk %s: %w", backupID, diskID, catalog.ErrNotFound)
	}
	img, err := restore.OpenImage(ctx, s.repo, s.ref)
	if err != nil {
		return nil, restore.Disk{}, err
	}
	return img, restore.Disk{BackupID: backupID, DiskID: diskID, Size: img.Size(), IndexDigest: "d"}, nil
}

// newStoredDisk builds the tree /etc/hosts, /etc/app/{a.conf,b.conf}, /big.bin (3 MiB, more
// than the first read of a download), makes it an ext4 p1 and stores the disk.
func newStoredDisk(t *testing.T) (*storedDisk, []byte) {
	t.Helper()
	src := t.TempDir()
	big := make([]byte, 3<<20) // no two chunks alike: damage to one must not reach another
	_, _ = rand.NewChaCha8([32]byte{1}).Read(big)
	for p, b := range map[string][]byte{"etc/hosts": []byte(hostsText), "etc/app/a.conf": []byte("a=1\n"), "etc/app/b.conf": []byte("b=2\n"), "big.bin": big} {
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filestest.GPTDisk(filestest.MkfsExt4(t, src, 16<<20))
	const slot = 64 << 10
	repo, err := repository.InitDir(t.Context(), filepath.Join(t.TempDir(), "repo"), slot, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	idx, err := fidx.New(int64(len(img)), slot)
	if err != nil {
		t.Fatal(err)
	}
	for i := range idx.SlotCount() {
		p := img[idx.SlotOffset(i) : idx.SlotOffset(i)+int64(idx.SlotLen(i))]
		d := chunk.Sum(p)
		idx.Digests[i] = d
		if d == chunk.ZeroDigest(len(p)) {
			continue
		}
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(p), p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := repo.PutChunk(t.Context(), d, blob); err != nil {
			t.Fatal(err)
		}
	}
	ref := repository.IndexRef{VMUUID: "vm", DiskID: "disk-2000", BackupID: fileBackup}
	if _, err := repo.WriteIndex(t.Context(), ref, idx); err != nil {
		t.Fatal(err)
	}
	return &storedDisk{repo: repo, ref: ref, size: int64(len(img)), img: img, idx: idx}, big
}

// restoreTests is an in-memory restore-test service that records what it was asked to start.
type restoreTests struct {
	mu      sync.Mutex
	started []wire.StartRestoreTestRequest
	actors  []string
}

func (s *restoreTests) Start(_ context.Context, req wire.StartRestoreTestRequest, actor string) (wire.RestoreTest, error) {
	if req.VM != "pgtest1" {
		return wire.RestoreTest{}, fmt.Errorf("vm %q: %w", req.VM, catalog.ErrNotFound)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = append(s.started, req)
	s.actors = append(s.actors, actor)
	return wire.RestoreTest{ID: fmt.Sprintf("rt-%d", len(s.started)), VMName: req.VM, Status: wire.JobQueued}, nil
}

var finishedTest = wire.RestoreTest{ID: "rt-done", VMName: "pgtest1", VMContextID: "ctx-1", BackupID: "bk-7", Status: wire.JobSucceeded, Passed: true,
	Actor: "console:olga", RequestedChecks: []string{"read", "paths"}, BytesRead: 5 << 20, BytesTotal: 5 << 20, MBPerS: 123.4, Seconds: 0.5,
	Checks: []wire.RestoreTestCheck{{Name: "read", DiskID: "disk-2000", Passed: true, BytesRead: 5 << 20},
		{Name: "paths", DiskID: "disk-2000", Path: "/p1/etc/hosts", Type: "file", Passed: true, BytesRead: 31}},
	CreatedAt: time.Date(2026, 11, 30, 11, 0, 0, 0, time.UTC), FinishedAt: time.Date(2026, 11, 30, 11, 0, 1, 0, time.UTC)}

func (s *restoreTests) Get(_ context.Context, id string) (wire.RestoreTest, error) {
	if id != finishedTest.ID {
		return wire.RestoreTest{}, fmt.Errorf("restore test %s: %w", id, catalog.ErrNotFound)
	}
	return finishedTest, nil
}
func (s *restoreTests) List(_ context.Context, f restoretest.Filter) (wire.RestoreTestList, error) {
	if f.Result == "failed" {
		return wire.RestoreTestList{}, nil
	}
	return wire.RestoreTestList{RestoreTests: []wire.RestoreTest{finishedTest}}, nil
}
func (s *restoreTests) Report(_ context.Context, from, to time.Time) (wire.RestoreTestReport, error) {
	if to.Sub(from) != 30*24*time.Hour {
		return wire.RestoreTestReport{}, errors.New("the report is not of 30 days")
	}
	return wire.RestoreTestReport{From: from, To: to, Runs: 1, Passed: 1,
		VMs:      []wire.RestoreTestVM{{VMName: "pgtest1", Passed: 1, LastResult: "passed"}},
		Untested: []wire.RestoreTestVMName{{VMName: "web2"}}}, nil
}
func (s *restoreTests) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.started) }

// repos answers two repositories, one of them S3 and encrypted with a credentials file.
type repos struct{}

func (repos) Describe(context.Context) ([]wire.Repository, error) {
	return []wire.Repository{{ID: "r1", Name: "default", Kind: "local", Path: "/var/lib/sendense/repo", ChunkSize: 4 << 20},
		{ID: "r2", Name: "offsite", Kind: "s3", Path: "https://s3.example/b/p", ChunkSize: 4 << 20, Encrypted: true,
			S3Settings: wire.S3Settings{S3Endpoint: "https://s3.example", S3Bucket: "sendense-b", S3Prefix: "site-a", S3Region: "eu-1",
				S3CredentialsFile: "/etc/sendense/s3-secret-credentials"}}}, nil
}

func auditOf(t *testing.T, e *env, route string) []wire.Event {
	t.Helper()
	evs, err := e.evs.List(t.Context(), events.Filter{Type: wire.EventAudit})
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.Event
	for _, ev := range evs.Events {
		if ev.Details["route"] == route {
			out = append(out, ev)
		}
	}
	return out
}

func TestConsoleRestorePoints(t *testing.T) {
	disk, big := newStoredDisk(t)
	for _, dialect := range catalogtest.Dialects {
		t.Run(dialect, func(t *testing.T) { restorePointCases(t, dialect, disk, big) })
	}
}

func restorePointCases(t *testing.T, dialect string, disk *storedDisk, big []byte) {
	base := "/backups/" + fileBackup + "/disks/disk-2000"
	t.Run("a viewer browses the volumes and directories of a restore point", func(t *testing.T) {
		e := newEnvWith(t, dialect, disk, &restoreTests{})
		cl := e.client(t)
		e.login(t, cl, "vera", password)
		r, page := get(t, cl, e.srv.URL+base+"/files?path=/")
		if r.StatusCode != http.StatusOK || !strings.Contains(page, `path=%2fp1">p1/</a>`) {
			t.Fatalf("top level: %d\n%s", r.StatusCode, page)
		}
		r, page = get(t, cl, e.srv.URL+base+"/files?path=/p1/etc")
		for _, want := range []string{`path=%2fp1%2fetc%2fapp">app/</a>`, `href="/backups/bk-files/disks/disk-2000/file?path=%2fp1%2fetc%2fhosts"`,
			`id="archive-current" href="/backups/bk-files/disks/disk-2000/archive?path=%2fp1%2fetc"`, "0644"} {
			if !strings.Contains(page, want) {
				t.Fatalf("/p1/etc: %d, no %q in\n%s", r.StatusCode, want, page)
			}
		}
		if r, body := get(t, cl, e.srv.URL+base+"/files?path=/p1/nothing-here"); r.StatusCode != http.StatusNotFound || !strings.Contains(body, "nothing-here") {
			t.Fatalf("a missing directory: %d, want 404 naming it\n%s", r.StatusCode, body)
		}
		if r, _ := get(t, cl, e.srv.URL+"/backups/bk-other/disks/disk-2000/files?path=/"); r.StatusCode != http.StatusNotFound {
			t.Fatalf("an unknown backup: %d, want 404", r.StatusCode)
		}
	})
	t.Run("files and directories download with their bytes and are audited", func(t *testing.T) {
		e := newEnvWith(t, dialect, disk, &restoreTests{})
		cl := e.client(t)
		e.login(t, cl, "vera", password)
		for p, want := range map[string][]byte{"/p1/etc/hosts": []byte(hostsText), "/p1/big.bin": big} {
			r, body := get(t, cl, e.srv.URL+base+"/file?path="+url.QueryEscape(p))
			if r.StatusCode != http.StatusOK || body != string(want) || !strings.Contains(r.Header.Get("Content-Disposition"), "attachment") {
				t.Fatalf("download %s: %d, %d bytes (want %d), disposition %q", p, r.StatusCode, len(body), len(want), r.Header.Get("Content-Disposition"))
			}
		}
		r, body := get(t, cl, e.srv.URL+base+"/archive?path=/p1/etc")
		if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "application/x-tar" {
			t.Fatalf("archive: %d %q", r.StatusCode, r.Header.Get("Content-Type"))
		}
		got := map[string]string{}
		tr := tar.NewReader(strings.NewReader(body))
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("archive: %v", err)
			}
			b, _ := io.ReadAll(tr)
			got[h.Name] = string(b)
		}
		if got["etc/hosts"] != hostsText || got["etc/app/a.conf"] != "a=1\n" || got["etc/app/b.conf"] != "b=2\n" {
			t.Fatalf("archive holds %v", got)
		}
		if r, _ := get(t, cl, e.srv.URL+base+"/file?path=/p1/etc"); r.StatusCode < 400 {
			t.Fatalf("a directory as a file: %d, want a refusal", r.StatusCode)
		}
		files := auditOf(t, e, "/backups/{id}/disks/{disk}/file")
		arch := auditOf(t, e, "/backups/{id}/disks/{disk}/archive")
		// The refused directory read nothing: like the API, no download is recorded for it.
		if len(files) != 2 || len(arch) != 1 {
			t.Fatalf("audit: %d file and %d archive events, want 2 and 1", len(files), len(arch))
		}
		byFile := map[string]wire.Event{}
		for _, ev := range files {
			byFile[ev.Details["file"]] = ev
		}
		if ev := byFile["/p1/big.bin"]; ev.Actor != "console:vera" || ev.Details["bytes"] != fmt.Sprint(len(big)) || ev.Details["result"] != "complete" ||
			ev.Details["backup_id"] != fileBackup || ev.Details["disk_id"] != "disk-2000" || ev.Outcome != "200" {
			t.Fatalf("audit of big.bin: %+v", ev)
		}
		if ev := arch[0]; ev.Details["file"] != "/p1/etc" || ev.Details["result"] != "complete" || ev.Details["bytes"] != fmt.Sprint(len(hostsText)+8) {
			t.Fatalf("audit of the archive: %+v", ev)
		}
	})
	t.Run("damage fails a download, before its first byte with an error page, later by a cut; both audited", func(t *testing.T) {
		// big.bin's first chunk: the download answers an error naming the damage.
		e := newEnvWith(t, dialect, disk.damaged(t, big[:4096]), &restoreTests{})
		cl := e.client(t)
		e.login(t, cl, "vera", password)
		r, body := get(t, cl, e.srv.URL+base+"/file?path=/p1/big.bin")
		if r.StatusCode < 400 || !strings.Contains(body, "missing or fails its checks") {
			t.Fatalf("download over a damaged first chunk: %d, want an error naming the damage\n%s", r.StatusCode, body)
		}
		// Its last chunk, past the first MiB read before the answer: the download is cut short.
		e2 := newEnvWith(t, dialect, disk.damaged(t, big[len(big)-4096:]), &restoreTests{})
		cl2 := e2.client(t)
		e2.login(t, cl2, "vera", password)
		resp, err := cl2.Get(e2.srv.URL + base + "/file?path=/p1/big.bin")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil || len(got) >= len(big) {
			t.Fatalf("download over a damaged last chunk: %d bytes, read error %v; want a cut download", len(got), err)
		}
		for i, env := range []*env{e, e2} {
			ev := auditOf(t, env, "/backups/{id}/disks/{disk}/file")
			if len(ev) != 1 || ev[0].Details["result"] != "failed" || ev[0].Details["file"] != "/p1/big.bin" || ev[0].Outcome == "200" {
				t.Fatalf("audit of damaged download %d: %+v", i, ev)
			}
			if i == 1 && ev[0].Details["bytes"] == "0" {
				t.Fatalf("the cut download's audit counts no bytes: %+v", ev[0])
			}
		}
		// Other files of the disk still read.
		if r, body := get(t, cl, e.srv.URL+base+"/file?path=/p1/etc/hosts"); r.StatusCode != http.StatusOK || body != hostsText {
			t.Fatalf("an undamaged file of a damaged disk: %d %q", r.StatusCode, body)
		}
	})
	t.Run("the menu links the restore tests", func(t *testing.T) {
		e := newEnvWith(t, dialect, disk, &restoreTests{})
		cl := e.client(t)
		e.login(t, cl, "vera", password)
		if r, page := get(t, cl, e.srv.URL+"/restore-tests"); r.StatusCode != http.StatusOK || !strings.Contains(page, `href="/restore-tests"`) {
			t.Fatalf("no restore-tests link in the menu: %d", r.StatusCode)
		}
	})
	t.Run("restore tests list with evidence and the 30-day report", func(t *testing.T) {
		rt := &restoreTests{}
		e := newEnvWith(t, dialect, disk, rt)
		cl := e.client(t)
		e.login(t, cl, "vera", password)
		r, page := get(t, cl, e.srv.URL+"/restore-tests")
		for _, want := range []string{`<a href="/restore-tests/rt-done">rt-done</a>`, "read, paths", "123.4", "The last 30 days", "1 tests, 1 passed, 0 failed",
			"VMs without a test: web2"} {
			if !strings.Contains(page, want) {
				t.Fatalf("restore tests: %d, no %q in\n%s", r.StatusCode, want, page)
			}
		}
		if strings.Contains(page, `id="restore-test-start"`) {
			t.Fatal("the viewer is offered the start form")
		}
		if _, page := get(t, cl, e.srv.URL+"/restore-tests?result=failed"); !strings.Contains(page, "No restore test yet.") {
			t.Fatal("the result filter is not applied")
		}
		r, page = get(t, cl, e.srv.URL+"/restore-tests/rt-done")
		for _, want := range []string{`id="test-result">passed`, "/p1/etc/hosts", "5.0 MiB of 5.0 MiB"} {
			if !strings.Contains(page, want) {
				t.Fatalf("restore test page: %d, no %q in\n%s", r.StatusCode, want, page)
			}
		}
		if r, _ := get(t, cl, e.srv.URL+"/restore-tests/rt-nope"); r.StatusCode != http.StatusNotFound {
			t.Fatalf("unknown restore test: %d, want 404", r.StatusCode)
		}
	})
	t.Run("an operator starts a restore test with checks and paths", func(t *testing.T) {
		rt := &restoreTests{}
		e := newEnvWith(t, dialect, disk, rt)
		cl := e.client(t)
		e.login(t, cl, "olga", password)
		_, page := get(t, cl, e.srv.URL+"/restore-tests")
		if !strings.Contains(page, `id="restore-test-start"`) {
			t.Fatal("the operator is not offered the start form")
		}
		tok := csrfOf(t, page)
		r, _ := post(t, cl, e.srv.URL+"/restore-tests", url.Values{"csrf_token": {tok}, "vm": {"pgtest1"}, "check": {"read", "paths"},
			"paths": {"/p1/etc/hosts\r\n\r\n disk-2001:/p1/data \n"}})
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/restore-tests/rt-1" || rt.count() != 1 {
			t.Fatalf("start: %d to %q, %d started", r.StatusCode, r.Header.Get("Location"), rt.count())
		}
		got := rt.started[0]
		if strings.Join(got.Checks, ",") != "read,paths" || strings.Join(got.Paths, ",") != "/p1/etc/hosts,disk-2001:/p1/data" || rt.actors[0] != "console:olga" {
			t.Fatalf("started %+v by %q", got, rt.actors[0])
		}
		if r, body := post(t, cl, e.srv.URL+"/restore-tests", url.Values{"csrf_token": {tok}, "vm": {"nope"}}); r.StatusCode != http.StatusNotFound || !strings.Contains(body, "nope") {
			t.Fatalf("unknown VM: %d, want 404 naming it", r.StatusCode)
		}
		if ev := auditOf(t, e, "/restore-tests"); len(ev) != 2 || ev[0].Outcome != "404" || ev[1].Outcome != "303" || ev[1].Actor != "console:olga" {
			t.Fatalf("audit of the starts: %+v", ev)
		}
	})
	t.Run("starting a restore test needs CSRF and the operator role", func(t *testing.T) {
		rt := &restoreTests{}
		e := newEnvWith(t, dialect, disk, rt)
		op := e.client(t)
		e.login(t, op, "olga", password)
		for name, tok := range map[string]string{"missing": "", "wrong": "not-the-token"} {
			if r, body := post(t, op, e.srv.URL+"/restore-tests", url.Values{"csrf_token": {tok}, "vm": {"pgtest1"}}); r.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
				t.Fatalf("%s CSRF token: %d, want 403 naming CSRF", name, r.StatusCode)
			}
		}
		viewer := e.client(t)
		e.login(t, viewer, "vera", password)
		_, page := get(t, viewer, e.srv.URL+"/restore-tests")
		r, body := post(t, viewer, e.srv.URL+"/restore-tests", url.Values{"csrf_token": {csrfOf(t, page)}, "vm": {"pgtest1"}})
		if r.StatusCode != http.StatusForbidden || !strings.Contains(body, "operator role is needed") {
			t.Fatalf("viewer's start: %d, want 403 naming the role", r.StatusCode)
		}
		if rt.count() != 0 {
			t.Fatal("a restore test was started without CSRF or by a viewer")
		}
		if ev := auditOf(t, e, "/restore-tests"); len(ev) != 3 || ev[0].Actor != "console:vera" || ev[0].Outcome != "403" {
			t.Fatalf("audit of the refusals: %+v", ev)
		}
	})
	t.Run("repositories show kind, S3 settings and encryption, never credentials", func(t *testing.T) {
		e := newEnvWith(t, dialect, disk, &restoreTests{})
		admin := e.client(t)
		e.login(t, admin, "ada", password)
		r, page := get(t, admin, e.srv.URL+"/repositories")
		for _, want := range []string{"<td>s3</td>", "bucket sendense-b", "prefix site-a", "region eu-1", "<td>yes</td>", "<td>local</td>", "<td>no</td>"} {
			if !strings.Contains(page, want) {
				t.Fatalf("repositories: %d, no %q in\n%s", r.StatusCode, want, page)
			}
		}
		if strings.Contains(page, "s3-secret-credentials") {
			t.Fatal("the repositories page names the credentials file")
		}
		viewer := e.client(t)
		e.login(t, viewer, "vera", password)
		if r, _ := get(t, viewer, e.srv.URL+"/repositories"); r.StatusCode != http.StatusForbidden {
			t.Fatalf("viewer on repositories: %d, want 403 as the API", r.StatusCode)
		}
	})
}
