package lab

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Changed Block Tracking for the simulator, which has none (see the vsphere-simulator notes).
//
// Per disk the lab keeps a change-tracking UUID, a sequence number and a journal of the extents
// written at each sequence. Taking a snapshot of a VM with CBT on bumps every tracked disk's
// sequence and stamps "<uuid>/<seq>" as the disk backing's ChangeId before the simulator copies
// the configuration into the snapshot. QueryChangedDiskAreas(snapshot at S, changeId "<uuid>/<n>")
// answers the union of the extents written at sequences n..S-1.
//
// The simulator dispatches a method to the object in the caller's session registry when there is
// one, and its own code asserts that the registry's VM is a *simulator.VirtualMachine, so the
// lab cannot replace the VM globally. Instead the method hook puts a wrapper of the VM (or of a
// snapshot, whose removal the lab repairs) into the calling session before the methods the lab
// extends.

// diskState is the change tracking of one disk.
type diskState struct {
	// cbtUnsupported is set at creation (DiskSpec.CBTUnsupported) and never changes.
	cbtUnsupported bool

	mu      sync.Mutex
	active  bool   // tracking since uuid was made
	uuid    string // the change-tracking UUID, vSphere style "52 xx ... xx-xx ... xx"
	seq     int64  // of the latest change ID issued (0: none yet); writes now belong to it
	journal []journalEntry
}

type journalEntry struct {
	seq int64
	ext Extent
}

// syncLocked follows the VM's changeTrackingEnabled: switching on starts a new UUID with an empty
// journal, so change IDs from before CBT was last turned off stay invalid.
func (d *diskState) syncLocked(on bool) {
	switch {
	case on && !d.active:
		d.active, d.uuid, d.seq, d.journal = true, newChangeUUID(), 0, nil
	case !on && d.active:
		d.active, d.uuid, d.seq, d.journal = false, "", 0, nil
	}
}

// resetLocked gives an active disk a new UUID, as turning CBT off and on does.
func (d *diskState) resetLocked() {
	if d.active {
		d.uuid, d.seq, d.journal = newChangeUUID(), 0, nil
	}
}

// recordLocked journals a write made now.
func (d *diskState) recordLocked(e Extent) {
	if d.active && e.Length > 0 {
		d.journal = append(d.journal, journalEntry{seq: d.seq, ext: e})
	}
}

// newChangeUUID makes a change-tracking UUID formatted as vSphere prints them.
func newChangeUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] = 0x52
	var sb strings.Builder
	for i, x := range b {
		switch {
		case i == 8:
			sb.WriteByte('-')
		case i > 0:
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%02x", x)
	}
	return sb.String()
}

// parseChangeID splits "<uuid>/<seq>".
func parseChangeID(id string) (string, int64, bool) {
	i := strings.LastIndexByte(id, '/')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || seq < 0 {
		return "", 0, false
	}
	return id[:i], seq, true
}

// trackable reports whether vSphere tracks changes of a disk in this mode for snapshot-based
// backup: independent disks are not part of snapshots.
func trackable(mode string) bool {
	return mode != ModeIndependentPersistent && mode != ModeIndependentNonpersistent
}

// handle is the simulator's method hook. It returns (nil, nil) so the simulator dispatches as
// usual, after putting the lab's wrapper of the receiver into the caller's session for the
// methods the lab extends or repairs.
func (l *Lab) handle(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	// The simulator's in-process session is one registry for every simulator in the process:
	// a wrapper put there would answer for another lab's object with the same ID. The lab's own
	// in-process calls need no wrapper.
	if ctx.Session == nil || ctx.Session.Key == l.inProcessSession {
		return nil, nil
	}
	if handled, fault := l.handleNFC(ctx, m); handled {
		return nil, fault
	}
	if fault := l.handleNAS(ctx, m); fault != nil {
		return nil, fault
	}
	l.handleGuest(m)
	switch m.This.Type {
	case "VirtualMachine", "VirtualMachineSnapshot":
	default:
		return nil, nil
	}
	obj := ctx.Map.Get(m.This)
	wrapped := ctx.Session.Registry.Get(m.This)
	stale := false
	switch w := wrapped.(type) {
	case *cbtVM:
		stale = w.lab != l || obj != mo.Reference(w.VirtualMachine)
	case *cbtSnapshot:
		stale = w.lab != l || obj != mo.Reference(w.VirtualMachineSnapshot)
	}
	if stale {
		// The object is gone (or replaced): drop the wrapper so the simulator answers for the
		// current object, or ManagedObjectNotFound.
		ctx.Session.Registry.Remove(ctx, m.This)
		wrapped = nil
	}
	switch o := obj.(type) {
	case *simulator.VirtualMachine:
		switch m.Name {
		case "QueryChangedDiskAreas", "CreateSnapshot_Task", "CreateSnapshotEx_Task", "ReconfigVM_Task", "RemoveAllSnapshots_Task":
		default:
			return nil, nil
		}
		if wrapped == nil {
			// Registry.Put touches the VM's status fields: hold the VM's lock.
			ctx.WithLock(o, func() { ctx.Session.Put(&cbtVM{VirtualMachine: o, lab: l}) })
		}
	case *simulator.VirtualMachineSnapshot:
		if m.Name == "RemoveSnapshot_Task" && wrapped == nil {
			ctx.WithLock(o, func() { ctx.Session.Put(&cbtSnapshot{VirtualMachineSnapshot: o, lab: l}) })
		}
	}
	return nil, nil
}

// cbtVM is a simulator VM with the lab's CBT. The simulator holds the VM's lock while it runs
// these methods (and hands the lock to the task a method starts).
type cbtVM struct {
	*simulator.VirtualMachine
	lab *Lab
}

// QueryChangedDiskAreas answers from the lab's journal, one window of the disk per call.
func (w *cbtVM) QueryChangedDiskAreas(ctx *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	body := new(methods.QueryChangedDiskAreasBody)
	info, fault := w.lab.queryChangedDiskAreas(ctx, w.VirtualMachine, req)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	return body
}

// CreateSnapshotTask stamps change IDs, or fails a quiesced snapshot of a QuiesceFails VM.
func (w *cbtVM) CreateSnapshotTask(ctx *simulator.Context, req *types.CreateSnapshot_Task) soap.HasFault {
	if req.Quiesce && w.lab.quiesceFails(w.Self) {
		return &methods.CreateSnapshot_TaskBody{Res: &types.CreateSnapshot_TaskResponse{Returnval: w.failQuiesce(ctx)}}
	}
	w.lab.stampChangeIDs(ctx, w.VirtualMachine)
	return w.VirtualMachine.CreateSnapshotTask(ctx, req)
}

// CreateSnapshotExTask is CreateSnapshotTask for the newer method.
func (w *cbtVM) CreateSnapshotExTask(ctx *simulator.Context, req *types.CreateSnapshotEx_Task) soap.HasFault {
	if req.QuiesceSpec != nil && w.lab.quiesceFails(w.Self) {
		return &methods.CreateSnapshotEx_TaskBody{Res: &types.CreateSnapshotEx_TaskResponse{Returnval: w.failQuiesce(ctx)}}
	}
	w.lab.stampChangeIDs(ctx, w.VirtualMachine)
	return w.VirtualMachine.CreateSnapshotExTask(ctx, req)
}

// ReconfigVMTask ends change tracking when CBT is switched off; the task that applies the change
// holds the VM's lock from here on, so no snapshot sees the state in between.
func (w *cbtVM) ReconfigVMTask(ctx *simulator.Context, req *types.ReconfigVM_Task) soap.HasFault {
	if on := req.Spec.ChangeTrackingEnabled; on != nil && !*on {
		w.lab.stopTracking(w.Self)
	}
	return w.VirtualMachine.ReconfigVMTask(ctx, req)
}

// RemoveAllSnapshotsTask removes the snapshots' files itself before the simulator runs; see
// detachSnapshotFiles.
func (w *cbtVM) RemoveAllSnapshotsTask(ctx *simulator.Context, req *types.RemoveAllSnapshots_Task) soap.HasFault {
	var refs []types.ManagedObjectReference
	for _, s := range w.LayoutEx.Snapshot {
		refs = append(refs, s.Key)
	}
	w.lab.detachSnapshotFiles(w.VirtualMachine, refs)
	return w.VirtualMachine.RemoveAllSnapshotsTask(ctx, req)
}

// cbtSnapshot is a simulator snapshot whose removal cannot delete disk files.
type cbtSnapshot struct {
	*simulator.VirtualMachineSnapshot
	lab *Lab
}

// RemoveSnapshotTask removes the snapshot's file itself, then lets the simulator remove the
// snapshot, holding the VM's lock throughout (the simulator's task takes it over).
func (s *cbtSnapshot) RemoveSnapshotTask(ctx *simulator.Context, req *types.RemoveSnapshot_Task) soap.HasFault {
	vm, ok := ctx.Map.Get(s.Vm).(*simulator.VirtualMachine)
	if !ok {
		return s.VirtualMachineSnapshot.RemoveSnapshotTask(ctx, req)
	}
	var res soap.HasFault
	ctx.WithLock(vm, func() {
		s.lab.detachSnapshotFiles(vm, []types.ManagedObjectReference{req.This})
		res = s.VirtualMachineSnapshot.RemoveSnapshotTask(ctx, req)
	})
	return res
}

// detachSnapshotFiles deletes the .vmsn files of snapshots and points their file-layout data
// key at no file. The simulator deletes a removed snapshot's files by layout key, but
// RefreshStorageInfo (run by every snapshot removal and disk change) renumbers the VM's file
// keys, so a snapshot that outlived another one would delete whatever file now has its old key:
// often a disk's flat file. The caller holds the VM's lock.
func (l *Lab) detachSnapshotFiles(vm *simulator.VirtualMachine, refs []types.ManagedObjectReference) {
	const noFile = -2 // layout keys count from 0; -1 is the "no memory file" key
	for i := range vm.LayoutEx.Snapshot {
		if slices.Contains(refs, vm.LayoutEx.Snapshot[i].Key) {
			vm.LayoutEx.Snapshot[i].DataKey = noFile
		}
	}
	for _, s := range vm.Layout.Snapshot {
		if !slices.Contains(refs, s.Key) {
			continue
		}
		for _, f := range s.SnapshotFile {
			if !strings.HasSuffix(f, ".vmsn") {
				continue
			}
			if p, err := l.hostPath(f, nil); err == nil {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					l.log.Warn("remove snapshot file", "file", f, "err", err)
				}
			}
		}
	}
}

// failQuiesce starts a task that fails like vSphere when the guest cannot be quiesced.
func (w *cbtVM) failQuiesce(ctx *simulator.Context) types.ManagedObjectReference {
	task := simulator.CreateTask(w.VirtualMachine, "createSnapshotTask", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		f := &types.ApplicationQuiesceFault{}
		f.FaultMessage = []types.LocalizableMessage{{
			Key:     "msg.snapshot.quiesce.vmerr",
			Message: "An error occurred while quiescing the virtual machine (the lab VM has quiesce_fails).",
		}}
		return nil, f
	})
	return task.Run(ctx)
}

func (l *Lab) stopTracking(ref types.ManagedObjectReference) {
	l.mu.Lock()
	var disks []*diskState
	if vs, ok := l.vms[ref]; ok {
		for _, d := range vs.disks {
			disks = append(disks, d)
		}
	}
	l.mu.Unlock()
	for _, d := range disks {
		d.mu.Lock()
		d.syncLocked(false)
		d.mu.Unlock()
	}
}

// stampChangeIDs gives every tracked disk of vm its next change ID (or none with CBT off). The
// caller holds the VM's lock.
func (l *Lab) stampChangeIDs(ctx *simulator.Context, vm *simulator.VirtualMachine) {
	on := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	changed := false
	for _, dev := range vm.Config.Hardware.Device {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		d := l.disk(vm.Self, disk.Key)
		id := ""
		d.mu.Lock()
		d.syncLocked(on)
		if on && trackable(b.DiskMode) && !d.cbtUnsupported {
			d.seq++
			id = d.uuid + "/" + strconv.FormatInt(d.seq, 10)
		}
		d.mu.Unlock()
		if b.ChangeId != id {
			b.ChangeId = id
			changed = true
		}
	}
	if changed {
		ctx.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
	}
}

// queryChangedDiskAreas answers QueryChangedDiskAreas; the caller holds the VM's lock.
func (l *Lab) queryChangedDiskAreas(ctx *simulator.Context, vm *simulator.VirtualMachine, req *types.QueryChangedDiskAreas) (types.DiskChangeInfo, *soap.Fault) {
	var none types.DiskChangeInfo
	if req.Snapshot == nil {
		return none, simulator.Fault("the lab answers QueryChangedDiskAreas only for a snapshot", &types.InvalidArgument{InvalidProperty: "snapshot"})
	}
	snap, ok := ctx.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return none, simulator.Fault("snapshot not found", &types.ManagedObjectNotFound{Obj: *req.Snapshot})
	}
	if snap.Vm != vm.Self {
		return none, simulator.Fault(fmt.Sprintf("snapshot %s belongs to another VM", req.Snapshot.Value), &types.InvalidArgument{InvalidProperty: "snapshot"})
	}
	var disk *types.VirtualDisk
	for _, dev := range snap.Config.Hardware.Device {
		if d, ok := dev.(*types.VirtualDisk); ok && d.Key == req.DeviceKey {
			disk = d
		}
	}
	if disk == nil {
		return none, simulator.Fault(fmt.Sprintf("snapshot has no disk with key %d", req.DeviceKey), &types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		return none, fileFault("", "change tracking is not supported for this disk backing")
	}
	capacity := capacityOf(disk)
	start := req.StartOffset
	if start < 0 || start > capacity {
		return none, simulator.Fault(fmt.Sprintf("start offset %d outside the disk (%d bytes)", start, capacity), &types.InvalidArgument{InvalidProperty: "startOffset"})
	}
	if on := vm.Config.ChangeTrackingEnabled; on == nil || !*on {
		return none, fileFault(b.FileName, "change tracking is not enabled on the virtual machine")
	}
	d := l.disk(vm.Self, disk.Key)
	if d.cbtUnsupported || !trackable(b.DiskMode) {
		return none, fileFault(b.FileName, "change tracking is not supported for this disk")
	}
	if b.ChangeId == "" {
		return none, fileFault(b.FileName, "the snapshot has no change tracking information for this disk")
	}
	snapUUID, snapSeq, ok := parseChangeID(b.ChangeId)
	if !ok {
		return none, fileFault(b.FileName, "the snapshot's change ID is malformed")
	}
	end := min(start+l.window, capacity)
	if start == capacity {
		return types.DiskChangeInfo{StartOffset: start}, nil
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	d.syncLocked(true)
	if d.uuid != snapUUID {
		return none, fileFault(b.FileName, "change tracking of this disk was reset after the snapshot was taken")
	}
	var areas []Extent
	if req.ChangeId == "*" {
		path, err := l.flatPath(b.FileName)
		if err != nil {
			return none, fileFault(b.FileName, err.Error())
		}
		areas, err = allocated(path, start, end)
		if err != nil {
			return none, fileFault(b.FileName, err.Error())
		}
	} else {
		uuid, seq, ok := parseChangeID(req.ChangeId)
		switch {
		case !ok:
			return none, simulator.Fault(fmt.Sprintf("malformed change ID %q", req.ChangeId), &types.InvalidArgument{InvalidProperty: "changeId"})
		case uuid != d.uuid:
			return none, fileFault(b.FileName, fmt.Sprintf("change ID %q is not valid for this disk: change tracking was reset since", req.ChangeId))
		case seq > snapSeq:
			return none, simulator.Fault(fmt.Sprintf("change ID %q is newer than the snapshot's %q", req.ChangeId, b.ChangeId), &types.InvalidArgument{InvalidProperty: "changeId"})
		}
		var es []Extent
		for _, j := range d.journal {
			if j.seq >= seq && j.seq < snapSeq {
				es = append(es, j.ext)
			}
		}
		areas = clipExtents(mergeExtents(es), start, end)
	}
	info := types.DiskChangeInfo{StartOffset: start, Length: end - start}
	for _, a := range areas {
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: a.Offset, Length: a.Length})
	}
	return info, nil
}

func fileFault(file, msg string) *soap.Fault {
	return simulator.Fault(msg, &types.FileFault{File: file})
}

// allocated lists the allocated areas of the flat file at path inside [start, end).
func allocated(path string, start, end int64) ([]Extent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open disk file: %w", err)
	}
	defer f.Close()
	return dataExtents(f, start, end)
}
