package api_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/files/filestest"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/shared/api"
)

func manyPaths(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/p1/f%d", i)
	}
	return out
}

// startTest starts a restore test over the API and waits for its result.
func (h *testHub) startTest(token string, req api.StartRestoreTestRequest) api.RestoreTest {
	h.t.Helper()
	var started api.RestoreTest
	if code, e := h.call(h.client(nil), http.MethodPost, api.PathRestoreTests, token, req, &started); code != http.StatusAccepted {
		h.t.Fatalf("start %+v: %d %+v", req, code, e)
	}
	return h.waitTest(token, started.ID)
}

// pathCheck returns the paths check of path p in rt.
func pathCheck(t *testing.T, rt api.RestoreTest, p string) api.RestoreTestCheck {
	t.Helper()
	for _, c := range rt.Checks {
		if c.Name == api.CheckPaths && c.Path == p {
			return c
		}
	}
	t.Fatalf("no paths check of %s in %+v", p, rt.Checks)
	return api.RestoreTestCheck{}
}

// The paths check finds the listed paths in the filesystem of a healthy restore point, reading
// files in full, and records per path where it found what; a path that is not there fails the
// test with the path and the reason. The paths are kept with the test, and the report shows
// them.
func TestRestoreTestPathsCheck(t *testing.T) {
	src, disk := fileDisk(t)
	hosts, _ := os.ReadFile(filepath.Join(src, "etc", "hosts"))
	big, _ := os.ReadFile(filepath.Join(src, "big.bin"))
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		bk := h.backupImage(a, operator, disk) // disk-2000: GPT, ext4 as p1; disk-2001: one zero slot
		h.runTests()
		from := h.Clock.Now().Add(-time.Hour)

		paths := []string{"/p1/etc/hosts", "disk-2000:/p1/big.bin", "/p1/a/b/c", "/p1/hosts-link", "/p1", "/p1/données/日本語.txt"}
		rt := h.startTest(operator, api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"read", "paths"}, Paths: paths})
		if !rt.Passed || rt.Error != "" || rt.BackupID != bk || len(rt.Checks) != 2+len(paths) || strings.Join(rt.Paths, ",") != strings.Join(paths, ",") ||
			strings.Join(rt.RequestedChecks, ",") != "read,paths" {
			t.Fatalf("healthy: %+v", rt)
		}
		for _, c := range []struct {
			path, typ string
			bytes     int64
		}{
			{"/p1/etc/hosts", api.FileTypeFile, int64(len(hosts))},
			{"disk-2000:/p1/big.bin", api.FileTypeFile, int64(len(big))},
			{"/p1/a/b/c", api.FileTypeDir, 0},
			{"/p1/hosts-link", api.FileTypeSymlink, 0},
			{"/p1", api.FileTypeDir, 0},
			{"/p1/données/日本語.txt", api.FileTypeFile, int64(len("こんにちは\n"))},
		} {
			got := pathCheck(t, rt, c.path)
			if !got.Passed || got.Error != "" || got.DiskID != "disk-2000" || got.Type != c.typ || got.BytesRead != c.bytes || got.Seconds <= 0 {
				t.Errorf("%s: %+v, want a pass on disk-2000 as a %s of %d bytes read", c.path, got, c.typ, c.bytes)
			}
		}
		// The test's bytes are the disks' and the files'.
		if want := int64(len(disk)) + testChunk + int64(len(hosts)+len(big)+len("こんにちは\n")); rt.BytesRead != want {
			t.Fatalf("bytes read %d, want %d", rt.BytesRead, want)
		}

		// Missing: not on any disk, not on the disk named, no such disk, and a file taken for a
		// directory. The paths found still pass.
		missing := []string{"/p1/etc/hosts", "/p1/etc/fstab", "disk-2001:/p1/etc/hosts", "disk-2003:/p1/etc/hosts", "/p1/etc/hosts/x", "/p2/etc"}
		rt = h.startTest(operator, api.StartRestoreTestRequest{VM: "pgtest1", BackupID: bk, Checks: []string{"paths"}, Paths: missing})
		if rt.Passed || rt.Status != api.RestoreTestFailed || len(rt.Checks) != len(missing) {
			t.Fatalf("missing paths: %+v", rt)
		}
		if c := pathCheck(t, rt, "/p1/etc/hosts"); !c.Passed {
			t.Fatalf("a present path failed among missing ones: %+v", c)
		}
		for p, want := range map[string]string{
			"/p1/etc/fstab":           "missing (looked on disk-2000, disk-2001)",
			"disk-2001:/p1/etc/hosts": "missing",
			"disk-2003:/p1/etc/hosts": "missing: the restore point has no disk disk-2003",
			"/p1/etc/hosts/x":         "missing (looked on disk-2000, disk-2001)",
			"/p2/etc":                 "missing (looked on disk-2000, disk-2001)",
		} {
			if c := pathCheck(t, rt, p); c.Passed || c.Error != want {
				t.Errorf("%s: %+v, want the reason %q", p, c, want)
			}
			if !strings.Contains(rt.Error, "paths "+p+": missing") {
				t.Errorf("the test's reason %q does not name %s as missing", rt.Error, p)
			}
		}
		if strings.Contains(rt.Error, "paths /p1/etc/hosts:") {
			t.Errorf("the test's reason %q names a path that was found", rt.Error)
		}

		// The report shows the paths checked, with their results.
		rep, err := h.Tests.Report(t.Context(), from, h.Clock.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		var md strings.Builder
		if err := restoretest.WriteMarkdown(&md, rep); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"paths /p1/etc/hosts: pass", "paths disk-2000:/p1/big.bin: pass", "paths /p1/etc/fstab: FAIL",
			"paths disk-2003:/p1/etc/hosts: missing: the restore point has no disk disk-2003", "A paths check looks for one path"} {
			if !strings.Contains(md.String(), want) {
				t.Errorf("the Markdown lacks %q:\n%s", want, md.String())
			}
		}
	})
}

// A damaged chunk under a listed file fails the path, naming it and the damage, while the
// other paths of the disk still pass; the chunk is quarantined.
func TestRestoreTestPathsCheckCatchesADamagedChunk(t *testing.T) {
	src, disk := fileDisk(t)
	big, _ := os.ReadFile(filepath.Join(src, "big.bin"))
	at := bytes.Index(disk, big[:4096])
	if at < 0 || !bytes.Equal(disk[at:at+len(big)], big) {
		t.Fatalf("big.bin is not contiguous on the disk (at %d)", at)
	}
	slot := (at + 2<<20 + testChunk - 1) / testChunk // a slot wholly inside the file
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		h.backupImage(a, operator, disk)
		d := h.damageChunk(disk[slot*testChunk : (slot+1)*testChunk])
		h.runTests()

		rt := h.startTest(operator, api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}, Paths: []string{"/p1/big.bin", "/p1/etc/hosts"}})
		if rt.Passed || rt.Status != api.RestoreTestFailed || len(rt.Checks) != 2 {
			t.Fatalf("result: %+v", rt)
		}
		bad := pathCheck(t, rt, "/p1/big.bin")
		if bad.Passed || bad.DiskID != "disk-2000" || bad.Type != api.FileTypeFile || !strings.HasPrefix(bad.Error, "damaged chunk: ") ||
			!strings.Contains(bad.Error, "/p1/big.bin") || bad.BytesRead >= int64(len(big)) {
			t.Fatalf("the damaged file's check: %+v", bad)
		}
		if good := pathCheck(t, rt, "/p1/etc/hosts"); !good.Passed {
			t.Fatalf("a file beside the damage failed: %+v", good)
		}
		if !strings.Contains(rt.Error, "paths /p1/big.bin: damaged chunk") {
			t.Fatalf("the test's reason %q names neither the path nor the damage", rt.Error)
		}
		if q := h.events(operator, "?type=chunk_quarantined"); len(q.Events) != 1 || q.Events[0].Details["digest"] != d {
			t.Fatalf("the damaged chunk was not quarantined: %+v", q.Events)
		}
	})
}

// A restore-test policy keeps its paths and queues tests that carry them; its test checks them.
func TestRestoreTestPolicyWithPaths(t *testing.T) {
	_, disk := fileDisk(t)
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		bk := h.backupImage(a, operator, disk)
		paths := []string{"/p1/etc/hosts", "disk-2000:/p1/bin/run.sh"}
		in := api.Policy{Name: "paths-test", Kind: api.PolicyRestoreTest, Enabled: true, Schedule: "@every 1h", VMs: []string{"pgtest1"},
			Checks: []string{"paths"}, Paths: paths}
		var p api.Policy
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathPolicies, operator, in, &p); code != http.StatusCreated {
			t.Fatalf("create: %d %+v", code, e)
		}
		if code, e := h.call(h.client(nil), http.MethodGet, api.Path(api.PathPolicy, p.Name), operator, nil, &p); code != http.StatusOK ||
			strings.Join(p.Paths, ",") != strings.Join(paths, ",") || strings.Join(p.Checks, ",") != "paths" {
			t.Fatalf("the policy read back: %d %+v %+v", code, e, p)
		}
		b := jobs.New(h.Cat, repository.NewRegistry(h.Cat, nil, nil), slog.New(slog.DiscardHandler), nil, jobs.Options{Now: h.Clock.Now})
		sched := policy.New(h.Cat, b, h.Tests, slog.New(slog.DiscardHandler), nil, h.Clock.Now)
		h.Clock.Add(61 * time.Minute)
		ids, err := sched.Tick(t.Context())
		if err != nil || len(ids) != 1 {
			t.Fatalf("due tick: %v %v", ids, err)
		}
		queued := h.waitTestStatus(operator, ids[0])
		if strings.Join(queued.Paths, ",") != strings.Join(paths, ",") || strings.Join(queued.RequestedChecks, ",") != "paths" || queued.Policy != p.ID {
			t.Fatalf("the queued test: %+v", queued)
		}
		h.runTests()
		rt := h.waitTest(operator, ids[0])
		if !rt.Passed || rt.BackupID != bk || len(rt.Checks) != 2 || !pathCheck(t, rt, "disk-2000:/p1/bin/run.sh").Passed {
			t.Fatalf("the policy's test: %+v", rt)
		}
	})
}

// A path on a volume whose filesystem cannot be read fails with that reason, not as missing.
func TestRestoreTestPathsOnAnUnreadableFilesystem(t *testing.T) {
	vol := randomImage(t, 16*testChunk) // a partition of random bytes: no filesystem this hub reads
	disk := filestest.GPTDisk(vol)
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		h.backupImage(a, operator, disk)
		h.runTests()
		rt := h.startTest(operator, api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"read", "paths"}, Paths: []string{"disk-2000:/p1/etc/hosts", "/p1"}})
		if rt.Passed || len(rt.Checks) != 4 || !rt.Checks[0].Passed || !rt.Checks[1].Passed {
			t.Fatalf("result: %+v", rt)
		}
		if c := pathCheck(t, rt, "disk-2000:/p1/etc/hosts"); c.Passed || c.DiskID != "disk-2000" || !strings.HasPrefix(c.Error, "filesystem not readable: ") {
			t.Fatalf("a path on an unreadable volume: %+v", c)
		}
		// The volume exists on disk-2000 but cannot be read: the path fails there.
		if c := pathCheck(t, rt, "/p1"); c.Passed || c.DiskID != "disk-2000" || c.Type != api.FileTypeOther || !strings.HasPrefix(c.Error, "filesystem not readable: ") {
			t.Fatalf("an unreadable volume: %+v", c)
		}
		if !strings.Contains(rt.Error, "paths disk-2000:/p1/etc/hosts: filesystem not readable") {
			t.Fatalf("the test's reason %q", rt.Error)
		}
	})
}
