package inventory

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// diff decides what one inventory push of agentID changes against what the catalog holds for its
// source (st), and which events that makes:
//   - a VM (by instance UUID) or disk (by disk id) not yet known is added, disks at once and never
//     touched by a job (job_id NULL);
//   - a known VM or disk whose reported attributes differ is rewritten; the job_id and change_id
//     of a disk belong to backups and are kept;
//   - a VM or disk missing from the push is marked gone, never deleted; reported again, it
//     returns under its old context id;
//   - nothing that did not change is written, so pushing the same inventory twice writes nothing.
func diff(st *catalog.InventoryState, agentID string, inv *api.Inventory) (*catalog.InventoryChanges, []api.InventoryEvent, error) {
	ch := &catalog.InventoryChanges{}
	var events []api.InventoryEvent
	byUUID := make(map[string]*catalog.VMContext, len(st.VMs))
	for i := range st.VMs {
		byUUID[st.VMs[i].InstanceUUID] = &st.VMs[i]
	}
	disks := map[string][]*catalog.VMDisk{} // per VM, in the catalog's order
	for i := range st.Disks {
		d := &st.Disks[i]
		disks[d.VMContextID] = append(disks[d.VMContextID], d)
	}
	ids := contextIDs{inUse: st.ContextIDInUse, taken: map[string]bool{}}
	seen := make(map[string]bool, len(inv.VMs))
	for i := range inv.VMs {
		rv := &inv.VMs[i]
		seen[rv.InstanceUUID] = true
		ex := byUUID[rv.InstanceUUID]
		if ex == nil {
			id, err := ids.next(rv.Name, st.Now)
			if err != nil {
				return nil, nil, err
			}
			vm := vmRow(rv, id, st.Source.ID, agentID)
			vm.CurrentStatus, vm.CreatedAt, vm.UpdatedAt = api.VMDiscovered, st.Now, st.Now
			ch.NewVMs = append(ch.NewVMs, vm)
			events = append(events, api.InventoryEvent{Kind: api.EventVMAdded, VMContextID: id, VMName: rv.Name})
			for j := range rv.Disks {
				ch.NewDisks = append(ch.NewDisks, newDisk(&rv.Disks[j], id, st.Now))
			}
			continue
		}
		if vm, evs, changed := updateVM(ex, rv, st.Now); changed {
			ch.VMs = append(ch.VMs, vm)
			events = append(events, evs...)
		}
		known := make(map[string]*catalog.VMDisk, len(disks[ex.ContextID]))
		for _, d := range disks[ex.ContextID] {
			known[d.DiskID] = d
		}
		reported := make(map[string]bool, len(rv.Disks))
		for j := range rv.Disks {
			rd := &rv.Disks[j]
			reported[rd.DiskID] = true
			ed := known[rd.DiskID]
			if ed == nil {
				ch.NewDisks = append(ch.NewDisks, newDisk(rd, ex.ContextID, st.Now))
				events = append(events, api.InventoryEvent{Kind: api.EventDiskAdded, VMContextID: ex.ContextID, VMName: rv.Name, DiskID: rd.DiskID})
				continue
			}
			if d, evs, changed := updateDisk(ed, rd, rv.Name, st.Now); changed {
				ch.Disks = append(ch.Disks, d)
				events = append(events, evs...)
			}
		}
		for _, ed := range disks[ex.ContextID] {
			if reported[ed.DiskID] || ed.Status == api.DiskGone {
				continue
			}
			ch.GoneDisks = append(ch.GoneDisks, ed.ID)
			events = append(events, api.InventoryEvent{Kind: api.EventDiskRemoved, VMContextID: ex.ContextID, VMName: rv.Name, DiskID: ed.DiskID})
		}
	}
	for i := range st.VMs {
		vm := &st.VMs[i]
		if seen[vm.InstanceUUID] || vm.CurrentStatus == api.VMGone {
			continue
		}
		ch.GoneVMs = append(ch.GoneVMs, vm.ContextID)
		events = append(events, api.InventoryEvent{Kind: api.EventVMGone, VMContextID: vm.ContextID, VMName: vm.VMName})
	}
	return ch, events, nil
}

func newDisk(d *api.Disk, contextID string, now time.Time) catalog.VMDisk {
	row := diskRow(d, contextID)
	row.Status, row.CreatedAt, row.UpdatedAt = api.DiskPresent, now, now
	return row
}

// updateVM returns the row an existing VM should have after the push, its events, and whether
// the row changed at all.
func updateVM(ex *catalog.VMContext, rv *api.VM, now time.Time) (catalog.VMContext, []api.InventoryEvent, bool) {
	want := vmRow(rv, ex.ContextID, ex.SourceID, ex.AgentID)
	want.CurrentStatus, want.GoneAt = ex.CurrentStatus, ex.GoneAt
	var events []api.InventoryEvent
	ev := func(kind, detail string) {
		events = append(events, api.InventoryEvent{Kind: kind, VMContextID: ex.ContextID, VMName: rv.Name, Detail: detail})
	}
	if ex.CurrentStatus == api.VMGone {
		want.CurrentStatus, want.GoneAt = api.VMDiscovered, time.Time{}
		ev(api.EventVMReturned, "")
	}
	if ex.VMName != rv.Name {
		ev(api.EventVMRenamed, fmt.Sprintf("%s → %s", ex.VMName, rv.Name))
	}
	if ex.CBTEnabled && !rv.CBTEnabled {
		ev(api.EventCBTDisabled, "the next backup of this VM is a full one")
	}
	cmp := *ex
	cmp.CreatedAt, cmp.UpdatedAt = time.Time{}, time.Time{}
	if cmp == want {
		return *ex, events, false
	}
	want.CreatedAt, want.UpdatedAt = ex.CreatedAt, now
	return want, events, true
}

// updateDisk returns the row an existing disk should have after the push, its events, and
// whether the row changed at all. JobID and ChangeID are carried over: they belong to backups.
func updateDisk(ed *catalog.VMDisk, rd *api.Disk, vmName string, now time.Time) (catalog.VMDisk, []api.InventoryEvent, bool) {
	want := diskRow(rd, ed.VMContextID)
	want.ID, want.Status, want.GoneAt, want.JobID, want.ChangeID = ed.ID, ed.Status, ed.GoneAt, ed.JobID, ed.ChangeID
	var events []api.InventoryEvent
	ev := func(kind, detail string) {
		events = append(events, api.InventoryEvent{Kind: kind, VMContextID: ed.VMContextID, VMName: vmName, DiskID: ed.DiskID, Detail: detail})
	}
	if ed.Status == api.DiskGone {
		want.Status, want.GoneAt = api.DiskPresent, time.Time{}
		ev(api.EventDiskReturn, "")
	}
	if ed.CapacityBytes != rd.CapacityBytes {
		ev(api.EventDiskResized, fmt.Sprintf("%d → %d bytes", ed.CapacityBytes, rd.CapacityBytes))
	}
	if ed.VMDKPath != rd.BackingFile || ed.Datastore != rd.Datastore {
		ev(api.EventDiskMoved, fmt.Sprintf("%s → %s", ed.VMDKPath, rd.BackingFile))
	}
	cmp := *ed
	cmp.CreatedAt, cmp.UpdatedAt = time.Time{}, time.Time{}
	if cmp == want {
		return *ed, events, false
	}
	want.CreatedAt, want.UpdatedAt = ed.CreatedAt, now
	return want, events, true
}

func vmRow(v *api.VM, contextID string, sourceID int64, agentID string) catalog.VMContext {
	return catalog.VMContext{
		ContextID: contextID, SourceID: sourceID, AgentID: agentID, InstanceUUID: v.InstanceUUID, BIOSUUID: v.BIOSUUID,
		VMName: v.Name, PowerState: v.PowerState, GuestOS: v.GuestOS, NumCPU: v.NumCPU, MemoryMB: v.MemoryMB,
		Datacenter: v.Datacenter, Cluster: v.Cluster, Host: v.Host, Folder: v.Folder, IsTemplate: v.Template, CBTEnabled: v.CBTEnabled,
	}
}

func diskRow(d *api.Disk, contextID string) catalog.VMDisk {
	return catalog.VMDisk{
		VMContextID: contextID, DiskID: d.DiskID, DeviceKey: d.Key, Label: d.Label, CapacityBytes: d.CapacityBytes,
		Datastore: d.Datastore, VMDKPath: d.BackingFile, BackingType: d.BackingType, Provisioning: d.Provisioning,
		ControllerType: d.ControllerType, ControllerBus: d.ControllerBus, UnitNumber: d.UnitNumber, DiskMode: d.DiskMode,
		Backupable: d.Backupable,
	}
}

// contextIDs hands out new context ids during one push.
type contextIDs struct {
	inUse func(id string) (bool, error)
	taken map[string]bool // handed out earlier in this push, not yet in the catalog
}

var unsafeIDChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// next names a new VM like the seed system: ctx-<vm name>-<YYYYMMDD-HHMMSS>, the name reduced to
// [A-Za-z0-9._-] and 100 characters, with a numeric suffix (-2, -3, ...) when two VMs of that
// name appear in the same second.
func (c *contextIDs) next(name string, now time.Time) (string, error) {
	clean := strings.Trim(unsafeIDChars.ReplaceAllString(name, "-"), "-")
	if len(clean) > 100 {
		clean = clean[:100]
	}
	if clean == "" {
		clean = "vm"
	}
	base := "ctx-" + clean + "-" + now.UTC().Format("20060102-150405")
	for n := 1; n < 10000; n++ {
		id := base
		if n > 1 {
			id = fmt.Sprintf("%s-%d", base, n)
		}
		if c.taken[id] {
			continue
		}
		used, err := c.inUse(id)
		if err != nil {
			return "", err
		}
		if !used {
			c.taken[id] = true
			return id, nil
		}
	}
	return "", fmt.Errorf("no free context id for vm %q", name)
}
