package vsphere

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// VM is one virtual machine found by FindVM. Its methods are the backup-time operations.
type VM struct {
	c   *Client
	obj *object.VirtualMachine
	// InstanceUUID is config.instanceUuid, the VM's identity within the source.
	InstanceUUID string
	// Name is the VM's display name when it was found.
	Name string
}

// MoRef returns the VM's managed object id, e.g. "vm-42" (what VDDK calls vm=moref=...).
func (v *VM) MoRef() string { return v.obj.Reference().Value }

// FindVM finds a VM by instance UUID in the configured datacenters. It returns an error
// wrapping ErrVMNotFound when there is none.
func (c *Client) FindVM(ctx context.Context, instanceUUID string) (*VM, error) {
	if instanceUUID == "" {
		return nil, fmt.Errorf("find vm: %w: empty instance uuid", ErrVMNotFound)
	}
	notFound := fmt.Errorf("%w: instance uuid %s in source %s", ErrVMNotFound, instanceUUID, c.cfg.Name)
	// Instance UUIDs are unique within a vCenter: search everywhere, then check the datacenter
	// (the simulator ignores FindByUuid's datacenter argument anyway).
	ref, err := object.NewSearchIndex(c.vc).FindByUuid(ctx, nil, instanceUUID, true, types.NewBool(true))
	if err != nil {
		return nil, fmt.Errorf("find vm %s: %w", instanceUUID, err)
	}
	if ref == nil {
		return nil, notFound
	}
	obj, ok := ref.(*object.VirtualMachine)
	if !ok {
		return nil, fmt.Errorf("find vm %s: search returned a %s", instanceUUID, ref.Reference().Type)
	}
	ents, err := mo.Ancestors(ctx, c.vc, c.vc.ServiceContent.PropertyCollector, obj.Reference())
	if err != nil {
		if isGone(err) {
			return nil, notFound
		}
		return nil, fmt.Errorf("find vm %s: read ancestors: %w", instanceUUID, err)
	}
	var name, dcName string
	var parts []string
	for _, e := range ents {
		if e.Parent != nil && dcName == "" {
			parts = append(parts, e.Name)
		}
		if e.Self.Type == "Datacenter" {
			dcName = e.Name
		}
		if e.Self == obj.Reference() {
			name = e.Name
		}
	}
	if !c.wantDatacenter(dcName, "/"+path.Join(parts...)) {
		return nil, notFound
	}
	return &VM{c: c, obj: obj, InstanceUUID: instanceUUID, Name: name}, nil
}

// EnableCBT turns on changed block tracking (ReconfigVM changeTrackingEnabled=true), waits for
// the reconfiguration and reports true. It does nothing and reports false when CBT is already
// on. On a powered-on VM, vSphere starts tracking at the next stun/unstun cycle, which the next
// snapshot provides; the first backup after enabling is a full one anyway.
func (v *VM) EnableCBT(ctx context.Context) (bool, error) {
	var props mo.VirtualMachine
	if err := v.obj.Properties(ctx, v.obj.Reference(), []string{"config.changeTrackingEnabled"}, &props); err != nil {
		return false, fmt.Errorf("read cbt state of vm %s: %w", v.MoRef(), err)
	}
	if props.Config != nil && isTrue(props.Config.ChangeTrackingEnabled) {
		return false, nil
	}
	task, err := v.obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(true)})
	if err != nil {
		return false, fmt.Errorf("enable cbt on vm %s: %w", v.MoRef(), err)
	}
	if _, err := task.WaitForResult(ctx, nil); err != nil {
		return false, fmt.Errorf("enable cbt on vm %s: %w", v.MoRef(), err)
	}
	v.c.log.Info("enabled changed block tracking", "vm", v.MoRef(), "vm_name", v.Name)
	return true, nil
}

// Snapshot is one VM snapshot, taken by CreateSnapshot or found by the reaper.
type Snapshot struct {
	vm   *VM
	ref  types.ManagedObjectReference
	name string
}

// MoRef returns the snapshot's managed object id, e.g. "snapshot-17" (VDDK's snapshot=...).
func (s *Snapshot) MoRef() string { return s.ref.Value }

// Name returns the snapshot's name.
func (s *Snapshot) Name() string { return s.name }

// VM returns the VM the snapshot belongs to.
func (s *Snapshot) VM() *VM { return s.vm }

// CreateSnapshot takes a snapshot without memory and waits for it. When quiesce is true and
// quiescing fails, it returns an error wrapping ErrQuiesceFailed; the caller may retry without.
//
// If ctx ends while the task runs, the snapshot may still appear on the server: name it with
// a recognisable prefix so Snapshots + RemoveSnapshotByRef can reap it.
func (v *VM) CreateSnapshot(ctx context.Context, name, description string, quiesce bool) (*Snapshot, error) {
	task, err := v.obj.CreateSnapshot(ctx, name, description, false, quiesce)
	if err != nil {
		return nil, v.snapshotError(name, quiesce, err)
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return nil, v.snapshotError(name, quiesce, err)
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("create snapshot %q of vm %s: task returned %T, not a snapshot reference", name, v.MoRef(), info.Result)
	}
	v.c.log.Info("snapshot created", "vm", v.MoRef(), "vm_name", v.Name, "snapshot", ref.Value,
		"snapshot_name", name, "quiesced", quiesce)
	return &Snapshot{vm: v, ref: ref, name: name}, nil
}

// snapshotError wraps a snapshot creation error, recognising quiescing failures: the
// ApplicationQuiesceFault and ToolsUnavailable faults, and (older ESXi) any fault whose message
// says quiescing failed.
func (v *VM) snapshotError(name string, quiesce bool, err error) error {
	if quiesce && isQuiesceFault(err) {
		return fmt.Errorf("create quiesced snapshot %q of vm %s: %w: %w", name, v.MoRef(), ErrQuiesceFailed, err)
	}
	return fmt.Errorf("create snapshot %q of vm %s: %w", name, v.MoRef(), err)
}

func isQuiesceFault(err error) bool {
	if fault.Is(err, &types.ApplicationQuiesceFault{}) || fault.Is(err, &types.ToolsUnavailable{}) {
		return true
	}
	found := false
	fault.In(err, func(_ types.BaseMethodFault, msg string, msgs []types.LocalizableMessage) bool {
		text := msg
		for _, m := range msgs {
			text += " " + m.Key + " " + m.Message
		}
		found = strings.Contains(strings.ToLower(text), "quiesc")
		return found
	})
	return found || strings.Contains(strings.ToLower(err.Error()), "quiesc")
}

// Remove deletes the snapshot, consolidating its changes into the VM's disks, and waits.
// A snapshot (or VM) that is already gone is not an error, so Remove can be repeated.
func (s *Snapshot) Remove(ctx context.Context) error {
	res, err := methods.RemoveSnapshot_Task(ctx, s.vm.c.vc, &types.RemoveSnapshot_Task{
		This: s.ref, RemoveChildren: false, Consolidate: types.NewBool(true),
	})
	if err == nil {
		_, err = object.NewTask(s.vm.c.vc, res.Returnval).WaitForResult(ctx, nil)
	}
	if err != nil {
		if isGone(err) {
			s.vm.c.log.Debug("snapshot already gone", "vm", s.vm.MoRef(), "snapshot", s.ref.Value)
			return nil
		}
		return fmt.Errorf("remove snapshot %s (%q) of vm %s: %w", s.ref.Value, s.name, s.vm.MoRef(), err)
	}
	s.vm.c.log.Info("snapshot removed", "vm", s.vm.MoRef(), "snapshot", s.ref.Value, "snapshot_name", s.name)
	return nil
}

// isGone reports whether err says the object no longer exists.
func isGone(err error) bool {
	var nf *types.ManagedObjectNotFound
	_, ok := fault.As(err, &nf)
	return ok
}

// FindSnapshot returns the VM's snapshot with that name, or nil when there is none: a job
// resumed after an agent crash continues from the snapshot it took before. Two snapshots with
// the name is an error.
func (v *VM) FindSnapshot(ctx context.Context, name string) (*Snapshot, error) {
	var props mo.VirtualMachine
	if err := v.obj.Properties(ctx, v.obj.Reference(), []string{"snapshot"}, &props); err != nil {
		return nil, fmt.Errorf("read snapshots of vm %s: %w", v.MoRef(), err)
	}
	if props.Snapshot == nil {
		return nil, nil
	}
	var found []types.ManagedObjectReference
	walkSnapshots(props.Snapshot.RootSnapshotList, func(n types.VirtualMachineSnapshotTree) {
		if n.Name == name {
			found = append(found, n.Snapshot)
		}
	})
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return &Snapshot{vm: v, ref: found[0], name: name}, nil
	default:
		return nil, fmt.Errorf("vm %s has %d snapshots named %q", v.MoRef(), len(found), name)
	}
}
