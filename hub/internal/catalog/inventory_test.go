package catalog_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"
)

// These tests check that ApplyInventory loads and writes exactly what it is given; what an
// inventory push should change is decided, and tested, in the inventory package.

func seedAgent(t *testing.T, c *catalog.Catalog, id string) {
	t.Helper()
	a := &catalog.Agent{ID: id, Name: id, Status: api.AgentActive, CertSerial: "1", CertFingerprint: "f", CertNotAfter: time.Now()}
	if err := c.RedeemJoinTokenForTest(t.Context(), a); err != nil {
		t.Fatal(err)
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

// write applies fixed changes and returns the state ApplyInventory loaded for them.
func write(t *testing.T, c *catalog.Catalog, agent string, ch func(st *catalog.InventoryState) *catalog.InventoryChanges) *catalog.InventoryState {
	t.Helper()
	var seen *catalog.InventoryState
	err := c.ApplyInventory(t.Context(), agent, api.Source{Name: "vc1", URL: "https://vc.example/sdk"}, nil, func(st *catalog.InventoryState) (*catalog.InventoryChanges, error) {
		seen = st
		return ch(st), nil
	})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return seen
}

func newVM(st *catalog.InventoryState, id, uuid string) catalog.VMContext {
	return catalog.VMContext{ContextID: id, SourceID: st.Source.ID, AgentID: st.Source.AgentID, InstanceUUID: uuid, VMName: "pgtest1",
		CurrentStatus: api.VMDiscovered, CBTEnabled: true, CreatedAt: st.Now, UpdatedAt: st.Now}
}

func newDisk(st *catalog.InventoryState, ctxID, diskID string, key int32) catalog.VMDisk {
	return catalog.VMDisk{VMContextID: ctxID, DiskID: diskID, DeviceKey: key, CapacityBytes: 1 << 30, Status: api.DiskPresent, Backupable: true, CreatedAt: st.Now, UpdatedAt: st.Now}
}

const ctxID = "ctx-pgtest1-20251006-203401"

func TestApplyInventoryWritesWhatItIsGiven(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		clock := time.Date(2025, 10, 6, 20, 34, 1, 0, time.UTC)
		c.SetClock(func() time.Time { return clock })
		seedAgent(t, c, "agent-1")

		// First push: the source is created; new rows are inserted, disks with job_id NULL.
		st := write(t, c, "agent-1", func(st *catalog.InventoryState) *catalog.InventoryChanges {
			return &catalog.InventoryChanges{
				NewVMs:   []catalog.VMContext{newVM(st, ctxID, "uuid-1")},
				NewDisks: []catalog.VMDisk{newDisk(st, ctxID, "disk-2000", 2000), newDisk(st, ctxID, "disk-2001", 2001)},
			}
		})
		if st.Source.ID == 0 || st.Source.AgentID != "agent-1" || len(st.VMs) != 0 || !st.Now.Equal(clock) {
			t.Fatalf("first state %+v", st)
		}
		if !catalog.DiskJobIDIsNullForTest(t, c, ctxID, "disk-2000") {
			t.Fatal("vm_disks.job_id is not NULL after discovery")
		}
		jobID := catalog.SetDiskJobForTest(t, c, ctxID, "disk-2000")

		// The next push sees what the first wrote; writing nothing changes nothing.
		before := snap(t, c)
		clock = clock.Add(time.Hour)
		st = write(t, c, "agent-1", func(st *catalog.InventoryState) *catalog.InventoryChanges {
			// ContextIDInUse reads inside the transaction, while the decision runs.
			if used, err := st.ContextIDInUse(ctxID); err != nil || !used {
				t.Errorf("ContextIDInUse(%s) = %v, %v", ctxID, used, err)
			}
			if used, err := st.ContextIDInUse(ctxID + "-2"); err != nil || used {
				t.Errorf("ContextIDInUse(free) = %v, %v", used, err)
			}
			return &catalog.InventoryChanges{}
		})
		if len(st.VMs) != 1 || st.VMs[0].ContextID != ctxID || len(st.Disks) != 2 || st.Disks[0].DiskID != "disk-2000" || st.Disks[0].JobID != jobID {
			t.Fatalf("second state %+v", st)
		}
		if diff := cmp.Diff(before, snap(t, c)); diff != "" {
			t.Fatalf("empty changes wrote rows (-before +after):\n%s", diff)
		}

		// Updates are written whole, except a disk's job_id and change_id, which belong to
		// backups; gone rows are marked, never deleted.
		write(t, c, "agent-1", func(st *catalog.InventoryState) *catalog.InventoryChanges {
			vm := st.VMs[0]
			vm.VMName, vm.UpdatedAt = "renamed", st.Now
			d := st.Disks[0]
			d.CapacityBytes, d.JobID, d.ChangeID, d.UpdatedAt = 2<<30, "", "forged", st.Now
			return &catalog.InventoryChanges{VMs: []catalog.VMContext{vm}, Disks: []catalog.VMDisk{d}, GoneDisks: []int64{st.Disks[1].ID}}
		})
		vm, err := c.VMByContextID(t.Context(), ctxID)
		if err != nil || vm.VMName != "renamed" || !vm.UpdatedAt.Equal(clock) || !vm.CreatedAt.Equal(before.VMs[0].CreatedAt) {
			t.Fatalf("updated vm %+v %v", vm, err)
		}
		ds, _ := c.VMDisks(t.Context(), ctxID)
		if ds[0].CapacityBytes != 2<<30 || ds[0].JobID != jobID || ds[0].ChangeID != "" || ds[1].Status != api.DiskGone || !ds[1].GoneAt.Equal(clock) {
			t.Fatalf("updated disks %+v", ds)
		}

		clock = clock.Add(time.Minute)
		write(t, c, "agent-1", func(*catalog.InventoryState) *catalog.InventoryChanges {
			return &catalog.InventoryChanges{GoneVMs: []string{ctxID}}
		})
		vm, _ = c.VMByContextID(t.Context(), ctxID)
		ds, _ = c.VMDisks(t.Context(), ctxID)
		if vm.CurrentStatus != api.VMGone || !vm.GoneAt.Equal(clock) || len(ds) != 2 || ds[0].Status != api.DiskGone || ds[0].JobID != jobID {
			t.Fatalf("gone: vm %+v disks %+v", vm, ds)
		}
		if !ds[1].GoneAt.Equal(clock.Add(-time.Minute)) {
			t.Fatalf("a disk already gone got a new gone_at: %+v", ds[1])
		}
	})
}

func TestApplyInventoryLoadsOnlyTheAgentsSource(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		seedAgent(t, c, "agent-a")
		seedAgent(t, c, "agent-b")
		write(t, c, "agent-a", func(st *catalog.InventoryState) *catalog.InventoryChanges {
			return &catalog.InventoryChanges{NewVMs: []catalog.VMContext{newVM(st, ctxID, "uuid-1")}, NewDisks: []catalog.VMDisk{newDisk(st, ctxID, "disk-2000", 2000)}}
		})
		a := write(t, c, "agent-a", func(*catalog.InventoryState) *catalog.InventoryChanges { return &catalog.InventoryChanges{} })
		b := write(t, c, "agent-b", func(*catalog.InventoryState) *catalog.InventoryChanges { return &catalog.InventoryChanges{} })
		if len(a.VMs) != 1 || len(b.VMs) != 0 || len(b.Disks) != 0 || a.Source.ID == b.Source.ID {
			t.Fatalf("agent a sees %d vms in source %d, agent b %d vms in source %d", len(a.VMs), a.Source.ID, len(b.VMs), b.Source.ID)
		}
	})
}

func TestApplyInventoryWritesNothingWhenTheDecisionFails(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		seedAgent(t, c, "agent-1")
		boom := errors.New("no")
		err := c.ApplyInventory(t.Context(), "agent-1", api.Source{Name: "vc1"}, nil, func(*catalog.InventoryState) (*catalog.InventoryChanges, error) {
			return nil, boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("err %v", err)
		}
		// The source may be recorded (claimed for its agent), but not as inventoried.
		st := write(t, c, "agent-1", func(*catalog.InventoryState) *catalog.InventoryChanges { return &catalog.InventoryChanges{} })
		if !st.Source.LastInventoryAt.IsZero() || len(st.VMs) != 0 {
			t.Fatalf("the failed push was recorded: %+v, %d vms", st.Source, len(st.VMs))
		}
	})
}
