package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/nbd"
)

// logBuffer captures log output of one test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// shortDir returns a directory with a short path for unix sockets (t.TempDir embeds the test
// name and can exceed the 107-byte limit).
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dsk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func startKit(t *testing.T, opts NBDKitOptions) *NBDKit {
	t.Helper()
	requireNBDKit(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	k, err := StartNBDKit(ctx, opts)
	if err != nil {
		t.Fatalf("StartNBDKit: %v", err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

func openKit(t *testing.T, k *NBDKit) Reader {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := k.Open(ctx)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestNBDKitFilePlugin(t *testing.T) {
	path, content := makeImage(t, 72<<20+3333)
	log, logs := testLogger()
	dir := shortDir(t)
	k := startKit(t, NBDKitOptions{Plugin: "file", Args: []string{"file=" + path}, Dir: dir, Log: log})
	if fi, err := os.Stat(k.Socket()); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("Socket() %s is not a socket: %v", k.Socket(), err)
	}
	r := openKit(t, k)
	checkReader(t, r, content)

	if !strings.Contains(logs.String(), "params=[file]") {
		t.Errorf("start-up log does not list the parameter keys:\n%s", logs)
	}

	if err := k.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := r.ReadAt(make([]byte, 4096), 0); !errors.Is(err, nbd.ErrClosed) {
		t.Fatalf("ReadAt through a stopped nbdkit: err = %v, want nbd.ErrClosed", err)
	}
	if _, err := k.Open(t.Context()); !errors.Is(err, ErrNBDKitExited) {
		t.Fatalf("Open after Close: err = %v, want ErrNBDKitExited", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("Close left %d files in the socket directory (%s...)", len(entries), entries[0].Name())
	}
}

func TestNBDKitPrivateDir(t *testing.T) {
	path, _ := makeImage(t, 1<<20)
	k := startKit(t, NBDKitOptions{Plugin: "file", Args: []string{"file=" + path}})
	dir := filepath.Dir(k.Socket())
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("private socket directory %s still exists after Close (err %v)", dir, err)
	}
}

// TestNBDKitCurlPlugin reads a disk served by an HTTPS server on loopback through nbdkit's curl
// plugin: the path a vSphere /folder URL takes when read over NBD.
func TestNBDKitCurlPlugin(t *testing.T) {
	requireNBDKit(t)
	_, content := makeImage(t, 40<<20+777)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "disk-flat.vmdk", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(srv.Close)
	log, logs := testLogger()
	k := startKit(t, NBDKitOptions{
		Plugin: "curl",
		Args:   []string{"url=" + diskURL(srv), "sslverify=false", "cookie=vmware_soap_session=topsecret42"},
		Dir:    shortDir(t),
		Log:    log,
	})
	r := openKit(t, k)
	checkReader(t, r, content)

	out := logs.String()
	if strings.Contains(out, "topsecret42") {
		t.Fatalf("the cookie value was logged:\n%s", out)
	}
	if !strings.Contains(out, "secret_params=1") || !strings.Contains(out, "secret_params_inline=1") {
		t.Errorf("log does not count the secret parameter or warn about the inline value:\n%s", out)
	}
}

// A secret parameter given by value reaches nbdkit through a 0600 file, not its command line
// (which every local user can read), and the file goes with the process.
func TestNBDKitSecretFiles(t *testing.T) {
	requireNBDKit(t)
	_, content := makeImage(t, 8<<20+123)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ck, err := r.Cookie("vmware_soap_session"); err != nil || ck.Value != "topsecret42" {
			http.Error(w, "no session", http.StatusForbidden)
			return
		}
		http.ServeContent(w, r, "disk-flat.vmdk", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(srv.Close)
	log, logs := testLogger()
	dir := shortDir(t)
	k := startKit(t, NBDKitOptions{
		Plugin:      "curl",
		Args:        []string{"url=" + diskURL(srv), "sslverify=false"},
		SecretFiles: map[string]string{"cookie": "vmware_soap_session=topsecret42"},
		Dir:         dir,
		Log:         log,
	})
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(cmdline, []byte("topsecret42")) || !bytes.Contains(cmdline, []byte("cookie=+")) {
		t.Fatalf("nbdkit's command line: %q", cmdline)
	}
	for _, f := range k.secrets {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("secret file %s: %v, %v", f, fi, err)
		}
	}
	r := openKit(t, k)
	checkReader(t, r, content)
	if out := logs.String(); strings.Contains(out, "topsecret42") || strings.Contains(out, "secret_params_inline") {
		t.Fatalf("the log shows the cookie or warns about an inline secret:\n%s", out)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range k.secrets {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("secret file %s after Close: %v", f, err)
		}
	}
}

func TestNBDKitStartFailure(t *testing.T) {
	requireNBDKit(t)
	missing := filepath.Join(t.TempDir(), "missing-hunter2-disk.img")
	log, logs := testLogger()
	start := time.Now()
	_, err := StartNBDKit(t.Context(), NBDKitOptions{
		Plugin:     "file",
		Args:       []string{"file=" + missing},
		SecretKeys: []string{"file"},
		Dir:        shortDir(t),
		Log:        log,
	})
	if err == nil {
		t.Fatal("StartNBDKit of a missing file succeeded")
	}
	t.Logf("error: %v", err)
	if !errors.Is(err, ErrNBDKitExited) || !strings.Contains(err.Error(), "nbdkit said") {
		t.Fatalf("err = %v, want ErrNBDKitExited quoting nbdkit's stderr", err)
	}
	// The argument was marked secret: neither the error nor the log may contain it.
	for what, s := range map[string]string{"error": err.Error(), "log": logs.String()} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("%s contains the secret argument:\n%s", what, s)
		}
	}
	if !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("err = %v, want nbdkit's message with the secret masked", err)
	}
	if time.Since(start) > DefaultNBDKitStartTimeout {
		t.Errorf("start-up failure was noticed only by the timeout")
	}
}

func TestStartNBDKitRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts NBDKitOptions
	}{
		{"no plugin", NBDKitOptions{}},
		{"plugin is a flag", NBDKitOptions{Plugin: "--run=sh"}},
		{"argument without key", NBDKitOptions{Plugin: "file", Args: []string{"/disk.img"}}},
		{"argument is a flag", NBDKitOptions{Plugin: "file", Args: []string{"--filter=x"}}},
		{"filter is a flag", NBDKitOptions{Plugin: "file", Filters: []string{"-v"}}},
		{"missing binary", NBDKitOptions{Plugin: "file", Binary: "/nonexistent/nbdkit"}},
		{"socket path too long", NBDKitOptions{Plugin: "file", Dir: "/tmp/" + strings.Repeat("d", 120)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.Binary == "" {
				requireNBDKit(t)
			}
			k, err := StartNBDKit(t.Context(), tc.opts)
			if err == nil {
				_ = k.Close()
				t.Fatal("StartNBDKit succeeded")
			}
			if tc.name == "missing binary" && !errors.Is(err, ErrNBDKitNotFound) {
				t.Fatalf("err = %v, want ErrNBDKitNotFound", err)
			}
		})
	}
}

func TestNBDKitDiesWhileReading(t *testing.T) {
	path, _ := makeImage(t, 8<<20)
	log, logs := testLogger()
	k := startKit(t, NBDKitOptions{
		Plugin:  "file",
		Args:    []string{"file=" + path, "delay-read=30"},
		Filters: []string{"delay"},
		Dir:     shortDir(t),
		Log:     log,
	})
	r := openKit(t, k)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			_, err := r.ReadAt(make([]byte, 1<<20), int64(i)<<20)
			errs <- err
		}()
	}
	// Kept as a sleep: package disk cannot see the NBD client's pending requests (package nbd
	// waits for them in its own test); this makes it likely the reads are in flight at the kill.
	time.Sleep(200 * time.Millisecond)
	if err := k.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		select {
		case err := <-errs:
			if !errors.Is(err, nbd.ErrConnLost) {
				t.Errorf("pending ReadAt: err = %v, want nbd.ErrConnLost", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("a pending ReadAt hangs after nbdkit died")
		}
	}
	<-k.exited
	if _, err := k.Open(t.Context()); !errors.Is(err, ErrNBDKitExited) {
		t.Errorf("Open after nbdkit died: err = %v, want ErrNBDKitExited", err)
	}
	if err := k.Close(); !errors.Is(err, ErrNBDKitExited) {
		t.Errorf("Close after nbdkit died: err = %v, want ErrNBDKitExited", err)
	}
	if !strings.Contains(logs.String(), "nbdkit exited unexpectedly") {
		t.Errorf("the unexpected exit was not logged:\n%s", logs)
	}
}

func TestNBDKitStartHonoursContext(t *testing.T) {
	requireNBDKit(t)
	// The sh plugin runs a script at load; this one sleeps longer than the context allows, so
	// nbdkit never listens.
	script := filepath.Join(t.TempDir(), "slow.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncase \"$1\" in load) sleep 30 ;; get_size) echo 1M ;; pread) exit 1 ;; *) exit 2 ;; esac\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		k, err := StartNBDKit(ctx, NBDKitOptions{Plugin: "sh", Args: []string{"script=" + script}, Dir: shortDir(t)})
		if err == nil {
			_ = k.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("StartNBDKit ignored its context")
	}
}
