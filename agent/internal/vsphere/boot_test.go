package vsphere_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/testenv"
)

// TestWaitBootOnTheLab starts instant recoveries on the lab and waits for their guests: one
// that boots (tools running, then a TCP port answering on its address) and one whose guest
// the lab keeps silent, which gives no signal before the deadline.
func TestWaitBootOnTheLab(t *testing.T) {
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
	l.SilenceGuest("dead01-boot", true)
	c := connectLab(t, l)
	host := l.Hosts()[0]

	start := func(id, vm string) vsphere.InstantVM {
		t.Helper()
		got, err := c.StartInstant(t.Context(), vsphere.InstantSpec{
			ID: id, Host: host, NFSServer: "192.0.2.5", NFSPath: "/" + id,
			VMX: vm + "/" + vm + ".vmx", Name: vm + "-boot", PowerOn: true,
		})
		if err != nil {
			t.Fatalf("start %s: %v", vm, err)
		}
		return got
	}

	// A guest that boots: its tools report running.
	web := start("ir-boot-1", "web01")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	sig, err := c.WaitBoot(ctx, web.VMRef, 0, 20*time.Millisecond)
	if err != nil || sig.Signal != vsphere.SignalToolsRunning || sig.IP != lab.GuestIP || sig.At.IsZero() {
		t.Fatalf("wait for tools: %+v, %v", sig, err)
	}

	// The TCP check: nothing listens on the port yet, so no signal; then a listener answers.
	closed := testenv.NewClosedPort(t, lab.GuestIP)
	port := closed.Port
	short, cancelShort := context.WithTimeout(t.Context(), 2*time.Second)
	_, err = c.WaitBoot(short, web.VMRef, port, 20*time.Millisecond)
	cancelShort()
	if !errors.Is(err, vsphere.ErrNoBootSignal) || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("tcp port closed: %v, want ErrNoBootSignal naming the connection", err)
	}
	ln, err := closed.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sig, err = c.WaitBoot(ctx, web.VMRef, port, 20*time.Millisecond)
	if err != nil || sig.Signal != vsphere.SignalTCP {
		t.Fatalf("wait for tcp: %+v, %v", sig, err)
	}

	// A guest that never boots: powered on, its tools never run.
	dead := start("ir-boot-2", "dead01")
	if vm, ok := l.FindVMByName("dead01-boot"); !ok || vm.PowerState != "poweredOn" {
		t.Fatalf("silent vm: %+v %v", vm, ok)
	}
	short, cancelShort = context.WithTimeout(t.Context(), 2*time.Second)
	defer cancelShort()
	_, err = c.WaitBoot(short, dead.VMRef, 0, 20*time.Millisecond)
	if !errors.Is(err, vsphere.ErrNoBootSignal) || !strings.Contains(err.Error(), "tools guestToolsNotRunning") {
		t.Fatalf("silent guest: %v, want ErrNoBootSignal with the tools status", err)
	}

	// Both sessions stop cleanly; a stopped VM is gone for WaitBoot.
	for _, id := range []string{"ir-boot-1", "ir-boot-2"} {
		if err := c.StopInstant(t.Context(), id, host); err != nil {
			t.Fatalf("stop %s: %v", id, err)
		}
	}
	if nas := l.NASDatastores(); len(nas) != 0 {
		t.Fatalf("datastores left: %+v", nas)
	}
	if _, err := c.WaitBoot(t.Context(), web.VMRef, 0, 20*time.Millisecond); !errors.Is(err, vsphere.ErrTargetNotFound) {
		t.Fatalf("wait on an unregistered vm: %v, want ErrTargetNotFound", err)
	}
}
