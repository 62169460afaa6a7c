package opstest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// bootCheckCleanedUp fails the test unless the boot check's session is over and nothing of it
// is left: the session stopped in the catalog, its VM unregistered, its datastore unmounted,
// its folder and overlay dropped on the hub.
func bootCheckCleanedUp(t *testing.T, hub *hubtest.Hub, l *lab.Lab, viewer string, rt api.RestoreTest) {
	t.Helper()
	var c *api.RestoreTestCheck
	for i := range rt.Checks {
		if rt.Checks[i].Name == api.CheckBoot {
			c = &rt.Checks[i]
		}
	}
	if c == nil || c.SessionID == "" || c.Host != "localhost" || c.SessionStatus != api.IRStopped {
		t.Fatalf("test %s: boot check %+v, want one naming its stopped session on localhost", rt.ID, c)
	}
	var ir api.InstantRecovery
	if code := apiCall(t, hub, http.MethodGet, api.Path(api.PathInstantRecovery, c.SessionID), viewer, nil, &ir); code != 200 ||
		ir.Status != api.IRStopped || ir.FinishedAt.IsZero() || ir.Name != "vm1-"+rt.ID || ir.BackupID != rt.BackupID {
		t.Fatalf("session %s of test %s: %d %+v", c.SessionID, rt.ID, code, ir)
	}
	if _, ok := l.FindVMByName(ir.Name); ok {
		t.Fatalf("the boot check's VM %s is still registered", ir.Name)
	}
	if nas := l.NASDatastores(); len(nas) != 0 {
		t.Fatalf("the boot check's datastore is still mounted: %+v", nas)
	}
	// The hub records the stop, then drops the folder in the same request: a viewer may see the
	// session stopped a moment before its folder is gone.
	dir := filepath.Join(hub.DataDir, "instant-recovery", ir.ID)
	for began := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		_, err := os.Stat(dir)
		if os.IsNotExist(err) {
			return
		}
		if time.Since(began) > 10*time.Second {
			t.Fatalf("the session's folder and overlay are left 10s after it stopped: %v", err)
		}
	}
}

// runCLITest runs `restore-test run … --json`, which must exit 1 (a failed test), and returns
// the evidence it printed.
func runCLITest(t *testing.T, hub *hubtest.Hub, args ...string) (api.RestoreTest, error) {
	t.Helper()
	out, err := hub.TryCLI(append([]string{"restore-test", "run", "--vm", "vm1", "--json"}, args...)...)
	var rt api.RestoreTest
	if jerr := json.Unmarshal([]byte(out), &rt); jerr != nil {
		t.Fatalf("restore-test run %v: %v\n%s\n%v", args, jerr, out, err)
	}
	return rt, err
}

// The boot check on the lab, with a real hub process and agent daemon: a healthy restore point
// passes read + boot through the hub's runner with its RTO in the evidence, the metrics and the
// report; a guest that never reports running and a TCP port nothing answers on fail with their
// reasons from the CLI (exit status 1); a test whose session an operator stops, or whose hub
// restarts, while the agent waits for a silent guest ends and is cleaned up within a minute,
// not after its 5m boot_timeout. Every session is cleaned up afterwards.
func TestRestoreTestBootOnTheLab(t *testing.T) {
	hub, l, _ := startProductWith(t, true)
	id := strings.TrimSpace(hub.CLI("backup", "start", "--vm", "vm1"))
	hub.CLI("backup", "wait", id)
	operator, viewer := hub.APIToken(api.RoleOperator), hub.APIToken(api.RoleViewer)

	// Healthy: the hub runs the test in the background.
	req := api.StartRestoreTestRequest{VM: "vm1", Checks: []string{api.CheckRead, api.CheckBoot},
		RestoreTestBoot: api.RestoreTestBoot{Host: "localhost", Network: "VM Network", BootTimeout: "2m"}}
	var started api.RestoreTest
	if code := apiCall(t, hub, http.MethodPost, api.PathRestoreTests, operator, req, &started); code != http.StatusAccepted {
		t.Fatalf("POST restore-tests with the boot check: %d\n%s", code, hub.Logs())
	}
	began := time.Now()
	var rt api.RestoreTest
	for rt.Status != api.RestoreTestPassed && rt.Status != api.RestoreTestFailed {
		if time.Since(began) > 3*time.Minute {
			t.Fatalf("the boot test did not finish: %+v\n%s", rt, hub.Logs())
		}
		time.Sleep(200 * time.Millisecond)
		apiCall(t, hub, http.MethodGet, api.Path(api.PathRestoreTest, started.ID), viewer, nil, &rt)
	}
	if !rt.Passed || rt.BackupID != id || len(rt.Checks) != 2 || !rt.Checks[0].Passed || rt.Checks[1].Name != api.CheckBoot ||
		!rt.Checks[1].Passed || rt.Checks[1].Signal != api.BootSignalTools || rt.Checks[1].Address != lab.GuestIP ||
		rt.RTOSeconds <= 0 || rt.RTOSeconds != rt.Checks[1].RTOSeconds || rt.RTOSeconds > rt.Seconds || rt.Host != "localhost" || rt.BootTimeout != "2m0s" {
		t.Fatalf("healthy restore point with the boot check: %+v\n%s", rt, hub.Logs())
	}
	t.Logf("healthy restore point %s booted on the lab: RTO %.2fs (signal %s at %s), whole test %.2fs", id, rt.RTOSeconds, rt.Checks[1].Signal, rt.Checks[1].Address, rt.Seconds)
	bootCheckCleanedUp(t, hub, l, viewer, rt)
	m := scrape(t, hub.Metrics)
	if gauge(m, "sendense_hub_restore_test_rto_seconds_count") != 1 || gauge(m, "sendense_hub_restore_test_rto_seconds_sum") != rt.RTOSeconds {
		t.Fatalf("the RTO histogram does not hold the test's RTO %v", rt.RTOSeconds)
	}

	// A guest that never reports running: the test fails with the reason, the session is gone.
	l.SilenceGuest("vm1-rt-*", true)
	silent, err := runCLITest(t, hub, "--check", "boot", "--host", "localhost", "--network", "VM Network", "--boot-timeout", "3s")
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("a guest that never boots: exit %v", err)
	}
	if silent.Passed || len(silent.Checks) != 1 || silent.Checks[0].Passed || silent.RTOSeconds != 0 ||
		!strings.Contains(silent.Checks[0].Error, "guest did not report running within 3s") || !strings.Contains(silent.Error, "boot: guest did not report running within 3s") {
		t.Fatalf("a guest that never boots: %+v", silent)
	}
	bootCheckCleanedUp(t, hub, l, viewer, silent)

	// A TCP port nothing listens on: the tools run, the port never answers.
	l.SilenceGuest("vm1-rt-*", false)
	port := testenv.NewClosedPort(t, lab.GuestIP).Port
	closed, err := runCLITest(t, hub, "--check", "boot", "--host", "localhost", "--network", "VM Network", "--tcp-port", fmt.Sprint(port), "--boot-timeout", "3s")
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("a closed port: exit %v", err)
	}
	want := fmt.Sprintf("guest did not answer on tcp port %d within 3s", port)
	if closed.Passed || len(closed.Checks) != 1 || !strings.Contains(closed.Checks[0].Error, want) || closed.TCPPort != port {
		t.Fatalf("a closed port: %+v, want %q", closed, want)
	}
	bootCheckCleanedUp(t, hub, l, viewer, closed)

	// The list shows the passed test's RTO in the column before its (empty) error.
	var line []string
	for _, l := range strings.Split(hub.CLI("restore-test", "list", "--vm", "vm1"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == rt.ID {
			line = f
		}
	}
	if len(line) < 3 || line[len(line)-2] != fmt.Sprintf("%.1f", rt.RTOSeconds) || line[len(line)-1] != "-" {
		t.Fatalf("restore-test list: the row of %s is %q, want its RTO %.1f", rt.ID, line, rt.RTOSeconds)
	}

	// The report shows the RTO of the passed test and the reasons of the failed ones.
	md := hub.CLI("report", "restore-tests", "--since", "30d")
	for _, w := range []string{"RTO seconds", fmt.Sprintf("%.2f", rt.RTOSeconds), "boot on localhost: pass", "guest did not report running within 3s", want} {
		if !strings.Contains(md, w) {
			t.Fatalf("the report lacks %q:\n%s", w, md)
		}
	}

	// An operator stops the session while the agent waits for a silent guest (boot_timeout 5m):
	// the agent hears of the pending stop, ends its wait, and the stop cleans everything up
	// within seconds, not after the timeout; the test fails naming the stopped session.
	l.SilenceGuest("vm1-rt-*", true)
	req.Checks, req.BootTimeout = []string{api.CheckBoot}, "5m"
	var dropped api.RestoreTest
	if code := apiCall(t, hub, http.MethodPost, api.PathRestoreTests, operator, req, &dropped); code != http.StatusAccepted {
		t.Fatalf("POST restore-tests before the operator's stop: %d\n%s", code, hub.Logs())
	}
	waitRegistered(t, hub, l, "vm1-"+dropped.ID)
	var sessions api.InstantRecoveryList
	apiCall(t, hub, http.MethodGet, api.PathInstantRecoveries, viewer, nil, &sessions)
	var sid string
	for _, ir := range sessions.InstantRecoveries {
		if ir.Name == "vm1-"+dropped.ID {
			sid = ir.ID
		}
	}
	if code := apiCall(t, hub, http.MethodDelete, api.Path(api.PathInstantRecovery, sid), operator, nil, nil); sid == "" || code != http.StatusAccepted {
		t.Fatalf("DELETE the boot check's session %q: %d", sid, code)
	}
	stoppedAt := time.Now()
	for ; ; time.Sleep(200 * time.Millisecond) {
		var got api.RestoreTest
		apiCall(t, hub, http.MethodGet, api.Path(api.PathRestoreTest, dropped.ID), viewer, nil, &got)
		if got.Status == api.RestoreTestFailed {
			if c := got.Checks[0]; c.SessionID != sid || c.Passed || c.Error != "the session was stopped while waiting for the guest" {
				t.Fatalf("the test whose session the operator stopped: %+v", got)
			}
			bootCheckCleanedUp(t, hub, l, viewer, got)
			break
		}
		if time.Since(stoppedAt) > time.Minute {
			t.Fatalf("the operator's stop did not end the test within a minute of its 5m boot_timeout: %+v\n%s", got, hub.Logs())
		}
	}
	t.Logf("operator stop during a 5m guest wait: test over and session cleaned up %.1fs after the stop", time.Since(stoppedAt).Seconds())

	// The hub stops (SIGTERM) while the agent waits for a silent guest (boot_timeout 5m): the
	// test is failed as cancelled and its session's stop recorded; the agent, asking the
	// restarted hub, hears of the stop, ends its wait and carries the stop out: nothing of the
	// session is left within a minute, not after the timeout.
	var cut api.RestoreTest
	if code := apiCall(t, hub, http.MethodPost, api.PathRestoreTests, operator, req, &cut); code != http.StatusAccepted {
		t.Fatalf("POST restore-tests before the hub stops: %d\n%s", code, hub.Logs())
	}
	waitRegistered(t, hub, l, "vm1-"+cut.ID)
	hub.Restart()
	restarted := time.Now()
	for ; ; time.Sleep(200 * time.Millisecond) {
		var got api.RestoreTest
		apiCall(t, hub, http.MethodGet, api.Path(api.PathRestoreTest, cut.ID), viewer, nil, &got)
		if got.Status == api.RestoreTestFailed && len(got.Checks) == 1 {
			if c := got.Checks[0]; !strings.Contains(c.Error, "cancelled while waiting for the guest") || c.SessionID == "" || (c.SessionStatus != api.IRStopping && c.SessionStatus != api.IRStopped) {
				t.Fatalf("the test cut by the hub's stop: %+v", got)
			}
			var ir api.InstantRecovery
			if apiCall(t, hub, http.MethodGet, api.Path(api.PathInstantRecovery, got.Checks[0].SessionID), viewer, nil, &ir); ir.Status == api.IRStopped {
				got.Checks[0].SessionStatus = api.IRStopped // the stop, asked before the hub stopped, has ended since
				bootCheckCleanedUp(t, hub, l, viewer, got)
				break
			}
		}
		if time.Since(restarted) > time.Minute {
			t.Fatalf("the test cut by the hub's stop was not cleaned up within a minute of the restart (boot_timeout 5m): %+v\n%s", got, hub.Logs())
		}
	}
	t.Logf("hub restart during a 5m guest wait: session cleaned up %.1fs after the restart", time.Since(restarted).Seconds())
}

// waitRegistered waits until the lab holds a VM named name (a boot check's start registered it).
func waitRegistered(t *testing.T, hub *hubtest.Hub, l *lab.Lab, name string) {
	t.Helper()
	for began := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if _, ok := l.FindVMByName(name); ok {
			return
		}
		if time.Since(began) > time.Minute {
			t.Fatalf("the boot check's VM %s was never registered\n%s", name, hub.Logs())
		}
	}
}
