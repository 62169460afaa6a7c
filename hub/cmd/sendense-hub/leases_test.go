package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/testenv"
)

// TestTwoHubsShareDuties runs two hub processes on one MariaDB catalog: each background duty
// runs on exactly one of them, and when the hub holding duties is killed (kill -9, so nothing is
// released) the other takes every one of them over once the leases expire.
func TestTwoHubsShareDuties(t *testing.T) {
	dsn := catalogtest.NewMySQLDatabase(t)
	bin := filepath.Join(t.TempDir(), "sendense-hub")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}
	const ttl = 3 * time.Second
	type hub struct {
		cmd  *exec.Cmd
		logs *testenv.LogBuffer
		done chan error
	}
	start := func() *hub {
		h := &hub{logs: &testenv.LogBuffer{}, done: make(chan error, 1)}
		h.cmd = exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", filepath.Join(t.TempDir(), "data"),
			"--log-format", "json", "--db", dsn, "--lease-ttl", ttl.String())
		h.cmd.Stderr = h.logs
		h.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		if err := h.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { h.done <- h.cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = h.cmd.Process.Kill()
			<-exited
		})
		waitListening(t, h.logs, h.done)
		return h
	}
	a := start()
	b := start()
	pidOf := func(holder string) int {
		var host string
		var pid int
		var nanos int64
		if _, err := fmt.Sscanf(strings.ReplaceAll(holder, "/", " "), "%s %d %d", &host, &pid, &nanos); err != nil {
			t.Fatalf("holder %q: %v", holder, err)
		}
		return pid
	}
	cat, err := catalog.Open(t.Context(), catalog.Options{MySQLDSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	duties := []string{"gc", "reaper", "scheduler", "verify"}
	// holders waits until every duty is held, by one of pids, and returns who holds which.
	holders := func(within time.Duration, pids ...int) map[string]int {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			ls, err := cat.Leases(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, l := range ls {
				if l.ExpiresAt.After(time.Now()) {
					got[l.Name] = pidOf(l.Holder)
				}
			}
			ok := len(got) == len(duties)
			for _, d := range duties {
				p, held := got[d]
				ok = ok && held && (p == pids[0] || len(pids) > 1 && p == pids[1])
			}
			if ok {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("leases after %v: %v; want each of %v held by one of %v", within, got, duties, pids)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	before := holders(10*time.Second, a.cmd.Process.Pid, b.cmd.Process.Pid)
	// Each duty started once, on one hub, however many renewal periods pass.
	time.Sleep(2 * ttl)
	started := func(d string) int {
		return strings.Count(a.logs.String(), `"msg":"lease taken: running duty","duty":"`+d+`"`) +
			strings.Count(b.logs.String(), `"msg":"lease taken: running duty","duty":"`+d+`"`)
	}
	for _, d := range duties {
		if n := started(d); n != 1 {
			t.Fatalf("duty %s started %d times across two hubs, want 1\nA:\n%s\nB:\n%s", d, n, a.logs.String(), b.logs.String())
		}
	}
	if again := holders(time.Second, a.cmd.Process.Pid, b.cmd.Process.Pid); fmt.Sprint(again) != fmt.Sprint(before) {
		t.Fatalf("leases moved between live hubs: %v then %v", before, again)
	}
	// Kill the holder of the garbage collection without letting it release anything.
	victim, survivor := a, b
	if before["gc"] == b.cmd.Process.Pid {
		victim, survivor = b, a
	}
	killed := time.Now()
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-victim.done
	after := holders(ttl+5*time.Second, survivor.cmd.Process.Pid)
	t.Logf("leases before the kill %v, %v after it: %v", before, time.Since(killed).Round(100*time.Millisecond), after)
}
