package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
)

// The seed scenario, on both catalogs: discovery of a vCenter with VM pgtest1 (disks 2000 and
// 2001 of 102 GB and 5 GB) records the VM as discovered and both disks with job_id NULL at once,
// found by the VM's context id; changes are reflected and a repeated push changes nothing.
func TestDiscoverySeedScenario(t *testing.T) {
	for _, dialect := range hubtest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			l, err := lab.Start(t.Context(), lab.DemoSpec(), lab.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			hub := hubtest.Start(t, hubtest.CatalogArgs(t, dialect)...)
			dir := t.TempDir()
			state := filepath.Join(dir, "state")
			if _, err := agentCLI(t, io.Discard, "enroll", "--token", hub.JoinToken(), "--state-dir", state); err != nil {
				t.Fatal(err)
			}
			cfg := writeLabConfig(t, l, state)
			out, err := agentCLI(t, io.Discard, "discover", "--config", cfg)
			if err != nil {
				t.Fatalf("discover: %v\n%s", err, out)
			}
			if !strings.Contains(out, "pgtest1") || !strings.Contains(out, "disk-2000") || !strings.Contains(out, "102000230400") {
				t.Fatalf("discover printed:\n%s", out)
			}
			vm := showVM(t, hub, "pgtest1")
			if vm.CurrentStatus != "discovered" || !strings.HasPrefix(vm.ContextID, "ctx-pgtest1-") || len(vm.Disks) != 2 {
				t.Fatalf("vm %+v", vm)
			}
			byID := showVM(t, hub, vm.ContextID) // found by vm_context_id
			want := map[string]int64{"disk-2000": 102_000_230_400, "disk-2001": 5_000_658_944}
			for _, d := range byID.Disks {
				if d.VMContextID != vm.ContextID || d.CapacityBytes != want[d.DiskID] || d.JobID != nil || d.Status != "present" || !d.Backupable {
					t.Fatalf("disk %+v", d)
				}
			}

			// The same inventory again changes nothing.
			if _, err := agentCLI(t, io.Discard, "discover", "--config", cfg); err != nil {
				t.Fatal(err)
			}
			again := showVM(t, hub, vm.ContextID)
			if !again.UpdatedAt.Equal(vm.UpdatedAt) || !again.Disks[0].UpdatedAt.Equal(vm.Disks[0].UpdatedAt) {
				t.Fatalf("a repeated push changed updated_at: %v → %v", vm.UpdatedAt, again.UpdatedAt)
			}

			// Resize, detach a disk, rename, and add and remove VMs.
			if err := l.ResizeDisk("pgtest1", "disk-2000", 110_000_000_000); err != nil {
				t.Fatal(err)
			}
			if err := l.RemoveDisk("pgtest1", "disk-2001"); err != nil {
				t.Fatal(err)
			}
			if err := l.RenameVM("pgtest1", "pgtest1-renamed"); err != nil {
				t.Fatal(err)
			}
			if err := l.AddVM(t.Context(), lab.VMSpec{Name: "web1", CBT: true, Disks: []lab.DiskSpec{{Size: "1GiB"}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := agentCLI(t, io.Discard, "discover", "--config", cfg); err != nil {
				t.Fatal(err)
			}
			changed := showVM(t, hub, vm.ContextID)
			if changed.VMName != "pgtest1-renamed" || changed.Disks[0].CapacityBytes < 110_000_000_000 || changed.Disks[1].Status != "gone" {
				t.Fatalf("after changes: %+v", changed)
			}
			showVM(t, hub, "web1")
			if err := l.RemoveVM("web1"); err != nil {
				t.Fatal(err)
			}
			if _, err := agentCLI(t, io.Discard, "discover", "--config", cfg); err != nil {
				t.Fatal(err)
			}
			if gone := showVM(t, hub, "web1"); gone.CurrentStatus != "gone" {
				t.Fatalf("removed VM: %+v", gone)
			}
			var events api.EventList
			if err := json.Unmarshal([]byte(hub.CLI("events", "list", "--json")), &events); err != nil {
				t.Fatal(err)
			}
			for _, typ := range []string{api.EventVMRenamed, api.EventDiskResized, api.EventVMGone} {
				if !slices.ContainsFunc(events.Events, func(e api.Event) bool { return e.Type == typ }) {
					t.Fatalf("inventory change %s was not recorded as an event: %+v", typ, events.Events)
				}
			}
		})
	}
}

func showVM(t *testing.T, hub *hubtest.Hub, idOrName string) api.VMContext {
	t.Helper()
	var vm api.VMContext
	if err := json.Unmarshal([]byte(hub.CLI("vms", "show", idOrName, "--json")), &vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

func writeLabConfig(t *testing.T, l *lab.Lab, state string) string {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(l.Password()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("state_dir: %s\nsources:\n  - name: lab\n    url: %s\n    username: %s\n    password_file: %s\n    ca_file: %s\n",
		state, l.SDKURL(), l.Username(), pw, l.CACertFile())
	p := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
