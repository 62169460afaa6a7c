package instant

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

// A start that asks for a boot wait reports the guest's first boot signal and how long it
// took; a guest the lab keeps silent is reported with the reason after the timeout, and its
// start still succeeded (the session runs, so the hub's stop cleans it up).
func TestRunnerReportsTheGuestBoot(t *testing.T) {
	old := bootPoll
	bootPoll = 20 * time.Millisecond
	t.Cleanup(func() { bootPoll = old })
	export := t.TempDir()
	for _, vm := range []string{"web01", "dead01"} {
		if err := os.Mkdir(filepath.Join(export, vm), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(export, vm, vm+".vmx"), []byte("displayName = \""+vm+"\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := lab.Start(t.Context(), lab.Spec{}, lab.Options{Dir: t.TempDir(), NASDir: func(string, string) (string, error) { return export, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	l.SilenceGuest("dead01-test", true)
	c, err := vsphere.Connect(t.Context(), vsphere.Config{
		Name: "lab", URL: l.SDKURL(), Username: l.Username(), Password: l.Password(), CAFile: l.CACertFile(),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.WithoutCancel(t.Context())) })
	hub := &fakeHub{reports: map[string]api.InstantRecoveryReport{}}
	r := NewRunner(hub, func(context.Context, string) (Target, error) { return c, nil }, slog.New(slog.DiscardHandler))
	host := l.Hosts()[0]
	job := func(id, vm string, timeout int) *api.InstantRecoveryJob {
		return &api.InstantRecoveryJob{
			ID: id, Action: api.IRActionStart, Source: "lab", Host: host, NFSServer: "192.0.2.5", NFSPath: "/" + id,
			VMX: vm + "/" + vm + ".vmx", Name: vm + "-test", PowerOn: true,
			Boot: &api.InstantRecoveryBootWait{TimeoutSeconds: timeout},
		}
	}

	if err := r.Run(t.Context(), job("ir-boot-1", "web01", 30)); err != nil {
		t.Fatal(err)
	}
	rep := hub.reports["ir-boot-1"]
	if rep.Status != api.JobSucceeded || rep.VMRef == "" || rep.Boot == nil || rep.Boot.Signal != api.BootSignalTools ||
		rep.Boot.IP != lab.GuestIP || rep.Boot.Reason != "" || rep.Boot.Seconds <= 0 || rep.Boot.Seconds > 30 || rep.Boot.SignalAt.IsZero() {
		t.Fatalf("healthy guest: report %+v, boot %+v", rep, rep.Boot)
	}

	began := time.Now()
	if err := r.Run(t.Context(), job("ir-boot-2", "dead01", 1)); err != nil {
		t.Fatal(err)
	}
	rep = hub.reports["ir-boot-2"]
	if rep.Status != api.JobSucceeded || rep.VMRef == "" || rep.Boot == nil || rep.Boot.Signal != "" ||
		!strings.HasPrefix(rep.Boot.Reason, "guest did not report running within 1s") || rep.Boot.Seconds < 1 {
		t.Fatalf("silent guest: report %+v, boot %+v", rep, rep.Boot)
	}
	if d := time.Since(began); d < time.Second || d > 10*time.Second {
		t.Fatalf("silent guest: the wait took %s, want about the 1s timeout", d)
	}

	// A silent guest with a long timeout whose stop becomes pending: the wait ends at the next
	// ask with the reason, not after the timeout; a stop handed out meanwhile waits for the
	// start to end and report, then cleans up.
	oldStop := stopPoll
	stopPoll = 50 * time.Millisecond
	t.Cleanup(func() { stopPoll = oldStop })
	l.SilenceGuest("quiet01-test", true)
	if err := os.Mkdir(filepath.Join(export, "quiet01"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(export, "quiet01", "quiet01.vmx"), []byte("displayName = \"quiet01\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	started := make(chan error, 1)
	go func() { started <- r.Run(t.Context(), job("ir-boot-3", "quiet01", 300)) }()
	for {
		if _, ok := l.FindVMByName("quiet01-test"); ok {
			break
		}
		if time.Since(began) > time.Minute {
			t.Fatal("the start never registered its VM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopped := make(chan error, 1)
	go func() {
		stopped <- r.Run(t.Context(), &api.InstantRecoveryJob{ID: "ir-boot-3", Action: api.IRActionStop, Source: "lab", Host: host})
	}()
	time.Sleep(300 * time.Millisecond) // several asks: no stop pending yet, the wait goes on
	if _, order := hub.report("ir-boot-3"); len(order) != 2 {
		t.Fatalf("before the stop was pending: outcomes %v, want none of ir-boot-3", order)
	}
	if _, ok := l.FindVMByName("quiet01-test"); !ok {
		t.Fatal("the stop ran beside the start still waiting for its guest")
	}
	hub.stop("ir-boot-3")
	for _, ch := range []chan error{started, stopped} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Minute):
			t.Fatal("the start did not end its wait when the stop became pending")
		}
	}
	rep, order := hub.report("ir-boot-3")
	if len(order) != 4 || order[2] != "ir-boot-3 start: stopped while waiting for the guest" || order[3] != "ir-boot-3 stop" || rep.Status != api.JobSucceeded {
		t.Fatalf("outcomes %v, want the start's then the stop's", order)
	}
	if _, ok := l.FindVMByName("quiet01-test"); ok {
		t.Fatal("vm quiet01-test still registered after the stop")
	}
	t.Logf("a pending stop ended a 300s guest wait and cleaned up %.2fs after the start began", time.Since(began).Seconds())

	// The hub's stops clean both sessions up.
	for _, id := range []string{"ir-boot-1", "ir-boot-2"} {
		if err := r.Run(t.Context(), &api.InstantRecoveryJob{ID: id, Action: api.IRActionStop, Source: "lab", Host: host}); err != nil {
			t.Fatalf("stop %s: %v", id, err)
		}
	}
	if nas := l.NASDatastores(); len(nas) != 0 {
		t.Fatalf("datastores left after the stops: %+v", nas)
	}
	for _, n := range []string{"web01-test", "dead01-test"} {
		if _, ok := l.FindVMByName(n); ok {
			t.Fatalf("vm %s still registered after the stop", n)
		}
	}
}
