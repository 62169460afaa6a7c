package inventory

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

var (
	created = time.Date(2025, 10, 6, 20, 34, 1, 0, time.UTC)
	pushAt  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

func reported() *api.Inventory {
	return &api.Inventory{
		Source: api.Source{Name: "vc1"},
		VMs: []api.VM{{
			InstanceUUID: "5012aaaa-0000-4000-8000-000000000001", Name: "pgtest1", PowerState: "poweredOn", CBTEnabled: true,
			Disks: []api.Disk{
				{Key: 2000, DiskID: "disk-2000", CapacityBytes: 100, Datastore: "ds1", BackingFile: "[ds1] pgtest1/pgtest1.vmdk", Backupable: true},
				{Key: 2001, DiskID: "disk-2001", CapacityBytes: 50, Datastore: "ds1", BackingFile: "[ds1] pgtest1/pgtest1_1.vmdk", Backupable: true},
			},
		}},
	}
}

// known is the catalog after reported() was pushed at created, and a backup touched disk-2000.
func known() *catalog.InventoryState {
	inv := reported()
	st := &catalog.InventoryState{Source: catalog.Source{ID: 7, AgentID: "agent-1", Name: "vc1"}, Now: pushAt}
	vm := vmRow(&inv.VMs[0], "ctx-pgtest1-20251006-203401", 7, "agent-1")
	vm.CurrentStatus, vm.CreatedAt, vm.UpdatedAt = api.VMDiscovered, created, created
	st.VMs = []catalog.VMContext{vm}
	for i := range inv.VMs[0].Disks {
		d := newDisk(&inv.VMs[0].Disks[i], vm.ContextID, created)
		d.ID = int64(10 + i)
		st.Disks = append(st.Disks, d)
	}
	st.Disks[0].JobID, st.Disks[0].ChangeID = "job-1", "52 aa/1"
	return st
}

func gone(st *catalog.InventoryState) {
	st.VMs[0].CurrentStatus, st.VMs[0].GoneAt = api.VMGone, created
	for i := range st.Disks {
		st.Disks[i].Status, st.Disks[i].GoneAt = api.DiskGone, created
	}
}

// inUse is a catalog holding the given context ids.
func inUse(ids ...string) func(string) (bool, error) {
	return func(id string) (bool, error) {
		for _, u := range ids {
			if u == id {
				return true, nil
			}
		}
		return false, nil
	}
}

// changes summarises what a push writes: "new vm ctx-…", "vm ctx-…", "new disk …", "disk …",
// "gone vm …", "gone disk <id>".
func changes(ch *catalog.InventoryChanges) []string {
	var out []string
	for _, v := range ch.NewVMs {
		out = append(out, "new vm "+v.ContextID)
	}
	for _, d := range ch.NewDisks {
		out = append(out, "new disk "+d.VMContextID+"/"+d.DiskID)
	}
	for _, v := range ch.VMs {
		out = append(out, "vm "+v.ContextID)
	}
	for _, d := range ch.Disks {
		out = append(out, "disk "+d.DiskID)
	}
	for _, id := range ch.GoneVMs {
		out = append(out, "gone vm "+id)
	}
	for _, id := range ch.GoneDisks {
		out = append(out, "gone disk "+string(rune('0'+id-10)))
	}
	return out
}

func TestDiff(t *testing.T) {
	const ctxID = "ctx-pgtest1-20251006-203401"
	tests := []struct {
		name    string
		state   func(*catalog.InventoryState)
		push    func(*api.Inventory)
		events  []string // kind:disk_id
		changes []string
		check   func(t *testing.T, ch *catalog.InventoryChanges, evs []api.InventoryEvent)
	}{
		{
			name:   "new VM: recorded with its disks at once, never touched by a job",
			state:  func(st *catalog.InventoryState) { st.VMs, st.Disks = nil, nil },
			events: []string{"vm_added:"},
			changes: []string{"new vm ctx-pgtest1-20260102-030405",
				"new disk ctx-pgtest1-20260102-030405/disk-2000", "new disk ctx-pgtest1-20260102-030405/disk-2001"},
			check: func(t *testing.T, ch *catalog.InventoryChanges, _ []api.InventoryEvent) {
				vm := ch.NewVMs[0]
				if vm.CurrentStatus != api.VMDiscovered || vm.SourceID != 7 || vm.AgentID != "agent-1" || !vm.CreatedAt.Equal(pushAt) {
					t.Errorf("new vm %+v", vm)
				}
				for _, d := range ch.NewDisks {
					if d.JobID != "" || d.ChangeID != "" || d.Status != api.DiskPresent || !d.CreatedAt.Equal(pushAt) {
						t.Errorf("new disk %+v", d)
					}
				}
			},
		},
		{
			name: "unchanged push writes nothing",
		},
		{
			name:    "power state change: rewritten, no event",
			push:    func(inv *api.Inventory) { inv.VMs[0].PowerState = "poweredOff" },
			changes: []string{"vm " + ctxID},
			check: func(t *testing.T, ch *catalog.InventoryChanges, _ []api.InventoryEvent) {
				if vm := ch.VMs[0]; vm.PowerState != "poweredOff" || !vm.UpdatedAt.Equal(pushAt) || !vm.CreatedAt.Equal(created) {
					t.Errorf("vm %+v", vm)
				}
			},
		},
		{
			name:    "renamed",
			push:    func(inv *api.Inventory) { inv.VMs[0].Name = "pgtest1-new" },
			events:  []string{"vm_renamed:"},
			changes: []string{"vm " + ctxID},
			check: func(t *testing.T, ch *catalog.InventoryChanges, evs []api.InventoryEvent) {
				if evs[0].Detail != "pgtest1 → pgtest1-new" || evs[0].VMName != "pgtest1-new" || ch.VMs[0].ContextID != ctxID {
					t.Errorf("event %+v, vm %+v", evs[0], ch.VMs[0])
				}
			},
		},
		{
			name:    "CBT turned off",
			push:    func(inv *api.Inventory) { inv.VMs[0].CBTEnabled = false },
			events:  []string{"cbt_disabled:"},
			changes: []string{"vm " + ctxID},
		},
		{
			name:    "CBT turned on: no event",
			state:   func(st *catalog.InventoryState) { st.VMs[0].CBTEnabled = false },
			changes: []string{"vm " + ctxID},
		},
		{
			name: "disk added",
			push: func(inv *api.Inventory) {
				inv.VMs[0].Disks = append(inv.VMs[0].Disks, api.Disk{Key: 2002, DiskID: "disk-2002", CapacityBytes: 10})
			},
			events:  []string{"disk_added:disk-2002"},
			changes: []string{"new disk " + ctxID + "/disk-2002"},
		},
		{
			name:    "disk removed: marked gone",
			push:    func(inv *api.Inventory) { inv.VMs[0].Disks = inv.VMs[0].Disks[:1] },
			events:  []string{"disk_removed:disk-2001"},
			changes: []string{"gone disk 1"},
		},
		{
			name:    "disk already gone stays gone without an event",
			state:   func(st *catalog.InventoryState) { st.Disks[1].Status, st.Disks[1].GoneAt = api.DiskGone, created },
			push:    func(inv *api.Inventory) { inv.VMs[0].Disks = inv.VMs[0].Disks[:1] },
			changes: nil,
		},
		{
			name:    "disk resized: job and change id kept",
			push:    func(inv *api.Inventory) { inv.VMs[0].Disks[0].CapacityBytes = 200 },
			events:  []string{"disk_resized:disk-2000"},
			changes: []string{"disk disk-2000"},
			check: func(t *testing.T, ch *catalog.InventoryChanges, evs []api.InventoryEvent) {
				d := ch.Disks[0]
				if d.ID != 10 || d.CapacityBytes != 200 || d.JobID != "job-1" || d.ChangeID != "52 aa/1" || !d.UpdatedAt.Equal(pushAt) {
					t.Errorf("disk %+v", d)
				}
				if evs[0].Detail != "100 → 200 bytes" {
					t.Errorf("detail %q", evs[0].Detail)
				}
			},
		},
		{
			name: "disk moved to another datastore",
			push: func(inv *api.Inventory) {
				inv.VMs[0].Disks[1].Datastore, inv.VMs[0].Disks[1].BackingFile = "ds2", "[ds2] p/p_1.vmdk"
			},
			events:  []string{"disk_moved:disk-2001"},
			changes: []string{"disk disk-2001"},
		},
		{
			name:    "disk returned",
			state:   func(st *catalog.InventoryState) { st.Disks[1].Status, st.Disks[1].GoneAt = api.DiskGone, created },
			events:  []string{"disk_returned:disk-2001"},
			changes: []string{"disk disk-2001"},
			check: func(t *testing.T, ch *catalog.InventoryChanges, _ []api.InventoryEvent) {
				if d := ch.Disks[0]; d.Status != api.DiskPresent || !d.GoneAt.IsZero() {
					t.Errorf("disk %+v", d)
				}
			},
		},
		{
			name:    "VM gone: marked with its disks, never deleted",
			push:    func(inv *api.Inventory) { inv.VMs = nil },
			events:  []string{"vm_gone:"},
			changes: []string{"gone vm " + ctxID},
		},
		{
			name:  "VM already gone stays gone without an event",
			state: gone,
			push:  func(inv *api.Inventory) { inv.VMs = nil },
		},
		{
			name:    "VM returned under its old context id, with its disks",
			state:   gone,
			events:  []string{"vm_returned:", "disk_returned:disk-2000", "disk_returned:disk-2001"},
			changes: []string{"vm " + ctxID, "disk disk-2000", "disk disk-2001"},
			check: func(t *testing.T, ch *catalog.InventoryChanges, _ []api.InventoryEvent) {
				if vm := ch.VMs[0]; vm.CurrentStatus != api.VMDiscovered || !vm.GoneAt.IsZero() {
					t.Errorf("vm %+v", vm)
				}
			},
		},
		{
			name:  "two new VMs of one name in one second get distinct context ids",
			state: func(st *catalog.InventoryState) { st.VMs, st.Disks = nil, nil },
			push: func(inv *api.Inventory) {
				inv.VMs = append(inv.VMs, api.VM{InstanceUUID: "5012bbbb-0000-4000-8000-000000000002", Name: "pgtest1"})
			},
			events: []string{"vm_added:", "vm_added:"},
			changes: []string{"new vm ctx-pgtest1-20260102-030405", "new vm ctx-pgtest1-20260102-030405-2",
				"new disk ctx-pgtest1-20260102-030405/disk-2000", "new disk ctx-pgtest1-20260102-030405/disk-2001"},
		},
		{
			name: "a context id in use elsewhere in the catalog is skipped",
			state: func(st *catalog.InventoryState) {
				st.VMs, st.Disks = nil, nil
				st.ContextIDInUse = inUse("ctx-pgtest1-20260102-030405", "ctx-pgtest1-20260102-030405-2")
			},
			push:    func(inv *api.Inventory) { inv.VMs[0].Disks = nil },
			events:  []string{"vm_added:"},
			changes: []string{"new vm ctx-pgtest1-20260102-030405-3"},
		},
		{
			name:  "names are reduced to safe characters",
			state: func(st *catalog.InventoryState) { st.VMs, st.Disks = nil, nil },
			push: func(inv *api.Inventory) {
				inv.VMs[0].Name, inv.VMs[0].Disks = "db / prod (EU)", nil
				inv.VMs = append(inv.VMs, api.VM{InstanceUUID: "5012cccc-0000-4000-8000-000000000001", Name: "ü"}, api.VM{InstanceUUID: "5012dddd-0000-4000-8000-000000000001", Name: strings.Repeat("a", 150)})
			},
			events: []string{"vm_added:", "vm_added:", "vm_added:"},
			changes: []string{"new vm ctx-db-prod-EU-20260102-030405", "new vm ctx-vm-20260102-030405",
				"new vm ctx-" + strings.Repeat("a", 100) + "-20260102-030405"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := known()
			st.ContextIDInUse = inUse(ctxID)
			if tt.state != nil {
				tt.state(st)
			}
			inv := reported()
			if tt.push != nil {
				tt.push(inv)
			}
			ch, evs, err := diff(st, "agent-1", inv)
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, e := range evs {
				kinds = append(kinds, e.Kind+":"+e.DiskID)
				if e.VMContextID == "" || e.VMName == "" {
					t.Errorf("event without its VM: %+v", e)
				}
			}
			if diff := cmp.Diff(tt.events, kinds); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.changes, changes(ch)); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
			if (len(tt.changes) == 0) != ch.Empty() {
				t.Errorf("Empty() = %v with changes %v", ch.Empty(), changes(ch))
			}
			if tt.check != nil && !t.Failed() {
				tt.check(t, ch, evs)
			}
		})
	}
}

func TestDiffFailsWhenTheCatalogCannotTell(t *testing.T) {
	st := known()
	st.VMs, st.Disks = nil, nil
	boom := errors.New("connection lost")
	st.ContextIDInUse = func(string) (bool, error) { return false, boom }
	if _, _, err := diff(st, "agent-1", reported()); !errors.Is(err, boom) {
		t.Fatalf("err %v, want %v", err, boom)
	}
}
