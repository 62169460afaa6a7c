// Package hubtest runs a real sendense-hub process for the agent's integration tests: built from
// this workspace, listening on loopback with TLS 1.3, with its own data directory.
package hubtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// Main builds sendense-hub once for the test binary and removes it afterwards, with the
// directories given to RemoveAtExit. Call it from TestMain: os.Exit(hubtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	atExit.Lock()
	defer atExit.Unlock()
	for _, d := range atExit.dirs {
		_ = os.RemoveAll(d)
	}
	return code
}

// atExit holds directories that outlive one test (binaries built once per test binary).
var atExit struct {
	sync.Mutex
	dirs []string
}

// RemoveAtExit removes dir when Main returns.
func RemoveAtExit(dir string) {
	atExit.Lock()
	defer atExit.Unlock()
	atExit.dirs = append(atExit.dirs, dir)
}

// Binary returns the path of a sendense-hub built from this workspace.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOWORK").Output()
		gowork := strings.TrimSpace(string(out))
		if err != nil || gowork == "" || gowork == "off" {
			buildErr = fmt.Errorf("the hub integration tests need the go.work workspace (GOWORK=%q)", gowork)
			return
		}
		binDir, buildErr = os.MkdirTemp("", "sendense-hubtest-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "sendense-hub")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/sendense/sendense/hub/cmd/sendense-hub")
		cmd.Dir = filepath.Dir(gowork)
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build sendense-hub: %v\n%s", err, b)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Hub is a running sendense-hub.
type Hub struct {
	t       testing.TB
	URL     string // https://127.0.0.1:PORT
	Addr    string
	DataDir string
	Metrics string // http://127.0.0.1:PORT/metrics
	args    []string
	history string // logs of earlier runs (before Restart)
	logs    *testenv.LogBuffer
	cmd     *exec.Cmd
	done    chan error
}

// Start runs `sendense-hub serve` on loopback with a fresh data directory and extra flags; it
// is stopped when the test ends.
func Start(t testing.TB, extra ...string) *Hub {
	t.Helper()
	h := &Hub{t: t, DataDir: filepath.Join(t.TempDir(), "hub"), args: extra}
	h.start()
	t.Cleanup(func() { h.Stop() })
	return h
}

func (h *Hub) start() {
	h.t.Helper()
	listen := "127.0.0.1:0"
	if h.Addr != "" {
		listen = h.Addr // restart on the same port
	}
	args := append([]string{"serve", "--data-dir", h.DataDir, "--listen", listen, "--metrics-listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"}, h.args...)
	h.logs = &testenv.LogBuffer{}
	h.cmd = exec.Command(Binary(h.t), args...)
	h.cmd.Stderr = h.logs
	h.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if err := h.cmd.Start(); err != nil {
		h.t.Fatalf("start hub: %v", err)
	}
	h.done = make(chan error, 1)
	go func() { h.done <- h.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		// "hub listening" is logged once every listener is open and carries every address, so
		// one line read once is the whole answer.
		if line, ok := h.logLine("hub listening"); ok {
			h.Addr, _ = line["addr"].(string)
			h.URL = "https://" + h.Addr
			m, _ := line["metrics_addr"].(string)
			if h.Addr == "" || m == "" {
				h.t.Fatalf("hub listening without addresses: %v", line)
			}
			h.Metrics = "http://" + m + "/metrics"
			return
		}
		select {
		case err := <-h.done:
			h.t.Fatalf("hub exited before listening: %v\n%s", err, h.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	h.t.Fatalf("hub did not listen within 60s:\n%s", h.logs.String())
}

func (h *Hub) logLine(msg string) (map[string]any, bool) {
	sc := bufio.NewScanner(strings.NewReader(h.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
			return line, true
		}
	}
	return nil, false
}

// Logs returns everything the hub has logged so far (all runs).
func (h *Hub) Logs() string { return h.history + h.logs.String() }

// PID is the process id of the running hub (0 when it is not running), e.g. to read its peak
// memory from /proc/PID/status.
func (h *Hub) PID() int {
	if h.cmd == nil || h.cmd.Process == nil || h.cmd.ProcessState != nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// Stop sends SIGTERM and waits for a clean exit.
func (h *Hub) Stop() {
	if h.cmd == nil || h.cmd.ProcessState != nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}

// Kill stops the hub abruptly (SIGKILL), as a crash would.
func (h *Hub) Kill() {
	if h.cmd == nil || h.cmd.ProcessState != nil {
		return
	}
	_ = h.cmd.Process.Kill()
	<-h.done
}

// Restart starts the hub again on the same address and data directory.
func (h *Hub) Restart() {
	h.t.Helper()
	h.Stop()
	h.history += h.logs.String()
	h.start()
}

// CLI runs a sendense-hub subcommand against this hub's data directory and returns its stdout.
func (h *Hub) CLI(args ...string) string {
	h.t.Helper()
	out, err := h.TryCLI(args...)
	if err != nil {
		h.t.Fatalf("sendense-hub %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// TryCLI is CLI returning the error (with stderr) instead of failing the test.
func (h *Hub) TryCLI(args ...string) (string, error) {
	full := append(append([]string{}, args...), "--data-dir", h.DataDir, "--public-url", h.URL)
	full = append(full, h.args...)
	cmd := exec.Command(Binary(h.t), full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	err := cmd.Run()
	h.logs.Write(stderr.Bytes())
	if err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// JoinToken creates a join token with the CLI.
func (h *Hub) JoinToken() string {
	h.t.Helper()
	return strings.TrimSpace(h.CLI("token", "create", "--ttl", "10m"))
}

// APIToken creates an operator API token with the CLI.
func (h *Hub) APIToken(role string) string {
	h.t.Helper()
	return strings.TrimSpace(h.CLI("apitoken", "create", "--name", "test-"+role, "--role", role))
}

// CAFile is the hub CA certificate.
func (h *Hub) CAFile() string { return filepath.Join(h.DataDir, "pki", "ca.crt") }
