package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/shared/api"
)

// These tests run the inventory rules against real catalogs of both dialects, end to end.

var quiet = slog.New(slog.DiscardHandler)

func seedAgent(t *testing.T, c *catalog.Catalog, id string) {
	t.Helper()
	ctx := t.Context()
	if err := c.CreateJoinToken(ctx, &catalog.JoinToken{ID: "jt-" + id, SecretHash: "h", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	a := &catalog.Agent{ID: id, Name: id, Status: api.AgentActive, CertSerial: "1", CertFingerprint: "f", CertNotAfter: time.Now().Add(time.Hour)}
	if err := c.RedeemJoinToken(ctx, "jt-"+id, "h", a); err != nil {
		t.Fatal(err)
	}
}

func pgtest1() *api.Inventory {
	return &api.Inventory{
		Source: api.Source{Name: "vc1", URL: "https://vc.example/sdk", InstanceUUID: "0ba3d9a4-0000-4000-8000-0000000000aa"},
		VMs: []api.VM{{
			InstanceUUID: "5012aaaa-0000-4000-8000-000000000001", BIOSUUID: "4212bbbb-0000-4000-8000-000000000001", Name: "pgtest1", PowerState: "poweredOn", NumCPU: 4, MemoryMB: 8192,
			Datacenter: "DC0", Host: "esx1", CBTEnabled: true,
			Disks: []api.Disk{
				{Key: 2000, DiskID: "disk-2000", Label: "Hard disk 1", CapacityBytes: 102_000_000_000, Datastore: "LocalDS_0", BackingFile: "[LocalDS_0] pgtest1/pgtest1.vmdk", Provisioning: "thin", Backupable: true},
				{Key: 2001, DiskID: "disk-2001", Label: "Hard disk 2", CapacityBytes: 5_000_000_000, Datastore: "LocalDS_0", BackingFile: "[LocalDS_0] pgtest1/pgtest1_1.vmdk", Provisioning: "thin", Backupable: true},
			},
		}},
	}
}

type snapshot struct {
	VMs   []catalog.VMWithSource
	Disks map[string][]catalog.VMDisk
}

func snap(t *testing.T, c *catalog.Catalog) snapshot {
	t.Helper()
	vms, _, err := c.VMs(t.Context(), catalog.VMFilter{})
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{VMs: vms, Disks: map[string][]catalog.VMDisk{}}
	for _, v := range vms {
		ds, err := c.VMDisks(t.Context(), v.ContextID)
		if err != nil {
			t.Fatal(err)
		}
		s.Disks[v.ContextID] = ds
	}
	return s
}

func apply(t *testing.T, s *inventory.Service, agent string, inv *api.Inventory) []api.InventoryEvent {
	t.Helper()
	res, err := s.Apply(t.Context(), agent, "192.0.2.1", inv)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res.Events
}

func kinds(evs []api.InventoryEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind+":"+e.DiskID)
	}
	return out
}

// setDiskJob queues and claims a backup of the VM: claiming points the VM's disks at the job.
func setDiskJob(t *testing.T, c *catalog.Catalog, ctxID, agentID string) string {
	t.Helper()
	ctx := t.Context()
	if err := c.CreateRepository(ctx, &catalog.Repository{ID: "repo-t", Name: "t", Kind: "local", Path: "/x", ChunkSize: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateJob(ctx, &catalog.BackupJob{ID: "job-t", VMContextID: ctxID, AgentID: agentID, RepositoryID: "repo-t", RequestedType: "auto", Status: api.JobQueued}); err != nil {
		t.Fatal(err)
	}
	if j, _, err := c.ClaimJob(ctx, agentID, nil); err != nil || j == nil {
		t.Fatalf("claim: %v %v", j, err)
	}
	return "job-t"
}

func TestInventorySeedScenario(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		clock := time.Date(2025, 10, 6, 20, 34, 1, 0, time.UTC)
		c.SetClock(func() time.Time { return clock })
		s := inventory.New(c, quiet, nil)
		seedAgent(t, c, "agent-1")
		evs := apply(t, s, "agent-1", pgtest1())
		if diff := cmp.Diff([]string{"vm_added:"}, kinds(evs)); diff != "" {
			t.Fatalf("events (-want +got):\n%s", diff)
		}
		vms, n, err := c.VMs(t.Context(), catalog.VMFilter{Name: "pgtest1"})
		if err != nil || n != 1 {
			t.Fatalf("vms: %d %v", n, err)
		}
		vm := vms[0]
		if vm.ContextID != "ctx-pgtest1-20251006-203401" || vm.CurrentStatus != api.VMDiscovered || vm.SourceName != "vc1" {
			t.Fatalf("vm %+v", vm)
		}
		disks, err := c.VMDisks(t.Context(), vm.ContextID)
		if err != nil {
			t.Fatal(err)
		}
		if len(disks) != 2 {
			t.Fatalf("%d disks", len(disks))
		}
		for i, want := range []struct {
			id  string
			cap int64
		}{{"disk-2000", 102_000_000_000}, {"disk-2001", 5_000_000_000}} {
			d := disks[i]
			if d.DiskID != want.id || d.CapacityBytes != want.cap || d.JobID != "" || d.Status != api.DiskPresent || d.VMContextID != vm.ContextID {
				t.Fatalf("disk %d: %+v", i, d)
			}
		}

		// The event is stored with the change, its agent as the actor.
		stored, n, err := c.Events(t.Context(), catalog.EventFilter{})
		if err != nil || n != 1 {
			t.Fatalf("stored events: %d %v", n, err)
		}
		want := catalog.Event{ID: stored[0].ID, Type: api.EventVMAdded, OccurredAt: clock, VMContextID: vm.ContextID, VMName: "pgtest1",
			AgentID: "agent-1", Actor: "agent-1", SourceAddress: "192.0.2.1", Outcome: api.OutcomeOK, Details: map[string]string{"source": "vc1"}}
		if diff := cmp.Diff(want, stored[0]); diff != "" {
			t.Fatalf("stored event (-want +got):\n%s", diff)
		}

		// The same inventory again, later: nothing changes, not even updated_at, and no event.
		before := snap(t, c)
		clock = clock.Add(time.Hour)
		if evs := apply(t, s, "agent-1", pgtest1()); len(evs) != 0 {
			t.Fatalf("repeated push produced events %v", kinds(evs))
		}
		if diff := cmp.Diff(before, snap(t, c)); diff != "" {
			t.Fatalf("repeated push changed rows (-before +after):\n%s", diff)
		}
		if _, n, _ := c.Events(t.Context(), catalog.EventFilter{}); n != 1 {
			t.Fatalf("%d events after a repeated push, want 1", n)
		}
	})
}

func TestInventoryChanges(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		c.SetClock(func() time.Time { return clock })
		s := inventory.New(c, quiet, nil)
		seedAgent(t, c, "agent-1")
		apply(t, s, "agent-1", pgtest1())
		vms, _, _ := c.VMs(t.Context(), catalog.VMFilter{})
		ctxID := vms[0].ContextID
		// A backup touched the disks: discovery must never clear that.
		jobID := setDiskJob(t, c, ctxID, "agent-1")

		clock = clock.Add(time.Minute)
		inv := pgtest1()
		inv.VMs[0].Name = "pgtest1-renamed"
		inv.VMs[0].Disks[0].CapacityBytes = 110_000_000_000 // grown
		inv.VMs[0].Disks = inv.VMs[0].Disks[:1]             // disk-2001 detached
		inv.VMs[0].CBTEnabled = false
		evs := apply(t, s, "agent-1", inv)
		want := []string{"vm_renamed:", "cbt_disabled:", "disk_resized:disk-2000", "disk_removed:disk-2001"}
		if diff := cmp.Diff(want, kinds(evs)); diff != "" {
			t.Fatalf("events (-want +got):\n%s", diff)
		}
		stored, _, err := c.Events(t.Context(), catalog.EventFilter{Type: api.EventDiskResized})
		if err != nil || len(stored) != 1 || stored[0].VMName != "pgtest1-renamed" ||
			!cmp.Equal(stored[0].Details, map[string]string{"source": "vc1", "disk_id": "disk-2000", "detail": "102000000000 → 110000000000 bytes"}) {
			t.Fatalf("stored resize event %+v %v", stored, err)
		}
		vm, err := c.VMByContextID(t.Context(), ctxID)
		if err != nil {
			t.Fatal(err)
		}
		if vm.VMName != "pgtest1-renamed" || vm.CBTEnabled || !vm.UpdatedAt.Equal(clock) {
			t.Fatalf("vm after change %+v", vm)
		}
		ds, _ := c.VMDisks(t.Context(), ctxID)
		if ds[0].CapacityBytes != 110_000_000_000 || ds[0].JobID != jobID || ds[1].Status != api.DiskGone || ds[1].GoneAt.IsZero() {
			t.Fatalf("disks after change %+v", ds)
		}

		// The VM disappears: marked gone with its disks, never deleted.
		clock = clock.Add(time.Minute)
		evs = apply(t, s, "agent-1", &api.Inventory{Source: inv.Source})
		if diff := cmp.Diff([]string{"vm_gone:"}, kinds(evs)); diff != "" {
			t.Fatalf("events (-want +got):\n%s", diff)
		}
		vm, _ = c.VMByContextID(t.Context(), ctxID)
		ds, _ = c.VMDisks(t.Context(), ctxID)
		if vm.CurrentStatus != api.VMGone || len(ds) != 2 || ds[0].Status != api.DiskGone || ds[0].JobID != jobID {
			t.Fatalf("after removal: vm %+v disks %+v", vm, ds)
		}
		// And comes back under its old context id, with both disks.
		evs = apply(t, s, "agent-1", pgtest1())
		want = []string{"vm_returned:", "vm_renamed:", "disk_returned:disk-2000", "disk_resized:disk-2000", "disk_returned:disk-2001"}
		if diff := cmp.Diff(want, kinds(evs)); diff != "" {
			t.Fatalf("events on return (-want +got):\n%s", diff)
		}
		vm, _ = c.VMByContextID(t.Context(), ctxID)
		ds, _ = c.VMDisks(t.Context(), ctxID)
		if vm.CurrentStatus != api.VMDiscovered || !vm.GoneAt.IsZero() || ds[0].Status != api.DiskPresent || ds[0].JobID != jobID {
			t.Fatalf("returned vm %+v disks %+v", vm, ds)
		}
	})
}

// A source belongs to the agent that registered it, whether the catalog knew its vCenter instance
// UUID or not (catalogs from before the UUID was recorded), until an operator moves it.
func TestSourceBelongsToItsAgent(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		s := inventory.New(c, quiet, nil)
		seedAgent(t, c, "agent-a")
		seedAgent(t, c, "agent-b")
		// A source as an older hub recorded it: no instance UUID.
		legacy := pgtest1()
		legacy.Source.InstanceUUID = ""
		err := c.ApplyInventory(t.Context(), "agent-a", legacy.Source, nil, func(st *catalog.InventoryState) (*catalog.InventoryChanges, error) {
			return &catalog.InventoryChanges{NewVMs: []catalog.VMContext{{ContextID: "ctx-pgtest1-1", SourceID: st.Source.ID, AgentID: "agent-a",
				InstanceUUID: legacy.VMs[0].InstanceUUID, VMName: "pgtest1", CurrentStatus: api.VMDiscovered, CreatedAt: st.Now, UpdatedAt: st.Now}}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		refused := func(agent string, inv *api.Inventory, want ...string) {
			t.Helper()
			before := snap(t, c)
			_, err := s.Apply(t.Context(), agent, "192.0.2.9", inv)
			if !errors.Is(err, catalog.ErrConflict) {
				t.Fatalf("push of %s: %v, want a conflict", agent, err)
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("conflict %q does not name %q", err, w)
				}
			}
			if diff := cmp.Diff(before, snap(t, c)); diff != "" {
				t.Fatalf("a refused push changed the catalog:\n%s", diff)
			}
		}
		// Another agent cannot take the legacy source's VM, even before its UUID is known.
		refused("agent-b", pgtest1(), "agent-a", pgtest1().VMs[0].InstanceUUID)
		// The owner's first push with a UUID claims it: the VM keeps its context.
		evs := apply(t, s, "agent-a", pgtest1())
		if slices.Contains(kinds(evs), api.EventVMAdded) {
			t.Fatalf("the owner's push re-added its vm: %v", kinds(evs))
		}
		srcs, err := c.Sources(t.Context())
		if err != nil || len(srcs) != 1 || srcs[0].InstanceUUID != pgtest1().Source.InstanceUUID || srcs[0].AgentID != "agent-a" {
			t.Fatalf("sources %+v, %v", srcs, err)
		}
		// Now the UUID itself is taken, also with no VMs in the push.
		empty := pgtest1()
		empty.VMs = nil
		refused("agent-b", empty, "agent-a", empty.Source.InstanceUUID)
		// An operator moves the source: the new agent reports on it, the old one no longer.
		if _, err := s.MoveSource(t.Context(), "vc1", "agent-b"); err != nil {
			t.Fatal(err)
		}
		if evs := apply(t, s, "agent-b", pgtest1()); len(evs) != 0 {
			t.Fatalf("the moved source's first push changed %v", kinds(evs))
		}
		vms, n, _ := c.VMs(t.Context(), catalog.VMFilter{AgentID: "agent-b"})
		if n != 1 || vms[0].ContextID != "ctx-pgtest1-1" {
			t.Fatalf("moved vms: %+v", vms)
		}
		refused("agent-a", pgtest1(), "agent-b")
		conflicts, total, err := c.Events(t.Context(), catalog.EventFilter{Type: api.EventSourceConflict})
		if err != nil || total != 3 {
			t.Fatalf("conflict events: %d %+v %v", total, conflicts, err)
		}
	})
}

func TestInventoryScale(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		s := inventory.New(c, quiet, nil)
		seedAgent(t, c, "agent-1")
		inv := &api.Inventory{Source: api.Source{Name: "vc1", InstanceUUID: "0ba3d9a4-0000-4000-8000-0000000000aa"}}
		for i := range 1000 {
			vm := api.VM{InstanceUUID: fmt.Sprintf("50120000-0000-4000-8000-%012d", i), Name: "vm-" + strconv.Itoa(i%997)} // some names repeat
			for k := range 3 {
				key := int32(2000 + k)
				vm.Disks = append(vm.Disks, api.Disk{Key: key, DiskID: api.DiskIDForKey(key), CapacityBytes: 1 << 30})
			}
			inv.VMs = append(inv.VMs, vm)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		if _, err := s.Apply(ctx, "agent-1", "192.0.2.1", inv); err != nil {
			t.Fatal(err)
		}
		_, n, _ := c.VMs(t.Context(), catalog.VMFilter{})
		if n != 1000 {
			t.Fatalf("%d vms recorded", n)
		}
		res, err := s.Apply(ctx, "agent-1", "192.0.2.1", inv)
		if err != nil || !res.Unchanged || len(res.Events) != 0 {
			t.Fatalf("repeat: %v %+v", err, res)
		}
	})
}
