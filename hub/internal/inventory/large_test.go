package inventory_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/shared/api"
)

func largeInventory(vms, disks int) *api.Inventory {
	inv := &api.Inventory{Source: api.Source{Name: "vc-big", URL: "https://vc-big.example/sdk", InstanceUUID: "0ba3d9a4-0000-4000-8000-00000000b160"}}
	for i := range vms {
		vm := api.VM{InstanceUUID: fmt.Sprintf("50120000-0000-4000-8000-%012d", i), Name: fmt.Sprintf("vm-%05d", i), PowerState: "poweredOn",
			NumCPU: 2, MemoryMB: 4096, Datacenter: "DC0", Host: "esx1", CBTEnabled: true}
		for k := range disks {
			key := int32(2000 + k)
			vm.Disks = append(vm.Disks, api.Disk{Key: key, DiskID: api.DiskIDForKey(key), CapacityBytes: 10 << 30, Datastore: "LocalDS_0",
				BackingFile: fmt.Sprintf("[LocalDS_0] vm-%05d/vm-%05d_%d.vmdk", i, i, k), Provisioning: "thin", Backupable: true})
		}
		inv.VMs = append(inv.VMs, vm)
	}
	return inv
}

// A large inventory is applied in short transactions: while it is being written on SQLite (one
// writer at a time), another agent's heartbeats and small pushes go through between them — they
// finish while the large push is still being applied, not behind it — and the large push still
// ends complete. The test counts what finished alongside rather than timing it: these machines
// are shared and noisy.
func TestLargeInventoryDoesNotBlockOtherAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 20,000 VMs")
	}
	c := catalogtest.Open(t, catalog.DriverSQLite)
	if _, err := c.MigrateUp(t.Context(), quiet); err != nil {
		t.Fatal(err)
	}
	s := inventory.New(c, quiet, nil)
	seedAgent(t, c, "agent-big")
	seedAgent(t, c, "agent-small")
	const vms, disks = 20_000, 2
	big := largeInventory(vms, disks)

	done := make(chan error, 1)
	var (
		res      api.InventoryResult
		finished atomic.Bool
	)
	go func() {
		var err error
		res, err = s.Apply(t.Context(), "agent-big", "192.0.2.1", big)
		finished.Store(true)
		done <- err
	}()
	// Let the large push get past validation and into the catalog, then heartbeat and push from
	// the other agent alongside it, timing each.
	time.Sleep(300 * time.Millisecond)
	var (
		mu        sync.Mutex
		slowest   time.Duration
		calls     int
		alongside int // calls that finished while the large push was still being applied
	)
	small := pgtest1()
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("large push: %v", err)
			}
			running = false
			continue
		default:
		}
		start := time.Now()
		if err := c.TouchAgent(t.Context(), "agent-small", "host-small", "1.0"); err != nil {
			t.Fatalf("heartbeat during a large push: %v", err)
		}
		if _, err := s.Apply(t.Context(), "agent-small", "192.0.2.2", small); err != nil {
			t.Fatalf("small push during a large push: %v", err)
		}
		mu.Lock()
		slowest, calls = max(slowest, time.Since(start)), calls+1
		if !finished.Load() {
			alongside++
		}
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("large push: %.1fs; %d heartbeats and small pushes, %d of them finished alongside it, slowest %s", res.ElapsedSecs, calls, alongside, slowest)
	// One transaction for the whole inventory would hold the only writer until the end: the first
	// heartbeat would finish after the large push, and none alongside it.
	if alongside < 3 {
		t.Fatalf("only %d of %d heartbeats and small pushes finished while the large push was applied: they waited behind it", alongside, calls)
	}
	if res.VMs != vms || res.Disks != vms*disks || len(res.Events) != vms {
		t.Fatalf("large push result: %d vms, %d disks, %d events", res.VMs, res.Disks, len(res.Events))
	}
	got, n, err := c.VMs(t.Context(), catalog.VMFilter{AgentID: "agent-big"})
	if err != nil || n != vms {
		t.Fatalf("%d vms recorded (%v), want %d", n, err, vms)
	}
	for _, i := range []int{0, vms / 2, vms - 1} {
		ds, err := c.VMDisks(t.Context(), got[i].ContextID)
		if err != nil || len(ds) != disks {
			t.Fatalf("vm %s: %d disks (%v)", got[i].VMName, len(ds), err)
		}
	}
	evs, total, err := c.Events(t.Context(), catalog.EventFilter{Type: api.EventVMAdded, Limit: 1})
	if err != nil || total != vms+1 { // and the small push's pgtest1
		t.Fatalf("%d vm_added events (%v), want %d", total, err, vms+1)
	}
	_ = evs
	// Pushing it again changes nothing; dropping half marks exactly that half gone.
	if r, err := s.Apply(t.Context(), "agent-big", "192.0.2.1", big); err != nil || !r.Unchanged {
		t.Fatalf("second push: %v, %d events", err, len(r.Events))
	}
	big.VMs = big.VMs[:vms/2]
	if r, err := s.Apply(t.Context(), "agent-big", "192.0.2.1", big); err != nil || len(r.Events) != vms/2 {
		t.Fatalf("half push: %v, %d events", err, len(r.Events))
	}
	if _, n, _ := c.VMs(t.Context(), catalog.VMFilter{AgentID: "agent-big", Status: api.VMGone}); n != vms/2 {
		t.Fatalf("%d vms gone, want %d", n, vms/2)
	}
}
