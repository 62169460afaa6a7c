package opstest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/testenv"
)

func TestMain(m *testing.M) { os.Exit(hubtest.Main(m)) }

// repoRoot is the repository's top directory (the one holding go.work).
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env GOWORK: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// promtool finds the pinned promtool that scripts/tools.sh installs.
func promtool(t *testing.T) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), ".tools", "promtool")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	testenv.Skip(t, "promtool not found: run scripts/tools.sh (installs the pinned promtool into .tools/)")
	return ""
}

func run(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func scrape(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", url, resp.StatusCode, err)
	}
	return b
}

// families returns the metric family names of a scrape (# TYPE lines).
func families(b []byte) map[string]bool {
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
		}
	}
	return out
}

var metricRE = regexp.MustCompile(`\bsendense_[a-z0-9_]+`)

// base strips the series suffixes of histograms and summaries.
func base(name string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if n, ok := strings.CutSuffix(name, s); ok {
			return n
		}
	}
	return name
}

// startProduct runs the lab with VM vm1, a hub, and an enrolled agent daemon reporting on the
// lab, and waits until the hub lists vm1. It returns the hub and the agent's metrics URL.
func startProduct(t *testing.T) (*hubtest.Hub, string) {
	t.Helper()
	hub, _, m := startProductWith(t, false)
	return hub, m
}

// startProductWith is startProduct that also returns the lab and, with instantRecovery, turns
// on the hub's NFS export (on 127.0.0.1) and lets the lab's hosts mount a session's export as
// the folder the hub serves; the lab's first host is then named localhost, an ESXi host name
// the hub resolves.
func startProductWith(t *testing.T, instantRecovery bool) (*hubtest.Hub, *lab.Lab, string) {
	t.Helper()
	var hub *hubtest.Hub
	var hubArgs []string
	lo := lab.Options{}
	if instantRecovery {
		hubArgs = append(hubArgs, "--nfs-listen", "127.0.0.1:0", "--nfs-address", "127.0.0.1")
		lo.NASDir = func(_, remotePath string) (string, error) {
			return filepath.Join(hub.DataDir, "instant-recovery", strings.TrimPrefix(remotePath, "/"), "export"), nil
		}
	}
	l, err := lab.Start(t.Context(), lab.Spec{VMs: []lab.VMSpec{{Name: "vm1", CBT: true, Disks: []lab.DiskSpec{{Size: "64MiB", Fill: lab.FillSparse, Data: "16MiB"}}}}}, lo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	if instantRecovery {
		if err := l.RenameHost(t.Context(), l.Hosts()[0], "localhost"); err != nil {
			t.Fatal(err)
		}
	}
	hub = hubtest.Start(t, hubArgs...)
	dir := t.TempDir()
	state := filepath.Join(dir, "agent")
	agentBin := filepath.Join(dir, "sendense-agent")
	run(t, nil, "go", "build", "-o", agentBin, "github.com/sendense/sendense/agent/cmd/sendense-agent")
	run(t, nil, agentBin, "enroll", "--token", hub.JoinToken(), "--state-dir", state)
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(l.Password()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	conf := fmt.Sprintf("state_dir: %s\nmetrics_listen: 127.0.0.1:0\nlog_format: json\nheartbeat_interval: 1s\nsources:\n  - name: lab\n    url: %s\n    username: %s\n    password_file: %s\n    ca_file: %s\n",
		state, l.SDKURL(), l.Username(), pw, l.CACertFile())
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	agent := exec.Command(agentBin, "run", "--config", cfg)
	agent.Stderr = logs
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	agentMetrics := ""
	lastCLI := time.Time{}
	testenv.WaitFor(t, 2*time.Minute, "the agent to report its inventory", func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			var m struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "metrics listening" {
				agentMetrics = "http://" + m.Addr + "/metrics"
			}
		}
		if agentMetrics == "" || time.Since(lastCLI) < 200*time.Millisecond {
			return false // the CLI is a process: ask it at most five times a second
		}
		lastCLI = time.Now()
		return strings.Contains(hub.CLI("vms", "list"), "vm1")
	})
	return hub, l, agentMetrics
}

// The whole product runs (lab, hub, enrolled agent daemon, a policy, a backup), both metrics
// endpoints are scraped and linted, and the dashboard and alert rules are checked against them.
func TestMetricsDashboardAndAlerts(t *testing.T) {
	pt := promtool(t)
	root := repoRoot(t)
	hub, agentMetrics := startProduct(t)
	hub.CLI("policy", "create", "--name", "nightly", "--schedule", "0 3 * * *", "--keep-daily", "7")
	hub.CLI("repo", "create", "offsite", "--path", filepath.Join(t.TempDir(), "offsite"))
	hub.CLI("policy", "create", "offsite", "--kind", "copy", "--to", "offsite", "--schedule", "@daily")
	id := strings.TrimSpace(hub.CLI("backup", "start", "--vm", "vm1"))
	hub.CLI("backup", "wait", id)

	hubScrape, agentScrape := scrape(t, hub.Metrics), scrape(t, agentMetrics)
	for name, b := range map[string][]byte{"hub": hubScrape, "agent": agentScrape} {
		if out := run(t, b, pt, "check", "metrics"); strings.TrimSpace(out) != "" {
			t.Errorf("promtool check metrics on the %s's metrics:\n%s", name, out)
		}
		if !bytes.Contains(b, []byte("sendense_"+name+"_build_info")) {
			t.Errorf("the %s exports no build info", name)
		}
	}
	exported := families(hubScrape)
	for k := range families(agentScrape) {
		exported[k] = true
	}
	for _, want := range []string{
		"sendense_hub_backup_jobs_finished_total", "sendense_hub_backup_duration_seconds", "sendense_hub_backup_read_bytes_total",
		"sendense_hub_backup_sent_bytes_total", "sendense_hub_backup_deduplicated_bytes_total", "sendense_hub_verify_chunk_failures_total",
		"sendense_hub_repository_size_bytes", "sendense_hub_certificate_expiry_timestamp_seconds", "sendense_hub_catalog_query_errors_total",
		"sendense_hub_policy_vms_overdue", "sendense_hub_restore_tests_total", "sendense_hub_restore_test_duration_seconds",
		"sendense_hub_restore_test_vms_failing", "sendense_hub_restore_test_rto_seconds", "sendense_agent_hub_request_retries_total", "sendense_agent_snapshot_age_seconds",
		"sendense_agent_certificate_expiry_timestamp_seconds", "sendense_agent_read_bytes_total",
		"sendense_hub_copy_lag_seconds", "sendense_hub_copies_behind", "sendense_hub_copy_lag_allowed_seconds",
	} {
		if !exported[want] {
			t.Errorf("metric %s is not exported", want)
		}
	}

	// Every dashboard query names exported metrics.
	raw, err := os.ReadFile(filepath.Join(root, "packaging", "grafana", "sendense.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Type    string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	queries := 0
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			names := metricRE.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no Sendense metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !exported[base(n)] {
					t.Errorf("panel %q: %s is not exported (query %q)", p.Title, n, tg.Expr)
				}
			}
		}
	}
	if queries < 20 {
		t.Fatalf("only %d dashboard queries", queries)
	}

	// The alert rules are valid, their unit tests pass, and they name exported metrics.
	rules := filepath.Join(root, "packaging", "prometheus", "sendense-alerts.yml")
	run(t, nil, pt, "check", "rules", rules)
	cmd := exec.Command(pt, "test", "rules", "sendense-alerts.test.yml")
	cmd.Dir = filepath.Dir(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	rb, _ := os.ReadFile(rules)
	for _, n := range metricRE.FindAllString(string(rb), -1) {
		if !exported[base(n)] {
			t.Errorf("alert rules name %s, which is not exported", n)
		}
	}
	for _, alert := range []string{"SendenseBackupMissed", "SendenseBackupJobsFailing", "SendenseAgentDown", "SendenseCertificateExpiringSoon",
		"SendenseRepositoryAlmostFull", "SendenseVerifyFoundDamage", "SendenseSnapshotTooOld", "SendenseRestoreTestFailing", "SendenseCopiesBehind", "SendenseCopyDamaged"} {
		tb, _ := os.ReadFile(filepath.Join(filepath.Dir(rules), "sendense-alerts.test.yml"))
		if !bytes.Contains(rb, []byte("alert: "+alert)) || !bytes.Contains(tb, []byte("alertname: "+alert)) {
			t.Errorf("alert %s is missing or has no unit test", alert)
		}
	}
}
