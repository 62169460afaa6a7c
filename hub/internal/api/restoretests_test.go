package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// runTests runs the hub's restore-test runner until the test ends.
func (h *testHub) runTests() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Tests.Run(ctx, 20*time.Millisecond) }()
	h.t.Cleanup(func() { cancel(); <-done })
}

// waitTest polls a restore test until it is final.
func (h *testHub) waitTest(token, id string) api.RestoreTest {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var rt api.RestoreTest
		if code, e := h.call(h.client(nil), http.MethodGet, api.Path(api.PathRestoreTest, id), token, nil, &rt); code != http.StatusOK {
			h.t.Fatalf("get restore test %s: %d %+v", id, code, e)
		}
		if rt.Status == api.RestoreTestPassed || rt.Status == api.RestoreTestFailed {
			return rt
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("restore test %s still %s after 30s", id, rt.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *testHub) restoreTests(token, query string) api.RestoreTestList {
	h.t.Helper()
	var l api.RestoreTestList
	if code, e := h.call(h.client(nil), http.MethodGet, api.PathRestoreTests+query, token, nil, &l); code != http.StatusOK {
		h.t.Fatalf("list restore tests%s: %d %+v", query, code, e)
	}
	return l
}

// damageChunk flips one byte of the stored chunk holding plain.
func (h *testHub) damageChunk(plain []byte) string {
	h.t.Helper()
	d := chunk.Sum(plain).String()
	p := filepath.Join(h.RepoDir, "chunks", d[:2], d[2:4], d)
	if err := os.Chmod(p, 0o640); err != nil {
		h.t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		h.t.Fatal(err)
	}
	b[len(b)-1] ^= 0x01
	if err := os.WriteFile(p, b, 0o640); err != nil {
		h.t.Fatal(err)
	}
	return d
}

// A healthy restore point passes, started through the API and run by the hub in the
// background: every disk read in full, the evidence recorded and served, an event recorded,
// the metrics counting it.
func TestRestoreTestOfAHealthyRestorePointPasses(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		img := randomImage(t, 5*testChunk) // slot 1 is a zero slot: read (as zeros), not counted as data
		h.backupImage(a, operator, img)
		h.Clock.Add(time.Minute)
		last := h.backupImage(a, operator, img) // the latest restore point is the one tested
		h.runTests()

		var started api.RestoreTest
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathRestoreTests, operator, api.StartRestoreTestRequest{VM: "pgtest1"}, &started); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, e)
		}
		if started.BackupID != last || started.ID == "" || (started.Status != api.RestoreTestQueued && started.Status != api.RestoreTestRunning) {
			t.Fatalf("started: %+v", started)
		}
		rt := h.waitTest(viewer, started.ID)
		want := int64(len(img)) + testChunk // disk-2000 and disk-2001 (one slot)
		if !rt.Passed || rt.Status != api.RestoreTestPassed || rt.Error != "" || rt.BackupID != last || rt.VMName != "pgtest1" ||
			rt.BytesRead != want || rt.BytesTotal != want || rt.Seconds <= 0 || rt.MBPerS <= 0 || rt.FinishedAt.IsZero() || rt.StartedAt.IsZero() ||
			rt.Repository != repository.DefaultName || rt.Actor != "test-operator" || rt.BackupCreatedAt.IsZero() {
			t.Fatalf("evidence: %+v", rt)
		}
		if len(rt.Checks) != 2 {
			t.Fatalf("checks: %+v", rt.Checks)
		}
		for i, disk := range []string{"disk-2000", "disk-2001"} {
			c := rt.Checks[i]
			if c.Name != api.CheckRead || c.DiskID != disk || !c.Passed || c.Error != "" {
				t.Fatalf("check %d: %+v", i, c)
			}
		}
		if rt.Checks[0].BytesRead != int64(len(img)) || rt.Checks[1].BytesRead != testChunk ||
			rt.Checks[0].DataBytes != int64(len(img))-testChunk || rt.Checks[1].DataBytes != 0 || rt.DataBytes != int64(len(img))-testChunk {
			t.Fatalf("bytes per disk: %+v", rt.Checks)
		}
		for q, n := range map[string]int{"": 1, "?vm=pgtest1": 1, "?result=passed": 1, "?result=failed": 0,
			"?since=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339): 0} {
			if l := h.restoreTests(viewer, q); len(l.RestoreTests) != n || l.Page.Total != n {
				t.Fatalf("list%s: %d tests, want %d", q, len(l.RestoreTests), n)
			}
		}
		evs := h.events(viewer, "?type=restore_test")
		if len(evs.Events) != 1 || evs.Events[0].Outcome != api.RestoreTestPassed || evs.Events[0].Details["restore_test_id"] != rt.ID ||
			evs.Events[0].Details["backup_id"] != last || evs.Events[0].VM != "pgtest1" {
			t.Fatalf("events: %+v", evs.Events)
		}
		if v := metricValue(t, h.Reg, "sendense_hub_restore_tests_total", "result", "passed"); v != 1 {
			t.Fatalf("passed tests counted %v", v)
		}
		if v := metricValue(t, h.Reg, "sendense_hub_restore_test_vms_failing", "", ""); v != 0 {
			t.Fatalf("failing VMs %v", v)
		}
		if v := metricValue(t, h.Reg, "sendense_hub_restore_test_last_success_timestamp_seconds", "vm", "pgtest1"); v != float64(rt.FinishedAt.Unix()) {
			t.Fatalf("last success %v, want %d", v, rt.FinishedAt.Unix())
		}
	})
}

// A damaged chunk fails the test, naming the disk and the damage; the other disk still passes;
// the failure shows in the metrics the alert reads. A later passing test clears the alert's
// metric.
func TestRestoreTestFailsOnADamagedChunk(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		img := randomImage(t, 5*testChunk)
		bk := h.backupImage(a, operator, img)
		d := h.damageChunk(img[3*testChunk : 4*testChunk])
		h.runTests()

		var started api.RestoreTest
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathRestoreTests, operator, api.StartRestoreTestRequest{VM: "pgtest1", BackupID: bk, Checks: []string{"read"}}, &started); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, e)
		}
		rt := h.waitTest(operator, started.ID)
		if rt.Passed || rt.Status != api.RestoreTestFailed || len(rt.Checks) != 2 {
			t.Fatalf("result: %+v", rt)
		}
		bad, good := rt.Checks[0], rt.Checks[1]
		if bad.DiskID != "disk-2000" || bad.Passed || !strings.Contains(bad.Error, "slot 3") || !strings.Contains(bad.Error, "chunk damaged") ||
			bad.BytesRead != 3*testChunk || bad.DataBytes != 2*testChunk { // slot 1 is a zero slot
			t.Fatalf("the damaged disk's check: %+v", bad)
		}
		if good.DiskID != "disk-2001" || !good.Passed {
			t.Fatalf("the intact disk's check: %+v", good)
		}
		if !strings.Contains(rt.Error, "read disk-2000") || !strings.Contains(rt.Error, "chunk damaged") {
			t.Fatalf("the test's reason %q names neither the disk nor the damage", rt.Error)
		}
		if l := h.restoreTests(operator, "?result=failed"); len(l.RestoreTests) != 1 || l.RestoreTests[0].ID != rt.ID {
			t.Fatalf("failed tests: %+v", l.RestoreTests)
		}
		evs := h.events(operator, "?type=restore_test")
		if len(evs.Events) != 1 || evs.Events[0].Outcome != api.RestoreTestFailed || !strings.Contains(evs.Events[0].Details["reason"], "disk-2000") {
			t.Fatalf("events: %+v", evs.Events)
		}
		if q := h.events(operator, "?type=chunk_quarantined"); len(q.Events) != 1 || q.Events[0].Details["digest"] != d {
			t.Fatalf("the damaged chunk was not quarantined: %+v", q.Events)
		}
		if v := metricValue(t, h.Reg, "sendense_hub_restore_tests_total", "result", "failed"); v != 1 {
			t.Fatalf("failed tests counted %v", v)
		}
		if v := metricValue(t, h.Reg, "sendense_hub_restore_test_vms_failing", "", ""); v != 1 {
			t.Fatalf("failing VMs %v, want 1", v)
		}

		// The next backup uploads the quarantined chunk again; its test passes, and the VM is
		// no longer failing.
		h.Clock.Add(time.Second) // the finish times order the results
		h.backupImage(a, operator, img)
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathRestoreTests, operator, api.StartRestoreTestRequest{VM: "pgtest1"}, &started); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, e)
		}
		if rt := h.waitTest(operator, started.ID); !rt.Passed {
			t.Fatalf("the test after a new backup: %+v", rt)
		}
		if v := metricValue(t, h.Reg, "sendense_hub_restore_test_vms_failing", "", ""); v != 0 {
			t.Fatalf("failing VMs %v after a passing test, want 0", v)
		}
	})
}

// Bad requests are refused with a JSON body naming the problem, and record nothing.
func TestRestoreTestRejectsBadRequests(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		a.push(twoDiskInventory(2*testChunk, testChunk))
		// No backup yet: the VM has nothing to test.
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathRestoreTests, operator, api.StartRestoreTestRequest{VM: "pgtest1"}, nil); code != http.StatusConflict || !strings.Contains(e.Error, "no successful backup") {
			t.Fatalf("a VM without backups: %d %+v", code, e)
		}
		bk := h.backupImage(a, operator, randomImage(t, 2*testChunk))
		for _, c := range []struct {
			name  string
			body  any
			code  int
			field string
			msg   string
		}{
			{"unknown VM", api.StartRestoreTestRequest{VM: "nope"}, 400, "vm", `no VM named "nope"`},
			{"no VM", api.StartRestoreTestRequest{}, 400, "vm", "required"},
			{"unknown backup", api.StartRestoreTestRequest{VM: "pgtest1", BackupID: "bk-none"}, 400, "backup_id", `no backup "bk-none"`},
			{"boot without a host", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"read", "boot"}, RestoreTestBoot: api.RestoreTestBoot{Network: "iso"}}, 400, "host", "needs the ESXi host"},
			{"boot without a network", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "esx1"}}, 400, "network", "isolated port group"},
			{"a port over 65535", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "esx1", Network: "iso", TCPPort: 65536}}, 400, "tcp_port", "not a TCP port (1-65535)"},
			{"a negative port", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "esx1", Network: "iso", TCPPort: -22}}, 400, "tcp_port", "not a TCP port"},
			{"no boot time", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "esx1", Network: "iso", BootTimeout: "0s"}}, 400, "boot_timeout", "outside 1s to 1h0m0s"},
			{"a boot time over an hour", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "esx1", Network: "iso", BootTimeout: "61m"}}, 400, "boot_timeout", "outside 1s to 1h0m0s"},
			{"a boot time that is no duration", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "esx1", Network: "iso", BootTimeout: "ten minutes"}}, 400, "boot_timeout", "not a duration"},
			{"an ESXi host the hub cannot find", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"read", "boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "unknown.invalid", Network: "iso"}}, 400, "host", `cannot find the address of ESXi host "unknown.invalid"`},
			{"a host without the boot check", api.StartRestoreTestRequest{VM: "pgtest1", RestoreTestBoot: api.RestoreTestBoot{Host: "esx1"}}, 400, "host", `setting of the "boot" check only`},
			{"a network on a read check", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"read"}, RestoreTestBoot: api.RestoreTestBoot{Network: "iso"}}, 400, "network", `setting of the "boot" check only`},
			{"a port on a paths check", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}, Paths: []string{"/p1/etc/hosts"}, RestoreTestBoot: api.RestoreTestBoot{TCPPort: 22}}, 400, "tcp_port", `setting of the "boot" check only`},
			{"a boot timeout without the boot check", api.StartRestoreTestRequest{VM: "pgtest1", RestoreTestBoot: api.RestoreTestBoot{BootTimeout: "5m"}}, 400, "boot_timeout", `setting of the "boot" check only`},
			{"an unknown check", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"fsck"}}, 400, "checks[0]", `unknown check "fsck"`},
			{"a check twice", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"read", "read"}}, 400, "checks[1]", "twice"},
			{"paths without the paths check", api.StartRestoreTestRequest{VM: "pgtest1", Paths: []string{"/p1/etc/fstab"}}, 400, "paths", `by the "paths" check only`},
			{"the paths check without paths", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}}, 400, "paths", "at least one path"},
			{"a relative path", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"read", "paths"}, Paths: []string{"/p1/etc/hosts", "etc/fstab"}}, 400, "paths[1]", "neither an absolute path"},
			{"a path going up", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}, Paths: []string{"/p1/../p2/etc"}}, 400, "paths[0]", "normal form"},
			{"a path with a trailing slash", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}, Paths: []string{"/p1/etc/"}}, 400, "paths[0]", "normal form"},
			{"a path without a volume", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}, Paths: []string{"/"}}, 400, "paths[0]", "names no volume"},
			{"a bad disk", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}, Paths: []string{"disk-02000:/p1/etc/hosts"}}, 400, "paths[0]", "names no disk"},
			{"a control character", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}, Paths: []string{"/p1/etc/ho\nsts"}}, 400, "paths[0]", "control"},
			{"a path twice", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}, Paths: []string{"/p1/etc/hosts", "/p1/etc/hosts"}}, 400, "paths[1]", "twice"},
			{"too many paths", api.StartRestoreTestRequest{VM: "pgtest1", Checks: []string{"paths"}, Paths: manyPaths(api.MaxRestoreTestPaths + 1)}, 400, "paths", "at most 64"},
		} {
			code, e := h.call(h.client(nil), http.MethodPost, api.PathRestoreTests, operator, c.body, nil)
			if code != c.code || e.Field != c.field || !strings.Contains(e.Error, c.msg) {
				t.Errorf("%s: %d %+v, want %d naming %s (%q)", c.name, code, e, c.code, c.field, c.msg)
			}
		}
		if code, _ := h.call(h.client(nil), http.MethodPost, api.PathRestoreTests, viewer, api.StartRestoreTestRequest{VM: "pgtest1", BackupID: bk}, nil); code != http.StatusForbidden {
			t.Fatalf("a viewer started a restore test: %d", code)
		}
		if code, e := h.call(h.client(nil), http.MethodGet, api.PathRestoreTests+"?result=maybe", viewer, nil, nil); code != 400 || e.Field != "result" {
			t.Fatalf("bad result filter: %d %+v", code, e)
		}
		if code, e := h.call(h.client(nil), http.MethodGet, api.PathRestoreTests+"?vm=nope", viewer, nil, nil); code != 400 || e.Field != "vm" {
			t.Fatalf("unknown VM filter: %d %+v", code, e)
		}
		if code, e := h.call(h.client(nil), http.MethodGet, api.Path(api.PathRestoreTest, "rt-none"), viewer, nil, nil); code != http.StatusNotFound || !strings.Contains(e.Error, "rt-none") {
			t.Fatalf("unknown test: %d %+v", code, e)
		}
		if l := h.restoreTests(viewer, ""); len(l.RestoreTests) != 0 {
			t.Fatalf("refused requests recorded tests: %+v", l.RestoreTests)
		}
		if evs := h.events(viewer, "?type=restore_test"); len(evs.Events) != 0 {
			t.Fatalf("refused requests recorded events: %+v", evs.Events)
		}
	})
}

// A restore-test policy queues one test per covered VM when due, and only once per due run;
// its tests run and pass. Its settings are checked like a request's, and it keeps no backups
// from prune.
func TestRestoreTestPolicyRunsWhenDueAndOnce(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		bk := h.backupImage(a, operator, randomImage(t, 3*testChunk))

		for _, c := range []struct {
			in    api.Policy
			field string
		}{
			{api.Policy{Name: "rt", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", Checks: []string{"boot"}}, "host"},
			{api.Policy{Name: "rt", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", Checks: []string{"boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "esx1"}}, "network"},
			{api.Policy{Name: "rt", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", Checks: []string{"boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "esx1", Network: "iso", TCPPort: 70000}}, "tcp_port"},
			{api.Policy{Name: "rt", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", Checks: []string{"boot"}, RestoreTestBoot: api.RestoreTestBoot{Host: "esx1", Network: "iso", BootTimeout: "3h"}}, "boot_timeout"},
			{api.Policy{Name: "rt", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", RestoreTestBoot: api.RestoreTestBoot{Host: "esx1"}}, "host"},
			{api.Policy{Name: "rt", Schedule: "@every 1h", RestoreTestBoot: api.RestoreTestBoot{Network: "iso"}}, "network"},
			{api.Policy{Name: "rt", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", Checks: []string{"paths"}}, "paths"},
			{api.Policy{Name: "rt", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", Paths: []string{"/p1/etc/hosts"}}, "paths"},
			{api.Policy{Name: "rt", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", Checks: []string{"paths"}, Paths: []string{"p1/etc/hosts"}}, "paths[0]"},
			{api.Policy{Name: "rt", Schedule: "@every 1h", Paths: []string{"/p1/etc/hosts"}}, "paths"},
			{api.Policy{Name: "rt", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", Retention: api.Retention{KeepLast: 3}}, "retention"},
			{api.Policy{Name: "rt", Kind: "verify", Schedule: "@every 1h"}, "kind"},
			{api.Policy{Name: "rt", Schedule: "@every 1h", Checks: []string{"read"}}, "checks"},
		} {
			if code, e := h.call(h.client(nil), http.MethodPost, api.PathPolicies, operator, c.in, nil); code != 400 || e.Field != c.field {
				t.Errorf("policy %+v: %d %+v, want 400 naming %s", c.in, code, e, c.field)
			}
		}
		var p api.Policy
		in := api.Policy{Name: "weekly-restore-test", Kind: api.PolicyRestoreTest, Enabled: true, Schedule: "@every 1h", VMs: []string{"pgtest1"}}
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathPolicies, operator, in, &p); code != http.StatusCreated {
			t.Fatalf("create: %d %+v", code, e)
		}
		if p.Kind != api.PolicyRestoreTest || len(p.Checks) != 1 || p.Checks[0] != api.CheckRead || p.CBTSample != nil {
			t.Fatalf("created: %+v", p)
		}
		// A disabled policy with the boot check keeps its settings, the timeout normalized.
		var bootP api.Policy
		bootIn := api.Policy{Name: "boot-test", Kind: api.PolicyRestoreTest, Schedule: "@every 1h", VMs: []string{"pgtest1"}, Checks: []string{"read", "boot"},
			RestoreTestBoot: api.RestoreTestBoot{Host: "esx1", Network: "isolated", TCPPort: 22, BootTimeout: "90s"}}
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathPolicies, operator, bootIn, &bootP); code != http.StatusCreated {
			t.Fatalf("create the boot policy: %d %+v", code, e)
		}
		if code, _ := h.call(h.client(nil), http.MethodGet, api.Path(api.PathPolicy, "boot-test"), operator, nil, &bootP); code != 200 ||
			bootP.RestoreTestBoot != (api.RestoreTestBoot{Host: "esx1", Network: "isolated", TCPPort: 22, BootTimeout: "1m30s"}) {
			t.Fatalf("the boot policy: %d %+v", code, bootP)
		}
		b := jobs.New(h.Cat, repository.NewRegistry(h.Cat, nil, nil), slog.New(slog.DiscardHandler), nil, jobs.Options{Now: h.Clock.Now})
		sched := policy.New(h.Cat, b, h.Tests, slog.New(slog.DiscardHandler), nil, h.Clock.Now)
		if ids, err := sched.Tick(t.Context()); err != nil || len(ids) != 0 {
			t.Fatalf("tick before due: %v %v", ids, err)
		}
		h.Clock.Add(61 * time.Minute)
		ids, err := sched.Tick(t.Context())
		if err != nil || len(ids) != 1 || !strings.HasPrefix(ids[0], api.RestoreTestIDPrefix) {
			t.Fatalf("due tick: %v %v", ids, err)
		}
		if again, err := sched.Tick(t.Context()); err != nil || len(again) != 0 {
			t.Fatalf("second tick of the same run: %v %v", again, err)
		}
		// The next due run finds the VM's test still waiting (no runner yet): it queues no second.
		h.Clock.Add(61 * time.Minute)
		if next, err := sched.Tick(t.Context()); err != nil || len(next) != 0 {
			t.Fatalf("due tick with a test still queued: %v %v", next, err)
		}
		// No backup jobs were queued by it.
		if bl, _, _ := h.Cat.Backups(t.Context(), catalog.BackupFilter{Status: api.JobQueued}); len(bl) != 0 {
			t.Fatalf("a restore-test policy queued backups: %+v", bl)
		}
		h.runTests()
		rt := h.waitTest(operator, ids[0])
		if !rt.Passed || rt.Policy != p.ID || rt.Actor != "policy" || rt.BackupID != bk {
			t.Fatalf("the policy's test: %+v", rt)
		}
		if l := h.restoreTests(operator, ""); len(l.RestoreTests) != 1 {
			t.Fatalf("%d tests after one due run, want 1", len(l.RestoreTests))
		}
		if code, _ := h.call(h.client(nil), http.MethodGet, api.Path(api.PathPolicy, p.Name), operator, nil, &p); code != 200 || p.LastStatus != api.RestoreTestPassed || p.LastSuccessAt.IsZero() {
			t.Fatalf("the policy after its test passed: %+v", p)
		}

		// The policy does not keep backups from a backup policy's prune.
		var bp api.Policy
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathPolicies, operator, api.Policy{Name: "nightly", Enabled: true, Schedule: "@daily", VMs: []string{"pgtest1"}, Retention: api.Retention{KeepLast: 1}}, &bp); code != http.StatusCreated {
			t.Fatalf("create backup policy: %d %+v", code, e)
		}
		h.Clock.Add(time.Minute)
		newer := h.backupImage(a, operator, randomImage(t, 3*testChunk))
		rep, err := sched.Prune(t.Context(), policy.PruneOptions{})
		if err != nil || rep.Removed != 1 {
			t.Fatalf("prune: %+v %v", rep, err)
		}
		if _, err := h.Cat.BackupByID(t.Context(), bk); err == nil {
			t.Fatalf("backup %s survived prune (newest is %s): the restore-test policy kept it", bk, newer)
		}
	})
}

// A test whose hub stopped while it ran (no progress for StaleAfter) is failed with the
// reason by the next runner, and counted.
func TestStaleRestoreTestIsFailed(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		bk := h.backupImage(a, operator, randomImage(t, 2*testChunk))
		row, err := h.Cat.BackupByID(t.Context(), bk)
		if err != nil {
			t.Fatal(err)
		}
		orphan := &catalog.RestoreTest{ID: "rt-orphan", VMContextID: row.VMContextID, VMName: row.VMName, BackupID: bk, BackupCreatedAt: row.CreatedAt,
			RepositoryID: row.RepositoryID, RepositoryName: row.RepositoryName, Actor: "cli", RequestedChecks: []string{"read"}, Status: api.RestoreTestRunning}
		if err := h.Cat.CreateRestoreTest(t.Context(), orphan); err != nil {
			t.Fatal(err)
		}
		h.runTests()
		time.Sleep(100 * time.Millisecond) // a few runner rounds: a fresh heartbeat keeps it running
		if got := h.waitTestStatus(operator, "rt-orphan"); got.Status != api.RestoreTestRunning {
			t.Fatalf("a test with a fresh heartbeat was failed: %+v", got)
		}
		h.Clock.Add(3 * time.Minute)
		rt := h.waitTest(operator, "rt-orphan")
		if rt.Passed || !strings.Contains(rt.Error, "stopped before it finished") {
			t.Fatalf("the orphaned test: %+v", rt)
		}
		// The runner records the event just after it failed the test: give it a moment.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			evs := h.events(operator, "?type=restore_test")
			if len(evs.Events) == 1 && evs.Events[0].Outcome == api.RestoreTestFailed {
				break
			}
			if len(evs.Events) > 1 || time.Now().After(deadline) {
				t.Fatalf("events: %+v", evs.Events)
			}
		}
	})
}

func (h *testHub) waitTestStatus(token, id string) api.RestoreTest {
	h.t.Helper()
	var rt api.RestoreTest
	if code, e := h.call(h.client(nil), http.MethodGet, api.Path(api.PathRestoreTest, id), token, nil, &rt); code != http.StatusOK {
		h.t.Fatalf("get restore test %s: %d %+v", id, code, e)
	}
	return rt
}

// The report lists every VM with its runs and names the VMs without a test; names are written
// escaped, so a VM name cannot forge Markdown.
func TestRestoreTestReport(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		bk := h.backupImage(a, operator, randomImage(t, 2*testChunk))
		inv := twoDiskInventory(2*testChunk, testChunk)
		inv.VMs = append(inv.VMs, api.VM{InstanceUUID: "50120000-0000-4000-8000-000000000002", Name: "idle|*1", CBTEnabled: true})
		a.push(inv)
		from := h.Clock.Now().Add(-time.Hour)
		rt, err := h.Tests.RunNow(t.Context(), api.StartRestoreTestRequest{VM: "pgtest1"}, "cli")
		if err != nil || !rt.Passed {
			t.Fatalf("run: %+v %v", rt, err)
		}
		rep, err := h.Tests.Report(t.Context(), from, h.Clock.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Runs != 1 || rep.Passed != 1 || len(rep.VMs) != 1 || rep.VMs[0].VMName != "pgtest1" || len(rep.VMs[0].Runs) != 1 ||
			rep.VMs[0].Runs[0].BackupID != bk || len(rep.Untested) != 1 || rep.Untested[0].VMName != "idle|*1" {
			t.Fatalf("report: %+v", rep)
		}
		var md strings.Builder
		if err := restoretest.WriteMarkdown(&md, rep); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"| pgtest1 | 1 | 1 | 0 | PASSED |", rt.ID, bk, "read disk-2000: pass; read disk-2001: pass", `- idle\|\*1 (`} {
			if !strings.Contains(md.String(), want) {
				t.Fatalf("the Markdown lacks %q:\n%s", want, md.String())
			}
		}
		// A period before the test holds no runs, and every VM is untested in it.
		if rep, err := h.Tests.Report(t.Context(), from.Add(-time.Hour), from); err != nil || rep.Runs != 0 || len(rep.Untested) != 2 {
			t.Fatalf("an earlier period: %+v %v", rep, err)
		}

		// GET /reports/restore-tests answers the same report to a viewer.
		viewer := h.apiToken(api.RoleViewer)
		q := "?from=" + url.QueryEscape(from.Format(time.RFC3339Nano)) + "&to=" + url.QueryEscape(h.Clock.Now().Add(time.Minute).Format(time.RFC3339Nano))
		var got api.RestoreTestReport
		if code, e := h.call(h.client(nil), http.MethodGet, api.PathReportRestoreTests+q, viewer, nil, &got); code != http.StatusOK {
			t.Fatalf("GET report: %d %+v", code, e)
		}
		if got.Runs != 1 || len(got.VMs) != 1 || got.VMs[0].Runs[0].ID != rt.ID || len(got.Untested) != 1 {
			t.Fatalf("GET report: %+v", got)
		}
		for _, bad := range []struct{ query, field string }{{"?from=yesterday", "from"}, {"?to=x", "to"}, {"?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"}} {
			if code, e := h.call(h.client(nil), http.MethodGet, api.PathReportRestoreTests+bad.query, viewer, nil, nil); code != http.StatusBadRequest || e.Field != bad.field {
				t.Fatalf("GET report%s: %d %+v", bad.query, code, e)
			}
		}
		if code, _ := h.call(h.client(nil), http.MethodGet, api.PathReportRestoreTests, "", nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("GET report without a token: %d", code)
		}
	})
}

// A boot test whose hub stopped mid-test is failed as stale, and its instant-recovery session
// is stopped by the next runner (the agent is handed the stop): no booted copy is left
// running. So is the session of a test already over (its hub stopped before it stopped the
// session). The session of a test still running, a session named like a test that does not
// exist and another session are left alone.
func TestStaleBootTestStopsItsSession(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		bk, _ := restorableBackup(t, h, a, true)
		row, err := h.Cat.BackupByID(t.Context(), bk)
		if err != nil {
			t.Fatal(err)
		}
		boot := &api.RestoreTestBoot{Host: "esx1.lab", Network: "isolated", BootTimeout: "10m0s"}
		wait := api.InstantRecoveryBootWait{TimeoutSeconds: 600}
		session := func(name string) string {
			ir, err := h.IR.StartBoot(t.Context(), api.InstantRecoveryRequest{BackupID: bk, Host: "esx1.lab", Name: name, PowerOn: true}, wait)
			if err != nil {
				t.Fatal(err)
			}
			return ir.ID
		}
		test := func(id, status string) {
			rt := &catalog.RestoreTest{ID: id, VMContextID: row.VMContextID, VMName: row.VMName, BackupID: bk, BackupCreatedAt: row.CreatedAt,
				RepositoryID: row.RepositoryID, RepositoryName: row.RepositoryName, Actor: "cli", RequestedChecks: []string{"boot"}, Boot: boot, Status: status}
			if err := h.Cat.CreateRestoreTest(t.Context(), rt); err != nil {
				t.Fatal(err)
			}
		}
		test("rt-orphan-boot", api.RestoreTestRunning)
		test("rt-over-boot", api.RestoreTestFailed)
		orphan, over := session(row.VMName+"-rt-orphan-boot"), session(row.VMName+"-rt-over-boot")
		missing, other := session(row.VMName+"-rt-missing"), session("someone-elses")
		status := func(id string) api.InstantRecovery {
			t.Helper()
			ir, err := h.IR.Get(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			return ir
		}
		waitStopping := func(id, what string) {
			t.Helper()
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				ir := status(id)
				if ir.Status == api.IRStopping && ir.Pending == api.IRActionStop {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %+v, want stopping", what, ir)
				}
			}
		}

		h.runTests()
		waitStopping(over, "the session of a test already over")
		if ir := status(orphan); ir.Status != api.IRStarting {
			t.Fatalf("the session of a test still running (fresh heartbeat) was touched: %+v", ir)
		}
		h.Clock.Add(3 * time.Minute)
		rt := h.waitTest(operator, "rt-orphan-boot")
		if rt.Passed || !strings.Contains(rt.Error, "stopped before it finished") || rt.Host != "esx1.lab" {
			t.Fatalf("the orphaned boot test: %+v", rt)
		}
		waitStopping(orphan, "the stale test's session")
		for _, id := range []string{missing, other} {
			if ir := status(id); ir.Status != api.IRStarting {
				t.Fatalf("a session of no test was touched: %+v", ir)
			}
		}
	})
}

// A restore-test policy with the boot check queues, when due, a test of every covered VM with
// the policy's boot settings (host, network, tcp_port, the normalized boot_timeout); replacing
// the policy replaces them, and dropping the boot check drops them.
func TestRestoreTestPolicyQueuesTheBootCheck(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		bk := h.backupImage(a, operator, randomImage(t, 2*testChunk))

		in := api.Policy{Name: "boot-weekly", Kind: api.PolicyRestoreTest, Enabled: true, Schedule: "@every 1h", VMs: []string{"pgtest1"}, Checks: []string{"read", "boot"},
			RestoreTestBoot: api.RestoreTestBoot{Host: "esx1.lab", Network: "isolated", TCPPort: 22, BootTimeout: "90s"}}
		var p api.Policy
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathPolicies, operator, in, &p); code != http.StatusCreated {
			t.Fatalf("create: %d %+v", code, e)
		}
		in.BootTimeout, in.TCPPort = "20m", 0
		if code, e := h.call(h.client(nil), http.MethodPut, api.Path(api.PathPolicy, in.Name), operator, in, nil); code != http.StatusOK {
			t.Fatalf("replace: %d %+v", code, e)
		}
		p = api.Policy{} // omitted fields must not survive from the last answer
		if code, e := h.call(h.client(nil), http.MethodGet, api.Path(api.PathPolicy, in.Name), operator, nil, &p); code != http.StatusOK {
			t.Fatalf("get: %d %+v", code, e)
		}
		want := api.RestoreTestBoot{Host: "esx1.lab", Network: "isolated", BootTimeout: "20m0s"}
		if p.RestoreTestBoot != want {
			t.Fatalf("the replaced policy's boot settings: %+v, want %+v", p.RestoreTestBoot, want)
		}
		sched := policy.New(h.Cat, jobs.New(h.Cat, repository.NewRegistry(h.Cat, nil, nil), slog.New(slog.DiscardHandler), nil, jobs.Options{Now: h.Clock.Now}),
			h.Tests, slog.New(slog.DiscardHandler), nil, h.Clock.Now)
		h.Clock.Add(61 * time.Minute)
		ids, err := sched.Tick(t.Context())
		if err != nil || len(ids) != 1 {
			t.Fatalf("due tick: %v %v", ids, err)
		}
		var rt api.RestoreTest
		if code, e := h.call(h.client(nil), http.MethodGet, api.Path(api.PathRestoreTest, ids[0]), operator, nil, &rt); code != http.StatusOK {
			t.Fatalf("get the queued test: %d %+v", code, e)
		}
		if rt.Status != api.RestoreTestQueued || rt.Policy != p.ID || rt.BackupID != bk || strings.Join(rt.RequestedChecks, ",") != "read,boot" || rt.RestoreTestBoot != want {
			t.Fatalf("the queued test: %+v, want the checks read,boot and boot settings %+v", rt, want)
		}

		// Without the boot check the policy keeps no boot settings: a JSON round trip shows none.
		in.Checks, in.RestoreTestBoot = []string{"read"}, api.RestoreTestBoot{}
		if code, e := h.call(h.client(nil), http.MethodPut, api.Path(api.PathPolicy, in.Name), operator, in, nil); code != http.StatusOK {
			t.Fatalf("replace without boot: %d %+v", code, e)
		}
		raw := h.raw(http.MethodGet, api.Path(api.PathPolicy, in.Name), operator)
		for _, field := range []string{`"host"`, `"network"`, `"tcp_port"`, `"boot_timeout"`} {
			if strings.Contains(raw, field) {
				t.Fatalf("a policy without the boot check shows %s: %s", field, raw)
			}
		}
	})
}
