package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	govtask "github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	disksPerController = 15 // SCSI units 0-15 without 7, the controller's own
	scsiKeyBase        = 1000
	pciControllerKey   = 100
)

// createVM creates one VM of a plan with its disks, fills the disks, powers it on (unless it
// stays off) and registers it with the lab. The caller holds invMu or is Start.
func (l *Lab) createVM(ctx context.Context, p vmPlan) error {
	dir, err := l.vmDirectory(p.name)
	if err != nil {
		return err
	}
	spec := types.VirtualMachineConfigSpec{
		Name:                  p.name,
		GuestId:               string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest),
		NumCPUs:               2,
		MemoryMB:              4096,
		Uuid:                  newUUID(),
		InstanceUuid:          newUUID(),
		ChangeTrackingEnabled: types.NewBool(p.cbt),
		Files:                 &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s] %s/%s.vmx", datastoreName, dir, p.name)},
	}
	controllers := (len(p.disks) + disksPerController - 1) / disksPerController
	for i := range controllers {
		ctrl := &types.ParaVirtualSCSIController{}
		ctrl.Key = int32(scsiKeyBase + i)
		ctrl.ControllerKey = pciControllerKey
		ctrl.BusNumber = int32(i)
		ctrl.SharedBus = types.VirtualSCSISharingNoSharing
		ctrl.ScsiCtlrUnitNumber = 7
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd,
			Device:    ctrl,
		})
	}
	for i, d := range p.disks {
		unit := int32(i % disksPerController)
		if unit >= 7 {
			unit++
		}
		name := p.name + ".vmdk"
		if i > 0 {
			name = fmt.Sprintf("%s_%d.vmdk", p.name, i)
		}
		disk := &types.VirtualDisk{CapacityInBytes: d.capacity, CapacityInKB: d.capacity / 1024}
		disk.Key = d.key
		disk.ControllerKey = int32(scsiKeyBase + i/disksPerController)
		disk.UnitNumber = &unit
		disk.DeviceInfo = &types.Description{Label: fmt.Sprintf("Hard disk %d", i+1)}
		disk.Backing = &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: fmt.Sprintf("[%s] %s/%s", datastoreName, dir, name)},
			DiskMode:                     d.mode,
			ThinProvisioned:              types.NewBool(true),
			Uuid:                         newUUID(),
		}
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{
			Operation:     types.VirtualDeviceConfigSpecOperationAdd,
			FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
			Device:        disk,
		})
	}

	task, err := l.vmFolder.CreateVM(ctx, spec, l.pool, nil)
	res, err := l.waitTask(ctx, "create vm "+p.name, task, err)
	if err != nil {
		return err
	}
	ref := res.(types.ManagedObjectReference)
	vm := object.NewVirtualMachine(l.client, ref)
	created := false
	defer func() {
		if !created {
			_ = l.destroy(context.WithoutCancel(ctx), vm) // best effort: the error that got here matters
		}
	}()

	// The simulator renumbers clashing device keys; the lab promises the spec's keys.
	var info VMInfo
	if err := l.withVM(ref, func(v *simulator.VirtualMachine) { info = l.vmInfo(v) }); err != nil {
		return fmt.Errorf("create vm %s: %w", p.name, err)
	}
	if len(info.Disks) != len(p.disks) {
		return fmt.Errorf("create vm %s: simulator made %d disks, want %d", p.name, len(info.Disks), len(p.disks))
	}
	start := time.Now()
	for i, d := range p.disks {
		got := info.Disks[i]
		if got.Key != d.key || got.CapacityBytes != d.capacity || got.FlatPath == "" {
			return fmt.Errorf("create vm %s: disk %d is key %d, %d bytes at %q; want key %d, %d bytes",
				p.name, i, got.Key, got.CapacityBytes, got.FlatPath, d.key, d.capacity)
		}
		if err := l.fill(ctx, p, d, got.FlatPath); err != nil {
			return fmt.Errorf("vm %s disk %s: %w", p.name, got.DiskID, err)
		}
	}

	switch {
	case p.template:
		if err := vm.MarkAsTemplate(ctx); err != nil {
			return fmt.Errorf("mark vm %s as template: %w", p.name, err)
		}
	case !p.poweredOff:
		if err := l.wait(ctx, "power on vm "+p.name)(vm.PowerOn(ctx)); err != nil {
			return err
		}
	}

	vs := &vmState{quiesceFails: p.quiesceFails, disks: make(map[int32]*diskState, len(p.disks))}
	for _, d := range p.disks {
		vs.disks[d.key] = &diskState{cbtUnsupported: d.cbtUnsupported}
	}
	l.mu.Lock()
	l.vms[ref] = vs
	l.byName[p.name] = ref
	l.mu.Unlock()
	created = true
	l.log.Debug("lab vm created", "vm", p.name, "moref", ref.Value, "disks", len(p.disks), "cbt", p.cbt,
		"fill_duration_seconds", time.Since(start).Seconds())
	return nil
}

// fill gives a new disk its content: a copy of the clone source's disk with the same key, or the
// plan's fill.
func (l *Lab) fill(ctx context.Context, p vmPlan, d diskPlan, flat string) error {
	if !d.cloned {
		return fillDisk(ctx, flat, d)
	}
	src, err := l.VM(p.cloneOf)
	if err != nil {
		return fmt.Errorf("clone source: %w", err)
	}
	for _, sd := range src.Disks {
		if sd.Key != d.key {
			continue
		}
		in, err := os.Open(sd.FlatPath)
		if err != nil {
			return fmt.Errorf("open clone source disk: %w", err)
		}
		defer in.Close()
		out, err := os.OpenFile(flat, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open disk file: %w", err)
		}
		defer out.Close()
		if err := out.Truncate(d.capacity); err != nil {
			return fmt.Errorf("size disk file: %w", err)
		}
		if err := copyData(out, in, min(d.capacity, sd.CapacityBytes)); err != nil {
			return fmt.Errorf("clone %s disk %s: %w", p.cloneOf, sd.DiskID, err)
		}
		return out.Close()
	}
	return fmt.Errorf("%w: clone source %s has no disk with key %d", ErrDiskNotFound, p.cloneOf, d.key)
}

// vmDirectory picks a directory name for a new VM that no file on the datastore uses yet.
func (l *Lab) vmDirectory(name string) (string, error) {
	dir := name
	for i := 1; ; i++ {
		_, err := os.Stat(filepath.Join(l.dsDir, dir))
		if errors.Is(err, os.ErrNotExist) {
			return dir, nil
		}
		if err != nil {
			return "", fmt.Errorf("vm directory for %s: %w", name, err)
		}
		dir = fmt.Sprintf("%s_%d", name, i)
	}
}

// AddVM creates a VM while the lab runs. CloneOf may name any lab VM: the new VM gets copies of
// its current disks (with their current sizes).
func (l *Lab) AddVM(ctx context.Context, spec VMSpec) error {
	if l.closed.Load() {
		return ErrClosed
	}
	l.invMu.Lock()
	defer l.invMu.Unlock()
	existing := make(map[string]vmPlan)
	l.mu.Lock()
	for name := range l.byName {
		existing[name] = vmPlan{name: name}
	}
	l.mu.Unlock()
	if spec.CloneOf != "" {
		src, err := l.VM(spec.CloneOf)
		if err != nil {
			return fmt.Errorf("%w: clone_of: %w", ErrInvalidSpec, err)
		}
		p := vmPlan{name: src.Name}
		for _, d := range src.Disks {
			p.disks = append(p.disks, diskPlan{key: d.Key, capacity: d.CapacityBytes, mode: d.Mode})
		}
		existing[src.Name] = p
	}
	if _, ok := existing[spec.Name]; ok {
		return fmt.Errorf("%w: %q", ErrVMExists, spec.Name)
	}
	plans, err := Spec{VMs: []VMSpec{spec}}.plan(existing)
	if err != nil {
		return err
	}
	return l.createVM(ctx, plans[0])
}

// RemoveVM powers a VM off and destroys it with its files.
func (l *Lab) RemoveVM(name string) error {
	if l.closed.Load() {
		return ErrClosed
	}
	l.invMu.Lock()
	defer l.invMu.Unlock()
	ref, err := l.lookup(name)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := l.destroy(ctx, object.NewVirtualMachine(l.client, ref)); err != nil {
		return fmt.Errorf("remove vm %s: %w", name, err)
	}
	l.mu.Lock()
	delete(l.byName, name)
	delete(l.vms, ref)
	l.mu.Unlock()
	return nil
}

// PowerOff powers a lab VM off, as an operator (or a restore killed half-way) would; a VM that
// is off already stays off.
func (l *Lab) PowerOff(ctx context.Context, name string) error {
	if l.closed.Load() {
		return ErrClosed
	}
	ref, err := l.lookup(name)
	if err != nil {
		return err
	}
	vm := object.NewVirtualMachine(l.client, ref)
	state, err := vm.PowerState(ctx)
	if err != nil {
		return fmt.Errorf("power state of vm %s: %w", name, err)
	}
	if state != types.VirtualMachinePowerStatePoweredOn {
		return nil
	}
	return l.wait(ctx, "power off vm "+name)(vm.PowerOff(ctx))
}

// destroy powers vm off when it is on and destroys it.
func (l *Lab) destroy(ctx context.Context, vm *object.VirtualMachine) error {
	state, err := vm.PowerState(ctx)
	if err != nil {
		return fmt.Errorf("power state: %w", err)
	}
	if state == types.VirtualMachinePowerStatePoweredOn {
		if err := l.wait(ctx, "power off")(vm.PowerOff(ctx)); err != nil {
			return err
		}
	}
	return l.wait(ctx, "destroy")(vm.Destroy(ctx))
}

// RenameVM renames a VM (its files keep their names, as on vSphere).
func (l *Lab) RenameVM(oldName, newName string) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if err := checkVMName(newName); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSpec, err)
	}
	l.invMu.Lock()
	defer l.invMu.Unlock()
	ref, err := l.lookup(oldName)
	if err != nil {
		return err
	}
	if _, err := l.lookup(newName); err == nil {
		return fmt.Errorf("%w: %q", ErrVMExists, newName)
	}
	ctx := context.Background()
	vm := object.NewVirtualMachine(l.client, ref)
	if err := l.wait(ctx, "rename vm "+oldName)(vm.Rename(ctx, newName)); err != nil {
		return err
	}
	l.mu.Lock()
	delete(l.byName, oldName)
	l.byName[newName] = ref
	l.mu.Unlock()
	return nil
}

// RemoveDisk detaches a disk from a VM and deletes its files.
func (l *Lab) RemoveDisk(vmName, id string) error {
	if l.closed.Load() {
		return ErrClosed
	}
	l.invMu.Lock()
	defer l.invMu.Unlock()
	ref, key, disk, err := l.diskDevice(vmName, id)
	if err != nil {
		return err
	}
	ctx := context.Background()
	change := &types.VirtualDeviceConfigSpec{
		Operation:     types.VirtualDeviceConfigSpecOperationRemove,
		FileOperation: types.VirtualDeviceConfigSpecFileOperationDestroy,
		Device:        disk,
	}
	vm := object.NewVirtualMachine(l.client, ref)
	spec := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{change}}
	if err := l.wait(ctx, fmt.Sprintf("remove disk %s of %s", id, vmName))(vm.Reconfigure(ctx, spec)); err != nil {
		return err
	}
	l.mu.Lock()
	if vs, ok := l.vms[ref]; ok {
		delete(vs.disks, key)
	}
	l.mu.Unlock()
	return nil
}

// ResizeDisk grows a disk to newSize bytes (rounded up to a whole MiB): the VM's configuration
// (ReconfigVM), the descriptor and the flat file. Change tracking continues; the new area is a
// hole. Shrinking fails with ErrShrink.
func (l *Lab) ResizeDisk(vmName, id string, newSize int64) error {
	if l.closed.Load() {
		return ErrClosed
	}
	l.invMu.Lock()
	defer l.invMu.Unlock()
	ref, key, disk, err := l.diskDevice(vmName, id)
	if err != nil {
		return err
	}
	size := roundUpMiB(newSize)
	old := capacityOf(disk)
	switch {
	case newSize <= 0 || size < old:
		return fmt.Errorf("%w: disk %s of %s has %d bytes, asked for %d", ErrShrink, id, vmName, old, newSize)
	case size == old:
		return nil
	}
	ctx := context.Background()
	disk.CapacityInBytes, disk.CapacityInKB = size, size/1024
	vm := object.NewVirtualMachine(l.client, ref)
	spec := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
		Operation: types.VirtualDeviceConfigSpecOperationEdit,
		Device:    disk,
	}}}
	what := fmt.Sprintf("resize disk %s of %s", id, vmName)
	if err := l.wait(ctx, what)(vm.Reconfigure(ctx, spec)); err != nil {
		return err
	}
	backing := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	dm := object.NewVirtualDiskManager(l.client)
	if err := l.wait(ctx, what+": descriptor")(dm.ExtendVirtualDisk(ctx, backing.FileName, l.datacenter, size/1024, nil)); err != nil {
		return err
	}
	flat, err := l.flatPath(backing.FileName)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	d := l.disk(ref, key)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.Truncate(flat, size); err != nil {
		return fmt.Errorf("%s: grow flat file: %w", what, err)
	}
	return nil
}

// diskDevice returns a copy of a disk device of a lab VM, safe to send in a reconfiguration.
func (l *Lab) diskDevice(vmName, id string) (types.ManagedObjectReference, int32, *types.VirtualDisk, error) {
	ref, err := l.lookup(vmName)
	if err != nil {
		return ref, 0, nil, err
	}
	key, err := parseDiskID(id)
	if err != nil {
		return ref, 0, nil, err
	}
	var out *types.VirtualDisk
	err = l.withVM(ref, func(vm *simulator.VirtualMachine) {
		for _, dev := range vm.Config.Hardware.Device {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok || disk.Key != key {
				continue
			}
			b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				continue
			}
			backing := *b
			c := &types.VirtualDisk{CapacityInBytes: disk.CapacityInBytes, CapacityInKB: disk.CapacityInKB}
			c.Key = disk.Key
			c.ControllerKey = disk.ControllerKey
			if disk.UnitNumber != nil {
				unit := *disk.UnitNumber
				c.UnitNumber = &unit
			}
			if disk.DeviceInfo != nil {
				c.DeviceInfo = &types.Description{Label: disk.DeviceInfo.GetDescription().Label}
			}
			c.Backing = &backing
			out = c
		}
	})
	if err != nil {
		return ref, 0, nil, err
	}
	if out == nil {
		return ref, 0, nil, fmt.Errorf("%w: vm %s has no disk %s", ErrDiskNotFound, vmName, id)
	}
	return ref, key, out, nil
}

// waitTask waits for a task the lab started in-process and returns its result. It polls the
// simulator's task object directly: waiting through the property collector costs at least 20 ms
// a task (its update ticker), which would make a 1000-VM lab take a minute to build.
func (l *Lab) waitTask(ctx context.Context, what string, task *object.Task, err error) (types.AnyType, error) {
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	t, ok := l.model.Map().Get(task.Reference()).(*simulator.Task)
	if !ok {
		res, err := task.WaitForResult(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return res.Result, nil
	}
	lock := &simulator.Context{Context: ctx, Map: l.model.Map()}
	for delay := 20 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		var info types.TaskInfo
		lock.WithLock(t, func() { info = t.Info })
		switch info.State {
		case types.TaskInfoStateSuccess:
			return info.Result, nil
		case types.TaskInfoStateError:
			return nil, fmt.Errorf("%s: %w", what, govtask.Error{LocalizedMethodFault: info.Error})
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// wait adapts a task-starting call: l.wait(ctx, what)(vm.PowerOn(ctx)).
func (l *Lab) wait(ctx context.Context, what string) func(*object.Task, error) error {
	return func(task *object.Task, err error) error {
		_, err = l.waitTask(ctx, what, task, err)
		return err
	}
}

// newUUID is a random UUID: instance, BIOS and disk UUIDs (the simulator derives them from file
// paths, which repeat across labs).
func newUUID() string { return uuid.NewString() }
