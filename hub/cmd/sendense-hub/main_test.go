package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

func noEnv(string) string { return "" }

func TestInvalidConfigCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(cfgPath, []byte("data_dir: "+dataDir+"\nlog_level: chatty\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"serve", "--config", cfgPath}, &out, &errOut, noEnv)
	if err == nil {
		t.Fatal("serve accepted an invalid configuration")
	}
	if !strings.Contains(err.Error(), "log_level") {
		t.Fatalf("error %q does not name the field", err)
	}
	if _, statErr := os.Stat(dataDir); !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("data dir exists after a config error: %v", statErr)
	}
}

// startHub runs `serve` in-process on loopback and returns its API address and data dir.
func startHub(t *testing.T, extra ...string) (addr, dataDir string, logs *testenv.LogBuffer, stop func() error) {
	t.Helper()
	dataDir = filepath.Join(t.TempDir(), "data")
	addr, logs, stop = startHubIn(t, dataDir, extra...)
	return addr, dataDir, logs, stop
}

// startHubIn runs `serve` in-process on loopback with the given data dir.
func startHubIn(t *testing.T, dataDir string, extra ...string) (addr string, logs *testenv.LogBuffer, stop func() error) {
	t.Helper()
	logs = &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", dataDir, "--log-format", "json"}, extra...)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, io.Discard, logs, noEnv) }()
	addr = waitListening(t, logs, done)
	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(30 * time.Second):
				stopErr = errors.New("hub did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return addr, logs, stop
}

func waitListening(t *testing.T, logs *testenv.LogBuffer, done <-chan error) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "hub listening" {
				return line.Addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("hub exited before listening: %v\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("hub did not listen within 30s:\n%s", logs.String())
	return ""
}

func caClient(t *testing.T, dataDir string, maxVersion uint16) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(dataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: maxVersion}}}
}

func getHealth(t *testing.T, c *http.Client, addr string) api.Health {
	t.Helper()
	resp, err := c.Get("https://" + addr + api.PathHealth)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	defer resp.Body.Close()
	var h api.Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("decode health: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health status %d: %+v", resp.StatusCode, h)
	}
	return h
}

func TestServeHealthAndTLS(t *testing.T) {
	for _, dialect := range catalogtest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			var extra []string
			if dialect == "mysql" {
				extra = []string{"--db", catalogtest.NewMySQLDatabase(t)}
			}
			addr, dataDir, logs, stop := startHub(t, extra...)
			h := getHealth(t, caClient(t, dataDir, 0), addr)
			if h.Status != "ok" || !h.Catalog.OK || !h.Repository.OK || h.SystemInfo.CatalogDriver != dialect {
				t.Fatalf("health %+v", h)
			}
			found := false
			for _, ep := range h.SystemInfo.APIEndpoints {
				if ep.Method == http.MethodGet && ep.Path == api.PathHealth {
					found = true
				}
			}
			if !found {
				t.Fatalf("health does not list itself among %v", h.SystemInfo.APIEndpoints)
			}

			_, err := caClient(t, dataDir, tls.VersionTLS12).Get("https://" + addr + api.PathHealth)
			if err == nil {
				t.Fatal("a TLS 1.2 client was served")
			}
			// The client sees the refusal before the server has logged it: wait for the line.
			testenv.WaitFor(t, 10*time.Second, "the refused TLS 1.2 handshake to be logged", func() bool {
				return strings.Contains(logs.String(), "unsupported versions")
			})
			for _, f := range []string{"pki/ca.key", "pki/server.key"} {
				fi, err := os.Stat(filepath.Join(dataDir, f))
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v err %v, want 0600", f, fi.Mode().Perm(), err)
				}
			}
			if _, err := os.Stat(filepath.Join(dataDir, "repositories", "default", "repo.json")); err != nil {
				t.Errorf("default repository not created: %v", err)
			}
			if err := stop(); err != nil {
				t.Fatalf("stop: %v", err)
			}
		})
	}
}

// TestSIGTERMExitsCleanly runs the real binary: SIGTERM must drain and exit 0.
func TestSIGTERMExitsCleanly(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sendense-hub")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	logs := &testenv.LogBuffer{}
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json")
	cmd.Stderr = logs
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	addr := waitListening(t, logs, done)
	getHealth(t, caClient(t, dataDir, 0), addr)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("hub did not exit within 30s of SIGTERM")
	}
	if !strings.Contains(logs.String(), `"msg":"hub stopped"`) {
		t.Fatalf("no clean stop logged:\n%s", logs.String())
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"version"}, &out, io.Discard, noEnv); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "sendense-hub ") {
		t.Fatalf("version printed %q", out.String())
	}
}
