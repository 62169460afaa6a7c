package vsphere

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/api"
)

// Sentinel errors of an in-place restore's checks, returned before the VM is touched.
var (
	// ErrNotConfirmed: the VM's name is not the one the operator confirmed (it was renamed
	// since, or the instance UUID now names another VM).
	ErrNotConfirmed = errors.New("the vm's name is not the confirmed one")
	// ErrHasSnapshots: the VM has snapshots; its disks' flat files are then bases of delta
	// disks, and overwriting them would corrupt every snapshot.
	ErrHasSnapshots = errors.New("the vm has snapshots")
	// ErrDiskMismatch: a disk of the backup has no disk of the same device key, backing kind
	// and size in the VM now.
	ErrDiskMismatch = errors.New("the vm's disks differ from the backup's")
)

// InPlaceVM is the original VM an in-place restore overwrites, resolved and checked.
type InPlaceVM struct {
	c      *Client
	obj    *object.VirtualMachine
	dcPath string
	// Name is the VM's name; WasOn says it was powered on when resolved; CBT that changed block
	// tracking is on.
	Name  string
	WasOn bool
	CBT   bool
	// Disks are the VM's disks by the backup's disk id.
	Disks map[string]RestoredDisk
}

// MoRef returns the VM's managed object id.
func (v *InPlaceVM) MoRef() string { return v.obj.Reference().Value }

// DatacenterPath is the VM's datacenter inventory path, for DatastoreHTTP.
func (v *InPlaceVM) DatacenterPath() string { return v.dcPath }

// ResolveInPlace finds the VM a backup was taken of (job.VM.InstanceUUID) and checks, before
// changing anything, that its name is job.Confirm, that it has no snapshots and that every
// disk of the backup is a flat disk of the VM with the same device key and capacity. The
// error wraps ErrVMNotFound, ErrNotConfirmed, ErrHasSnapshots or ErrDiskMismatch.
func (c *Client) ResolveInPlace(ctx context.Context, job *api.RestoreJob) (*InPlaceVM, error) {
	vm, err := c.FindVM(ctx, job.VM.InstanceUUID)
	if err != nil {
		return nil, err
	}
	var m mo.VirtualMachine
	if err := vm.obj.Properties(ctx, vm.obj.Reference(), []string{"name", "config.hardware.device", "config.changeTrackingEnabled", "runtime.powerState", "snapshot"}, &m); err != nil {
		return nil, fmt.Errorf("read vm %s: %w", vm.MoRef(), err)
	}
	if m.Name != job.Confirm {
		return nil, fmt.Errorf("vm %s is named %q, the restore confirmed %q: %w", vm.MoRef(), m.Name, job.Confirm, ErrNotConfirmed)
	}
	if m.Snapshot != nil && len(m.Snapshot.RootSnapshotList) > 0 {
		var names []string
		walkSnapshots(m.Snapshot.RootSnapshotList, func(t types.VirtualMachineSnapshotTree) { names = append(names, t.Name) })
		return nil, fmt.Errorf("vm %s has %d snapshots (%s); remove them first: %w", m.Name, len(names), strings.Join(names, ", "), ErrHasSnapshots)
	}
	if m.Config == nil {
		return nil, fmt.Errorf("vm %s has no configuration", vm.MoRef())
	}
	dcPath, err := c.datacenterPathOf(ctx, vm.obj.Reference())
	if err != nil {
		return nil, err
	}
	v := &InPlaceVM{c: c, obj: vm.obj, dcPath: dcPath, Name: m.Name, WasOn: m.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn,
		CBT: isTrue(m.Config.ChangeTrackingEnabled), Disks: map[string]RestoredDisk{}}
	keys := map[string]int32{}
	for _, d := range job.VM.Disks {
		keys[d.DiskID] = d.Key
	}
	devices := object.VirtualDeviceList(m.Config.Hardware.Device)
	for _, d := range job.Disks {
		key, ok := keys[d.DiskID]
		if !ok {
			return nil, fmt.Errorf("disk %s of the backup is not in its vm configuration", d.DiskID)
		}
		vd, ok := devices.FindByKey(key).(*types.VirtualDisk)
		if !ok {
			return nil, fmt.Errorf("disk %s: vm %s has no disk with device key %d: %w", d.DiskID, m.Name, key, ErrDiskMismatch)
		}
		b, ok := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			return nil, fmt.Errorf("disk %s: a %T backing: %w", d.DiskID, vd.Backing, ErrDiskMismatch)
		}
		// The restore writes the descriptor's -flat.vmdk: a disk whose data lives elsewhere (a
		// linked clone's delta on its parent, a vSAN or vVols object) would get a new file
		// beside it and keep its old bytes.
		switch {
		case b.Parent != nil || b.DeltaDiskFormat != "":
			return nil, fmt.Errorf("disk %s: a delta disk on a parent (a linked clone?); restore it as a new vm: %w", d.DiskID, ErrDiskMismatch)
		case b.BackingObjectId != nil && *b.BackingObjectId != "":
			return nil, fmt.Errorf("disk %s: a vSAN or vVols object, not a flat file; restore it as a new vm: %w", d.DiskID, ErrDiskMismatch)
		}
		if vd.CapacityInBytes != d.CapacityBytes {
			return nil, fmt.Errorf("disk %s: %d bytes now, %d in the backup: %w", d.DiskID, vd.CapacityInBytes, d.CapacityBytes, ErrDiskMismatch)
		}
		var dp object.DatastorePath
		if !dp.FromString(b.FileName) {
			return nil, fmt.Errorf("disk %s: bad file name %q", d.DiskID, b.FileName)
		}
		v.Disks[d.DiskID] = RestoredDisk{Datastore: dp.Datastore, DataFile: strings.TrimSuffix(dp.Path, ".vmdk") + "-flat.vmdk", Capacity: vd.CapacityInBytes}
	}
	return v, nil
}

// PowerOff powers the VM off (hard: the disks are about to be replaced) unless it is off.
func (v *InPlaceVM) PowerOff(ctx context.Context) error {
	st, err := v.obj.PowerState(ctx)
	if err != nil {
		return fmt.Errorf("read power state of vm %s: %w", v.Name, err)
	}
	if st == types.VirtualMachinePowerStatePoweredOff {
		return nil
	}
	t, err := v.obj.PowerOff(ctx)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("power off vm %s: %w", v.Name, err)
	}
	return nil
}

// PowerOn starts the VM.
func (v *InPlaceVM) PowerOn(ctx context.Context) error {
	t, err := v.obj.PowerOn(ctx)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("power on vm %s: %w", v.Name, err)
	}
	return nil
}

// ResetCBT turns changed block tracking off and on again: the disks get a new change-tracking
// UUID, so no change ID issued before the restore is accepted and the next backup is a full
// one. Writes through the datastore file interface bypass CBT; without the reset an
// incremental would miss them. A VM without CBT is left without it.
func (v *InPlaceVM) ResetCBT(ctx context.Context) error {
	if !v.CBT {
		return nil
	}
	for _, on := range []bool{false, true} {
		t, err := v.obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(on)})
		if err == nil {
			_, err = t.WaitForResult(ctx, nil)
		}
		if err != nil {
			return fmt.Errorf("reset cbt of vm %s (enabled=%v): %w", v.Name, on, err)
		}
	}
	return nil
}
