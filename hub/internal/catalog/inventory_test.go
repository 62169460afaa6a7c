package catalog_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"
)

func seedAgent(t *testing.T, c *catalog.Catalog, id string) {
	t.Helper()
	a := &catalog.Agent{ID: id, Name: id, Status: api.AgentActive, CertSerial: "1", CertFingerprint: "f", CertNotAfter: time.Now()}
	if err := c.RedeemJoinTokenForTest(t.Context(), a); err != nil {
		t.Fatal(err)
	}
}

func pgtest1() *api.Inventory {
	return &api.Inventory{
		Source: api.Source{Name: "vc1", URL: "https://vc.example/sdk"},
		VMs: []api.VM{{
			InstanceUUID: "5012-aaaa", BIOSUUID: "4212-bbbb", Name: "pgtest1", PowerState: "poweredOn", NumCPU: 4, MemoryMB: 8192,
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

func apply(t *testing.T, c *catalog.Catalog, agent string, inv *api.Inventory) []api.InventoryEvent {
	t.Helper()
	evs, err := c.ApplyInventory(t.Context(), agent, inv)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return evs
}

func kinds(evs []api.InventoryEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind+":"+e.DiskID)
	}
	return out
}

func TestInventorySeedScenario(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		clock := time.Date(2025, 10, 6, 20, 34, 1, 0, time.UTC)
		c.SetClock(func() time.Time { return clock })
		seedAgent(t, c, "agent-1")
		evs := apply(t, c, "agent-1", pgtest1())
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
		if !catalog.DiskJobIDIsNullForTest(t, c, vm.ContextID, "disk-2000") {
			t.Fatal("vm_disks.job_id is not NULL after discovery")
		}

		// The same inventory again, later: nothing changes, not even updated_at.
		before := snap(t, c)
		clock = clock.Add(time.Hour)
		if evs := apply(t, c, "agent-1", pgtest1()); len(evs) != 0 {
			t.Fatalf("repeated push produced events %v", kinds(evs))
		}
		if diff := cmp.Diff(before, snap(t, c)); diff != "" {
			t.Fatalf("repeated push changed rows (-before +after):\n%s", diff)
		}
	})
}

func TestInventoryChanges(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		c.SetClock(func() time.Time { return clock })
		seedAgent(t, c, "agent-1")
		apply(t, c, "agent-1", pgtest1())
		vms, _, _ := c.VMs(t.Context(), catalog.VMFilter{})
		ctxID := vms[0].ContextID
		// A backup touched disk-2000: discovery must never clear that.
		jobID := catalog.SetDiskJobForTest(t, c, ctxID, "disk-2000")

		clock = clock.Add(time.Minute)
		inv := pgtest1()
		inv.VMs[0].Name = "pgtest1-renamed"
		inv.VMs[0].Disks[0].CapacityBytes = 110_000_000_000 // grown
		inv.VMs[0].Disks = inv.VMs[0].Disks[:1]             // disk-2001 detached
		inv.VMs[0].CBTEnabled = false
		evs := apply(t, c, "agent-1", inv)
		want := []string{"vm_renamed:", "cbt_disabled:", "disk_resized:disk-2000", "disk_removed:disk-2001"}
		if diff := cmp.Diff(want, kinds(evs)); diff != "" {
			t.Fatalf("events (-want +got):\n%s", diff)
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
		evs = apply(t, c, "agent-1", &api.Inventory{Source: inv.Source})
		if diff := cmp.Diff([]string{"vm_gone:"}, kinds(evs)); diff != "" {
			t.Fatalf("events (-want +got):\n%s", diff)
		}
		vm, _ = c.VMByContextID(t.Context(), ctxID)
		ds, _ = c.VMDisks(t.Context(), ctxID)
		if vm.CurrentStatus != api.VMGone || len(ds) != 2 || ds[0].Status != api.DiskGone || ds[0].JobID != jobID {
			t.Fatalf("after removal: vm %+v disks %+v", vm, ds)
		}
		// And comes back.
		evs = apply(t, c, "agent-1", pgtest1())
		if len(evs) == 0 || evs[0].Kind != api.EventVMReturned {
			t.Fatalf("events on return %v", kinds(evs))
		}
		vm, _ = c.VMByContextID(t.Context(), ctxID)
		if vm.CurrentStatus != api.VMDiscovered || !vm.GoneAt.IsZero() {
			t.Fatalf("returned vm %+v", vm)
		}
	})
}

func TestInventoryIsScopedToTheAgent(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		seedAgent(t, c, "agent-a")
		seedAgent(t, c, "agent-b")
		apply(t, c, "agent-a", pgtest1())
		before := snap(t, c)
		// Agent B reports the same source name with nothing in it: A's VMs are untouched.
		apply(t, c, "agent-b", &api.Inventory{Source: api.Source{Name: "vc1"}})
		if diff := cmp.Diff(before, snap(t, c)); diff != "" {
			t.Fatalf("agent b changed agent a's vms:\n%s", diff)
		}
		// Agent B reporting the same VM gets its own context: never A's row.
		apply(t, c, "agent-b", pgtest1())
		vms, n, _ := c.VMs(t.Context(), catalog.VMFilter{AgentID: "agent-a"})
		if n != 1 || vms[0].UpdatedAt != before.VMs[0].UpdatedAt {
			t.Fatalf("agent a's vm changed: %+v", vms)
		}
	})
}

func TestInventoryScale(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		seedAgent(t, c, "agent-1")
		inv := &api.Inventory{Source: api.Source{Name: "vc1"}}
		for i := range 1000 {
			vm := api.VM{InstanceUUID: "uuid-" + itoa(i), Name: "vm-" + itoa(i%997)} // some names repeat
			for k := range 3 {
				key := int32(2000 + k)
				vm.Disks = append(vm.Disks, api.Disk{Key: key, DiskID: api.DiskIDForKey(key), CapacityBytes: 1 << 30})
			}
			inv.VMs = append(inv.VMs, vm)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		if _, err := c.ApplyInventory(ctx, "agent-1", inv); err != nil {
			t.Fatal(err)
		}
		_, n, _ := c.VMs(t.Context(), catalog.VMFilter{})
		if n != 1000 {
			t.Fatalf("%d vms recorded", n)
		}
		evs, err := c.ApplyInventory(ctx, "agent-1", inv)
		if err != nil || len(evs) != 0 {
			t.Fatalf("repeat: %v %d events", err, len(evs))
		}
	})
}

func itoa(i int) string { return api.DiskIDForKey(int32(i))[5:] }
