package chaostest

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
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
	"github.com/sendense/sendense/shared/testenv"
)

func TestMain(m *testing.M) { os.Exit(hubtest.Main(m)) }

const mib = int64(1) << 20

// envInt reads a positive integer setting from the environment.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q is not a non-negative integer", name, v)
	}
	return n
}

// repoRoot is the repository's top directory (the one holding go.work).
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOWORK").Output()
	gowork := strings.TrimSpace(string(out))
	if err != nil || gowork == "" || gowork == "off" {
		t.Fatalf("the fault suite needs the go.work workspace: go env GOWORK: %q %v", gowork, err)
	}
	return filepath.Dir(gowork)
}

var (
	agentBinOnce sync.Once
	agentBinPath string
	agentBinErr  error
)

// agentBinary builds sendense-agent once for the test binary.
func agentBinary(t *testing.T) string {
	t.Helper()
	agentBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sendense-chaos-agent-")
		if err != nil {
			agentBinErr = err
			return
		}
		hubtest.RemoveAtExit(dir)
		agentBinPath = filepath.Join(dir, "sendense-agent")
		out, err := exec.Command("go", "build", "-o", agentBinPath, "github.com/sendense/sendense/agent/cmd/sendense-agent").CombinedOutput()
		if err != nil {
			agentBinErr = fmt.Errorf("build sendense-agent: %v\n%s", err, out)
		}
	})
	if agentBinErr != nil {
		t.Fatal(agentBinErr)
	}
	return agentBinPath
}

// operatorClient trusts the hub's CA; operators authenticate with a bearer token.
func operatorClient(t *testing.T, hub *hubtest.Hub) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(hub.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
}

// fileSum returns the SHA-256 of a file read as size bytes: a shorter (sparse, never written to
// the end) file is padded with zeros, as a disk reads.
func fileSum(path string, size int64) ([32]byte, error) {
	var out [32]byte
	f, err := os.Open(path)
	if err != nil {
		return out, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, size))
	if err != nil {
		return out, err
	}
	if _, err := io.CopyN(h, zeros{}, size-n); err != nil {
		return out, err
	}
	copy(out[:], h.Sum(nil))
	return out, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// peakRSS reads a process's peak resident set (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("VmHWM line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// agentProc is a sendense-agent process.
type agentProc struct {
	cmd  *exec.Cmd
	logs *testenv.LogBuffer
	once sync.Once
}

func startAgent(t *testing.T, bin string, logs *testenv.LogBuffer, args ...string) *agentProc {
	t.Helper()
	a := &agentProc{logs: logs}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = logs, logs
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(a.kill)
	return a
}

// kill ends the agent abruptly (SIGKILL), as a crash would.
func (a *agentProc) kill() {
	a.once.Do(func() {
		_ = a.cmd.Process.Signal(syscall.SIGKILL)
		_ = a.cmd.Wait()
	})
}
