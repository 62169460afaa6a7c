package nbd

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/testenv"
)

// lookNBDKit returns the nbdkit binary or skips the test (fails it under SENDENSE_TEST_STRICT).
func lookNBDKit(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("nbdkit")
	if err != nil {
		testenv.Skip(t, "nbdkit not found in PATH: install it with `apt-get install nbdkit` (make test does)")
	}
	return path
}

// testServer is an nbdkit process serving on a unix socket.
type testServer struct {
	socket string
	cmd    *exec.Cmd
}

// startNBDKit runs `nbdkit --readonly ... args` on a private unix socket and waits until it
// accepts connections (nbdkit writes its pidfile only then). The process is stopped at cleanup.
func startNBDKit(t testing.TB, args ...string) *testServer {
	t.Helper()
	bin := lookNBDKit(t)
	// A short directory: unix socket paths are limited to 107 bytes, and t.TempDir embeds the
	// test name.
	dir, err := os.MkdirTemp("", "nbdtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	pidfile := filepath.Join(dir, "pid")
	all := append([]string{"--readonly", "--exit-with-parent", "--foreground", "--unix", sock, "--pidfile", pidfile}, args...)
	cmd := exec.Command(bin, all...)
	stderr := &testenv.LogBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nbdkit: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	giveUp := time.After(20 * time.Second)
	for {
		if b, err := os.ReadFile(pidfile); err == nil {
			if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && pid == cmd.Process.Pid {
				return &testServer{socket: sock, cmd: cmd}
			}
		}
		select {
		case <-exited:
			t.Fatalf("nbdkit %v exited during start-up: %s", args, stderr.String())
		case <-giveUp:
			t.Fatalf("nbdkit %v did not become ready: %s", args, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// makeSparseImage creates a sparse file of the given size with random data at scattered offsets,
// at both 32 MiB split points and in the last bytes, and returns its path.
func makeSparseImage(t testing.TB, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	fill := rand.NewChaCha8([32]byte{1})
	offsets := []int64{0, DefaultMaxRequest - 3000, 2*DefaultMaxRequest - 5000, max(size-70000, 0)}
	for range 40 {
		offsets = append(offsets, rng.Int64N(size))
	}
	for _, off := range offsets {
		if off < 0 || off >= size {
			continue
		}
		n := min(int64(1+rng.IntN(300<<10)), size-off)
		buf := make([]byte, n)
		_, _ = fill.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}
