package backup_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// cutProxy forwards TCP to a target and can sever every open connection at once.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cuts   int
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.cuts++
}

// A connection cut in the middle of uploads: the client retries and the backup completes with
// the right bytes.
func TestConnectionCutMidUpload(t *testing.T) {
	var proxy *cutProxy
	spec := lab.Spec{VMs: []lab.VMSpec{{Name: "big", CBT: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "256MiB", Fill: lab.FillRandom, Seed: 5}}}}}
	e := newEnv(t, spec, envOptions{hubURL: func(h *hubtest.Hub) string {
		proxy = newCutProxy(t, h.Addr)
		return "https://" + proxy.ln.Addr().String()
	}})
	queued := e.startBackup("big", "")
	job, err := e.hc.NextJob(t.Context(), 10*time.Second, nil)
	if err != nil || job == nil {
		t.Fatalf("claim: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.runner.Run(t.Context(), job) }()
	// Cut every connection a few times while the disk is being uploaded.
	deadline := time.Now().Add(2 * time.Minute)
	for proxy.cuts < 3 && time.Now().Before(deadline) {
		if sent := e.metricsSent(); sent > int64(proxy.cuts+1)*40*mib {
			proxy.cut()
		}
		time.Sleep(5 * time.Millisecond) // paces the polling of the counter; the cuts follow what it shows
	}
	if err := <-done; err != nil {
		t.Fatalf("backup across connection cuts: %v\n%s", err, e.logs)
	}
	if proxy.cuts < 3 {
		t.Fatalf("the upload finished before the connections could be cut (%d cuts)", proxy.cuts)
	}
	b := e.get(queued.ID)
	if b.Status != "succeeded" || e.imageSum(b.ID, "disk-2000") != e.diskSum("big", "disk-2000") {
		t.Fatalf("after %d cuts: %+v", proxy.cuts, b)
	}
}

// metricsSent reads how many bytes the in-process agent has sent.
func (e *env) metricsSent() int64 { return int64(backupSentBytes(e)) }

// An agent killed in the middle of a backup: the restarted agent gets the job back, reuses its
// snapshot, skips the slots the hub acknowledged, and completes; nothing is left behind.
func TestAgentKilledMidBackupResumes(t *testing.T) {
	spec := lab.Spec{VMs: []lab.VMSpec{{Name: "vm1", CBT: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "640MiB", Fill: lab.FillRandom, Seed: 9}}}}}
	e := newEnv(t, spec, envOptions{})
	agentBin := buildAgent(t)
	cfg := e.writeAgentConfig(t)
	queued := e.startBackup("vm1", "")

	first := startAgent(t, agentBin, cfg)
	// Wait until a good part (but not all) of the disk is stored, then kill -9.
	testenv.WaitFor(t, 2*time.Minute, "100 of 160 chunks stored", func() bool { return e.hubChunks(t) >= 100 })
	first.kill()
	if st := e.get(queued.ID); st.Status != "running" {
		t.Fatalf("job after the kill: %s", st.Status)
	}
	if n := snapshotsLeft(t, e); n != 1 {
		t.Fatalf("%d snapshots after the kill, want the job's one", n)
	}
	before := e.hubChunks(t)
	dupBefore := e.hubMetric(t, "sendense_hub_chunks_duplicate_total")

	second := startAgent(t, agentBin, cfg)
	defer second.kill()
	var b api.Backup
	testenv.WaitFor(t, 3*time.Minute, "the job to finish", func() bool { b = e.get(queued.ID); return b.Status != "running" })
	if b.Status != "succeeded" {
		t.Fatalf("resumed job: %+v\nagent 1:\n%s\nagent 2:\n%s", b, first.logs, second.logs)
	}
	if !strings.Contains(second.logs.String(), "resumed") && !strings.Contains(b.Notes, "resumed") {
		t.Fatalf("the job was not resumed: notes %q", b.Notes)
	}
	// The second agent skipped the slots the hub had recorded, and sent only chunks the hub
	// did not hold yet (a slot uploaded but not yet recorded is read again, found present and
	// not sent).
	if b.BytesRead >= 640*mib {
		t.Fatalf("the resumed job read the whole disk again (%d chunks were stored before)\n%s", before, second.logs)
	}
	if maxSent := int64(160-before)*(4*mib+64) + 64; b.BytesSent > maxSent {
		t.Fatalf("the resumed job sent %d bytes; only %d chunks were missing\n%s", b.BytesSent, 160-before, second.logs)
	}
	if dup := e.hubMetric(t, "sendense_hub_chunks_duplicate_total") - dupBefore; dup > 16 {
		t.Fatalf("the resumed agent re-sent %v chunks the hub already had", dup)
	}
	if e.imageSum(b.ID, "disk-2000") != e.diskSum("vm1", "disk-2000") {
		t.Fatal("the resumed backup does not restore the disk's bytes")
	}
	testenv.WaitFor(t, time.Minute, "the snapshot to be removed", func() bool { return snapshotsLeft(t, e) == 0 })
}

// An agent killed in the middle of a backup whose job then times out on the hub: the restarted
// agent's reaper removes the stale snapshot.
func TestStaleSnapshotIsReaped(t *testing.T) {
	spec := lab.Spec{VMs: []lab.VMSpec{{Name: "vm2", CBT: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "640MiB", Fill: lab.FillRandom, Seed: 11}}}}}
	e := newEnv(t, spec, envOptions{hubArgs: []string{"--job-timeout", "10s"}})
	agentBin := buildAgent(t)
	cfg := e.writeAgentConfig(t)
	queued := e.startBackup("vm2", "")
	first := startAgent(t, agentBin, cfg)
	testenv.WaitFor(t, 2*time.Minute, "10 chunks stored", func() bool { return e.hubChunks(t) >= 10 })
	first.kill()
	testenv.WaitFor(t, time.Minute, "the hub to fail the silent job", func() bool { return e.get(queued.ID).Status == "failed" })
	if n := snapshotsLeft(t, e); n != 1 {
		t.Fatalf("%d snapshots after the kill", n)
	}
	second := startAgent(t, agentBin, cfg)
	defer second.kill()
	testenv.WaitFor(t, time.Minute, "the reaper to remove the stale snapshot", func() bool { return snapshotsLeft(t, e) == 0 })
	// The snapshot is gone before the reaper logs it: wait for the line too.
	testenv.WaitFor(t, 30*time.Second, "the reaper's log line", func() bool {
		return strings.Contains(second.logs.String(), "removed a stale snapshot")
	})
}

// hubMetric reads one unlabelled series from the hub's /metrics.
func (e *env) hubMetric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get(e.hub.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func (e *env) hubChunks(t *testing.T) int {
	return int(e.hubMetric(t, "sendense_hub_chunks_received_total"))
}

var (
	agentBinOnce sync.Once
	agentBinPath string
	agentBinErr  error
)

func buildAgent(t *testing.T) string {
	t.Helper()
	agentBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sendense-agent-bin-")
		if err != nil {
			agentBinErr = err
			return
		}
		hubtest.RemoveAtExit(dir)
		agentBinPath = filepath.Join(dir, "sendense-agent")
		out, err := exec.Command("go", "build", "-o", agentBinPath, "github.com/sendense/sendense/agent/cmd/sendense-agent").CombinedOutput()
		if err != nil {
			agentBinErr = fmt.Errorf("build agent: %v\n%s", err, out)
		}
	})
	if agentBinErr != nil {
		t.Fatal(agentBinErr)
	}
	return agentBinPath
}

func (e *env) writeAgentConfig(t *testing.T) string {
	t.Helper()
	cfg := fmt.Sprintf(`state_dir: %s
discovery_interval: 1h
heartbeat_interval: 5s
metrics_listen: ""
log_format: text
log_level: debug
sources:
  - name: lab
    url: %s
    username: %s
    password_file: %s
    ca_file: %s
`, e.stateDir, e.srcCfg.URL, e.srcCfg.Username, e.srcCfg.PasswordFile, e.srcCfg.CAFile)
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type agentProc struct {
	cmd  *exec.Cmd
	logs *testenv.LogBuffer
	once sync.Once
}

func startAgent(t *testing.T, bin, cfg string) *agentProc {
	t.Helper()
	a := &agentProc{logs: &testenv.LogBuffer{}}
	a.cmd = exec.Command(bin, "run", "--config", cfg)
	a.cmd.Stderr = a.logs
	a.cmd.Stdout = a.logs
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.kill)
	return a
}

func (a *agentProc) kill() {
	a.once.Do(func() {
		_ = a.cmd.Process.Signal(syscall.SIGKILL)
		_ = a.cmd.Wait()
	})
}
