package vsphere

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/api"
)

// SnapshotDisk is one virtual disk as a snapshot captured it: read from the snapshot's own
// config.hardware.device, never from the VM's current configuration (which, on real ESXi, has
// moved to a delta file) and never guessed from file names.
type SnapshotDisk struct {
	// Key is the device key (2000, ...); DiskID is "disk-<key>".
	Key    int32
	DiskID string
	Label  string
	// CapacityBytes is the disk size at the snapshot.
	CapacityBytes int64
	// FileName is the datastore path of the disk descriptor, "[LocalDS_0] vm/vm.vmdk": what
	// VDDK (nbdkit vddk file=...) opens together with the snapshot moref.
	FileName string
	// VMMoRef and SnapshotMoRef name the VM and the snapshot that captured the disk (VDDK's
	// vm=moref= and snapshot=), so that a disk can be opened from this description alone.
	VMMoRef       string
	SnapshotMoRef string
	// Datastore is the datastore's name; DatacenterPath is the inventory path of its datacenter
	// without leading slash ("DC0", "F0/DC0", "ha-datacenter" on ESXi): DatastoreHTTP's dcPath.
	Datastore      string
	DatacenterPath string
	// DataFile is the datastore-relative path of the file that holds the disk's raw bytes,
	// "vm/vm-flat.vmdk", for a flatVer2 disk without parent; "" when the bytes are not in one
	// plain file (delta/sparse disks, RDMs): such disks can only be read through VDDK/NBD.
	DataFile string
	// ChangeID is the disk's CBT change ID at the snapshot ("" when CBT is off): the next
	// incremental backup asks for the areas changed since this ID.
	ChangeID string
	// BackingUUID is the backing's uuid; BackingType flatVer2, seSparse, sparseVer2, rdmVirtual,
	// rdmPhysical, ...; DiskMode persistent, independent_persistent, ...
	BackingUUID string
	BackingType string
	DiskMode    string
	// Backupable is false for disks the snapshot does not capture; the reason says why.
	Backupable          bool
	NotBackupableReason string
}

// Wire returns what the hub is told of the disk when a job reports its snapshot's disks.
func (d SnapshotDisk) Wire() api.Disk {
	return api.Disk{
		Key: d.Key, DiskID: d.DiskID, Label: d.Label, CapacityBytes: d.CapacityBytes, Datastore: d.Datastore,
		BackingFile: d.FileName, BackingType: d.BackingType, DiskMode: d.DiskMode,
		Backupable: d.Backupable, NotBackupableReason: d.NotBackupableReason, ChangeID: d.ChangeID,
	}
}

// Extent is a byte range of a disk.
type Extent struct {
	Offset int64
	Length int64
}

// Disks lists the snapshot's virtual disks, ordered by key.
func (s *Snapshot) Disks(ctx context.Context) ([]SnapshotDisk, error) {
	c := s.vm.c
	var snap mo.VirtualMachineSnapshot
	if err := c.collector().RetrieveOne(ctx, s.ref, []string{"config.hardware.device"}, &snap); err != nil {
		return nil, fmt.Errorf("read disks of snapshot %s: %w", s.ref.Value, err)
	}
	devices := object.VirtualDeviceList(snap.Config.Hardware.Device)

	dcPath, err := c.datacenterPathOf(ctx, s.vm.obj.Reference())
	if err != nil {
		return nil, fmt.Errorf("read disks of snapshot %s: %w", s.ref.Value, err)
	}
	var dsRefs []types.ManagedObjectReference
	var facts []diskFacts
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		f := describeDisk(d.(*types.VirtualDisk), devices)
		facts = append(facts, f)
		if f.datastoreRef != nil && !slices.Contains(dsRefs, *f.datastoreRef) {
			dsRefs = append(dsRefs, *f.datastoreRef)
		}
	}
	dsNames, err := c.datastoreNames(ctx, dsRefs)
	if err != nil {
		return nil, fmt.Errorf("read datastores of snapshot %s: %w", s.ref.Value, err)
	}

	out := make([]SnapshotDisk, 0, len(facts))
	for _, f := range facts {
		ds := datastoreFromPath(f.fileName)
		if f.datastoreRef != nil && dsNames[*f.datastoreRef] != "" {
			ds = dsNames[*f.datastoreRef]
		}
		dataFile, _ := f.flatFile()
		out = append(out, SnapshotDisk{
			Key:                 f.key,
			DiskID:              api.DiskIDForKey(f.key),
			Label:               f.label,
			CapacityBytes:       f.capacity,
			FileName:            f.fileName,
			VMMoRef:             s.vm.MoRef(),
			SnapshotMoRef:       s.ref.Value,
			Datastore:           ds,
			DatacenterPath:      dcPath,
			DataFile:            dataFile,
			ChangeID:            f.changeID,
			BackingUUID:         f.uuid,
			BackingType:         f.backingType,
			DiskMode:            f.diskMode,
			Backupable:          f.backupable,
			NotBackupableReason: f.reason,
		})
	}
	slices.SortFunc(out, func(a, b SnapshotDisk) int { return cmp.Compare(a.Key, b.Key) })
	return out, nil
}

// datastoreNames reads the names of datastores in one round trip (none for no refs).
func (c *Client) datastoreNames(ctx context.Context, refs []types.ManagedObjectReference) (map[types.ManagedObjectReference]string, error) {
	names := make(map[types.ManagedObjectReference]string, len(refs))
	if len(refs) == 0 {
		return names, nil
	}
	var dss []mo.Datastore
	if err := c.collector().Retrieve(ctx, refs, []string{"name"}, &dss); err != nil {
		return nil, err
	}
	for _, ds := range dss {
		names[ds.Self] = ds.Name
	}
	return names, nil
}

// datacenterPathOf returns the inventory path, without leading slash, of the datacenter that
// holds ref ("DC0", "F0/DC0"); one round trip.
func (c *Client) datacenterPathOf(ctx context.Context, ref types.ManagedObjectReference) (string, error) {
	ents, err := mo.Ancestors(ctx, c.vc, c.vc.ServiceContent.PropertyCollector, ref)
	if err != nil {
		return "", fmt.Errorf("read ancestors of %s: %w", ref.Value, err)
	}
	var parts []string
	for _, e := range ents {
		if e.Parent == nil {
			continue // root folder
		}
		parts = append(parts, e.Name)
		if e.Self.Type == "Datacenter" {
			return path.Join(parts...), nil
		}
	}
	return "", fmt.Errorf("%s is not inside a datacenter", ref.Value)
}

// ChangedAreas asks CBT which areas of the disk with device key diskKey changed between
// changeID and this snapshot; changeID "*" asks for every allocated area (a full backup that
// skips unallocated space). It loops QueryChangedDiskAreas over the windows vSphere answers
// until capacity (the disk size at the snapshot) is covered, and returns sorted, merged
// extents clipped to capacity.
//
// Errors: ErrCBTUnavailable when CBT cannot answer for the disk (CBT off, not supported, RDM
// without tracking), ErrChangeIDInvalid when changeID is not valid for the disk (CBT reset,
// another disk's ID); in both cases the caller falls back to reading more.
func (s *Snapshot) ChangedAreas(ctx context.Context, diskKey int32, capacity int64, changeID string) ([]Extent, error) {
	if changeID == "" {
		return nil, fmt.Errorf("query changed areas of disk %d: %w: empty change id", diskKey, ErrChangeIDInvalid)
	}
	if capacity <= 0 {
		return nil, fmt.Errorf("query changed areas of disk %d: capacity %d is not positive", diskKey, capacity)
	}
	c := s.vm.c
	ref := s.ref
	var out []Extent
	for off := int64(0); off < capacity; {
		res, err := methods.QueryChangedDiskAreas(ctx, c.vc, &types.QueryChangedDiskAreas{
			This:        s.vm.obj.Reference(),
			Snapshot:    &ref,
			DeviceKey:   diskKey,
			StartOffset: off,
			ChangeId:    changeID,
		})
		if err != nil {
			return nil, s.classifyCBTError(ctx, diskKey, changeID, off, err)
		}
		info := res.Returnval
		for _, a := range info.ChangedArea {
			out = append(out, Extent{Offset: a.Start, Length: a.Length})
		}
		next := info.StartOffset + info.Length
		if next <= off {
			return nil, fmt.Errorf("query changed areas of disk %d: server made no progress at offset %d (window %d+%d)",
				diskKey, off, info.StartOffset, info.Length)
		}
		off = next
	}
	return normalizeExtents(out, capacity), nil
}

// classifyCBTError maps a QueryChangedDiskAreas failure onto the sentinels. vSphere's faults
// are coarse (a stale change ID and a disk without tracking both come back as FileFault), so
// the snapshot's own configuration decides where the fault alone does not.
func (s *Snapshot) classifyCBTError(ctx context.Context, diskKey int32, changeID string, off int64, err error) error {
	wrap := func(sentinel error, why string) error {
		return fmt.Errorf("query changed areas of disk %d from change id %q at offset %d: %w: %s: %w",
			diskKey, changeID, off, sentinel, why, err)
	}
	if ctx.Err() != nil || !isServerFault(err) || isGone(err) {
		// Cancelled, a network error, or the snapshot/VM vanished: nothing CBT-specific.
		return fmt.Errorf("query changed areas of disk %d at offset %d: %w", diskKey, off, err)
	}
	if faultIn(err, func(f types.BaseMethodFault) bool {
		switch f.(type) {
		case types.BaseNotSupported, *types.MethodNotFound, *types.NotImplemented:
			return true
		}
		return false
	}) {
		return wrap(ErrCBTUnavailable, "not supported by the server")
	}

	var snap mo.VirtualMachineSnapshot
	if cerr := s.vm.c.collector().RetrieveOne(ctx, s.ref, []string{"config.changeTrackingEnabled", "config.hardware.device"}, &snap); cerr == nil {
		if !isTrue(snap.Config.ChangeTrackingEnabled) {
			return wrap(ErrCBTUnavailable, "changed block tracking is off in the snapshot")
		}
		devices := object.VirtualDeviceList(snap.Config.Hardware.Device)
		disk, ok := devices.FindByKey(diskKey).(*types.VirtualDisk)
		if !ok {
			return fmt.Errorf("query changed areas: snapshot %s has no disk with key %d: %w", s.ref.Value, diskKey, err)
		}
		f := describeDisk(disk, devices)
		switch {
		case f.backingType == BackingRDMPhysical:
			return wrap(ErrCBTUnavailable, "physical-compatibility RDM")
		case f.changeID == "":
			return wrap(ErrCBTUnavailable, "the disk has no change id in the snapshot")
		case changeID == "*":
			return wrap(ErrCBTUnavailable, "the allocated-areas query failed")
		}
		if want, _, ok := ParseChangeID(changeID); ok {
			if have, _, ok := ParseChangeID(f.changeID); ok && have != want {
				return wrap(ErrChangeIDInvalid, "change tracking was reset since (disk change id now "+f.changeID+")")
			}
		}
	} else {
		s.vm.c.log.Debug("read snapshot config to classify a cbt fault", "snapshot", s.ref.Value, "err", cerr)
	}
	if changeID == "*" {
		return wrap(ErrCBTUnavailable, "the allocated-areas query failed")
	}
	if faultIn(err, func(f types.BaseMethodFault) bool {
		switch f.(type) {
		case types.BaseFileFault, types.BaseInvalidArgument:
			return true
		}
		return false
	}) {
		return wrap(ErrChangeIDInvalid, "the server rejected the change id")
	}
	return fmt.Errorf("query changed areas of disk %d from change id %q at offset %d: %w", diskKey, changeID, off, err)
}

// faultIn reports whether any fault in err's tree satisfies match. Unlike fault.Is, it can
// match a whole family through the Base* interfaces (BaseFileFault covers FileNotFound, ...).
func faultIn(err error, match func(types.BaseMethodFault) bool) bool {
	found := false
	fault.In(err, func(f types.BaseMethodFault, _ string, _ []types.LocalizableMessage) bool {
		found = match(f)
		return found
	})
	return found
}

// isServerFault reports whether err carries a vSphere fault (as opposed to a network error).
func isServerFault(err error) bool {
	return faultIn(err, func(types.BaseMethodFault) bool { return true })
}

// normalizeExtents sorts extents, merges overlapping and adjacent ones, clips them to
// [0, capacity) and drops empty ones.
func normalizeExtents(in []Extent, capacity int64) []Extent {
	slices.SortFunc(in, func(a, b Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	out := make([]Extent, 0, len(in))
	for _, e := range in {
		if e.Offset < 0 {
			e.Length += e.Offset
			e.Offset = 0
		}
		if end := e.Offset + e.Length; end > capacity {
			e.Length = capacity - e.Offset
		}
		if e.Length <= 0 {
			continue
		}
		if n := len(out); n > 0 && e.Offset <= out[n-1].Offset+out[n-1].Length {
			if end := e.Offset + e.Length; end > out[n-1].Offset+out[n-1].Length {
				out[n-1].Length = end - out[n-1].Offset
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// SnapshotInfo describes one snapshot found by Snapshots.
type SnapshotInfo struct {
	VMUUID  string // instance UUID of the VM
	VMName  string
	VMMoRef string
	Name    string
	MoRef   string // e.g. "snapshot-17"
	Created time.Time
	// Description is the snapshot's description (a job snapshot's marks its agent).
	Description string
}

// Snapshots lists the snapshots whose name starts with namePrefix across every VM of the
// configured datacenters (one container view per datacenter), for a reaper that removes
// snapshots left behind by a crash. An empty prefix lists all snapshots.
func (c *Client) Snapshots(ctx context.Context, namePrefix string) ([]SnapshotInfo, error) {
	dcs, _, err := c.datacenters(ctx)
	if err != nil {
		return nil, err
	}
	var out []SnapshotInfo
	for _, dc := range dcs {
		objs, err := c.retrieveView(ctx, dc.ref, map[string][]string{
			"VirtualMachine": {"name", "config.instanceUuid", "snapshot"},
		})
		if err != nil {
			return nil, fmt.Errorf("list snapshots in datacenter %s: %w", dc.path, err)
		}
		for _, o := range objs {
			var name, uuid string
			var tree *types.VirtualMachineSnapshotInfo
			for _, p := range o.PropSet {
				switch p.Name {
				case "name":
					name, _ = p.Val.(string)
				case "config.instanceUuid":
					uuid, _ = p.Val.(string)
				case "snapshot":
					if t, ok := p.Val.(types.VirtualMachineSnapshotInfo); ok {
						tree = &t
					}
				}
			}
			if tree == nil {
				continue
			}
			walkSnapshots(tree.RootSnapshotList, func(n types.VirtualMachineSnapshotTree) {
				if strings.HasPrefix(n.Name, namePrefix) {
					out = append(out, SnapshotInfo{
						VMUUID: uuid, VMName: name, VMMoRef: o.Obj.Value,
						Name: n.Name, MoRef: n.Snapshot.Value, Created: n.CreateTime, Description: n.Description,
					})
				}
			})
		}
	}
	slices.SortFunc(out, func(a, b SnapshotInfo) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.MoRef, b.MoRef))
	})
	return out, nil
}

func walkSnapshots(nodes []types.VirtualMachineSnapshotTree, fn func(types.VirtualMachineSnapshotTree)) {
	for _, n := range nodes {
		fn(n)
		walkSnapshots(n.ChildSnapshotList, fn)
	}
}

// RemoveSnapshotByRef removes the snapshot snapMoRef of the VM with instance UUID vmUUID, after
// checking that the snapshot belongs to that VM. A snapshot that no longer exists is not an
// error; a VM that no longer exists is ErrVMNotFound.
func (c *Client) RemoveSnapshotByRef(ctx context.Context, vmUUID, snapMoRef string) error {
	vm, err := c.FindVM(ctx, vmUUID)
	if err != nil {
		return err
	}
	var props mo.VirtualMachine
	if err := vm.obj.Properties(ctx, vm.obj.Reference(), []string{"snapshot"}, &props); err != nil {
		if isGone(err) {
			return fmt.Errorf("%w: instance uuid %s (removed meanwhile)", ErrVMNotFound, vmUUID)
		}
		return fmt.Errorf("read snapshots of vm %s: %w", vm.MoRef(), err)
	}
	var found *types.VirtualMachineSnapshotTree
	if props.Snapshot != nil {
		walkSnapshots(props.Snapshot.RootSnapshotList, func(n types.VirtualMachineSnapshotTree) {
			if n.Snapshot.Value == snapMoRef {
				found = &n
			}
		})
	}
	if found == nil {
		c.log.Debug("snapshot already gone", "vm", vm.MoRef(), "snapshot", snapMoRef)
		return nil
	}
	snap := &Snapshot{vm: vm, ref: found.Snapshot, name: found.Name}
	return snap.Remove(ctx)
}
