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
