package opstest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/shared/api"
)

// gauge returns the value of the series line (name plus labels, as exposed) in a scrape; -1
// when it is absent.
func gauge(b []byte, series string) float64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// apiCall sends a request to the hub's API with a bearer token and decodes a 2xx answer.
func apiCall(t *testing.T, hub *hubtest.Hub, method, path, token string, in, out any) int {
	t.Helper()
	ca, err := os.ReadFile(hub.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	// One connection per call, closed after it: callers poll, and idle connections left open by
	// each call's transport would reach the hub's per-address connection limit.
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, hub.URL+path, body)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 300 && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// Restore tests on the lab: a healthy restore point passes with its evidence (CLI JSON, API,
// metrics, report); a damaged chunk in the repository makes the next test fail naming the disk
// and the damage, with exit status 1, and the alert's metric moves — for a test of the CLI and
// for one the hub runs in the background.
func TestRestoreTestsOnTheLab(t *testing.T) {
	hub, _ := startProduct(t)
	id := strings.TrimSpace(hub.CLI("backup", "start", "--vm", "vm1"))
	hub.CLI("backup", "wait", id)

	var rt api.RestoreTest
	out := hub.CLI("restore-test", "run", "--vm", "vm1", "--json")
	if err := json.Unmarshal([]byte(out), &rt); err != nil {
		t.Fatalf("restore-test run --json: %v\n%s", err, out)
	}
	if !rt.Passed || rt.BackupID != id || rt.BytesRead != 64<<20 || rt.DataBytes < 16<<20 || rt.DataBytes >= rt.BytesRead || rt.Seconds <= 0 || rt.MBPerS <= 0 ||
		len(rt.Checks) != 1 || rt.Checks[0].Name != "read" || !rt.Checks[0].Passed || rt.Checks[0].DiskID == "" {
		t.Fatalf("healthy restore point: %s", out)
	}
	for _, field := range []string{`"passed": true`, `"checks": [`, `"bytes_read": 67108864`, `"mb_per_s":`, `"seconds":`} {
		if !strings.Contains(out, field) {
			t.Fatalf("the JSON lacks %s:\n%s", field, out)
		}
	}
	disk := rt.Checks[0].DiskID
	t.Logf("healthy restore point %s: %d bytes (%d of data) read and verified in %.3fs (%.1f MB/s)", id, rt.BytesRead, rt.DataBytes, rt.Seconds, rt.MBPerS)
	viewer := hub.APIToken(api.RoleViewer)
	var l api.RestoreTestList
	if code := apiCall(t, hub, http.MethodGet, api.PathRestoreTests+"?vm=vm1&result=passed", viewer, nil, &l); code != 200 || len(l.RestoreTests) != 1 || l.RestoreTests[0].ID != rt.ID {
		t.Fatalf("the API lists %d %+v", code, l)
	}
	if m := scrape(t, hub.Metrics); gauge(m, "sendense_hub_restore_test_vms_failing") != 0 ||
		gauge(m, `sendense_hub_restore_test_last_success_timestamp_seconds{vm="vm1"}`) != float64(rt.FinishedAt.Unix()) {
		t.Fatal("the metrics do not show the passed test")
	}

	// Damage one chunk on disk: the next test fails, names the disk and the damage, exits 1.
	var chunks []string
	_ = filepath.WalkDir(filepath.Join(hub.DataDir, "repositories", "default", "chunks"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			chunks = append(chunks, p)
		}
		return nil
	})
	if len(chunks) == 0 {
		t.Fatal("no chunk files in the repository")
	}
	if err := os.Chmod(chunks[0], 0o640); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(chunks[0])
	b[len(b)-1] ^= 0x01
	if err := os.WriteFile(chunks[0], b, 0o640); err != nil {
		t.Fatal(err)
	}
	out, err := hub.TryCLI("restore-test", "run", "--vm", "vm1", "--json")
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("a failed restore test exited with %v", err)
	}
	var bad api.RestoreTest
	if jerr := json.Unmarshal([]byte(out), &bad); jerr != nil {
		t.Fatalf("restore-test run --json of a damaged point: %v\n%s", jerr, out)
	}
	if bad.Passed || bad.Status != api.RestoreTestFailed || len(bad.Checks) != 1 || bad.Checks[0].Passed ||
		!strings.Contains(bad.Checks[0].Error, "chunk damaged") || !strings.Contains(bad.Error, disk) || !strings.Contains(err.Error(), disk) {
		t.Fatalf("damaged restore point: %s\n%v", out, err)
	}
	if m := scrape(t, hub.Metrics); gauge(m, "sendense_hub_restore_test_vms_failing") != 1 {
		t.Fatal("the alert's metric did not move after a failed test")
	}

	// The same through the API: the hub runs it in the background; the quarantined chunk is
	// missing now, and the test fails again, counted by the hub.
	operator := hub.APIToken(api.RoleOperator)
	var started api.RestoreTest
	if code := apiCall(t, hub, http.MethodPost, api.PathRestoreTests, operator, api.StartRestoreTestRequest{VM: "vm1"}, &started); code != http.StatusAccepted {
		t.Fatalf("POST restore-tests: %d", code)
	}
	var got api.RestoreTest
	deadline := time.Now().Add(time.Minute)
	for got.Status != api.RestoreTestFailed && got.Status != api.RestoreTestPassed {
		if time.Now().After(deadline) {
			t.Fatalf("the hub did not run the test: %+v", got)
		}
		time.Sleep(100 * time.Millisecond)
		apiCall(t, hub, http.MethodGet, api.Path(api.PathRestoreTest, started.ID), viewer, nil, &got)
	}
	if got.Passed || !strings.Contains(got.Error, disk) {
		t.Fatalf("the hub's test of the damaged point: %+v", got)
	}
	if m := scrape(t, hub.Metrics); gauge(m, `sendense_hub_restore_tests_total{result="failed"}`) != 1 || gauge(m, "sendense_hub_restore_test_vms_failing") != 1 {
		t.Fatal("the hub did not count its failed test")
	}

	// The report an auditor keeps names the VM, both results, the restore point and the reason.
	md := hub.CLI("report", "restore-tests", "--since", "30d")
	for _, want := range []string{"# Restore test report", "vm1", "PASSED", "FAILED", id, "chunk damaged", rt.ID, bad.ID, "VMs without a restore test in the period"} {
		if !strings.Contains(md, want) {
			t.Fatalf("the report lacks %q:\n%s", want, md)
		}
	}
	var rep api.RestoreTestReport
	if err := json.Unmarshal([]byte(hub.CLI("report", "restore-tests", "--since", "30d", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Runs != 3 || rep.Passed != 1 || rep.Failed != 2 || len(rep.VMs) != 1 || rep.VMs[0].LastResult != api.RestoreTestFailed || len(rep.Untested) != 0 {
		t.Fatalf("report: %+v", rep)
	}
}
