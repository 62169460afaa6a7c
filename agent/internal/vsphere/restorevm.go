package vsphere

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/api"
)

// Sentinel errors of a restore's checks: each is returned wrapped with the object it names,
// before anything is created.
var (
	// ErrTargetNotFound: a datacenter, folder, cluster, host, resource pool, datastore or
	// network named by the restore does not exist.
	ErrTargetNotFound = errors.New("restore target not found")
	// ErrNameTaken: a VM of the requested name exists in the datacenter.
	ErrNameTaken = errors.New("a VM of this name exists already")
	// ErrNoRoom: a datastore has less free space than the disks placed on it.
	ErrNoRoom = errors.New("not enough free space on the datastore")
	// ErrMaintenance: the target host is in maintenance mode (or every host of the target is).
	ErrMaintenance = errors.New("the target host is in maintenance mode")
	// ErrUnsupported: the configuration has a device this restore cannot create.
	ErrUnsupported = errors.New("unsupported device in the VM configuration")
)

// Placement is a restore target resolved to vSphere objects: everything a restore names,
// found and checked.
type Placement struct {
	c          *Client
	dc         *object.Datacenter
	dcPath     string
	folder     *object.Folder
	pool       *object.ResourcePool
	host       *object.HostSystem // nil: vSphere picks one in the pool's cluster
	datastores map[string]*object.Datastore
	networks   map[string]types.BaseVirtualDeviceBackingInfo // by the name the backup's NICs use
}

// DatacenterPath is the datacenter's inventory path, for DatastoreHTTP.
func (p *Placement) DatacenterPath() string { return p.dcPath }

// ResolveRestore finds every object a restore names and checks, before anything is created,
// that the VM name is free, that each datastore has room for the disks placed on it (their
// capacity: thin disks may need less, never more) and that the target host is not in
// maintenance mode. The error wraps ErrTargetNotFound, ErrNameTaken, ErrNoRoom or
// ErrMaintenance and names the object.
func (c *Client) ResolveRestore(ctx context.Context, job *api.RestoreJob) (*Placement, error) {
	t := job.Target
	f := find.NewFinder(c.vc, false)
	dc, err := f.Datacenter(ctx, t.Datacenter)
	if err != nil {
		return nil, notFound("datacenter", t.Datacenter, err)
	}
	f.SetDatacenter(dc)
	p := &Placement{c: c, dc: dc, dcPath: strings.TrimPrefix(dc.InventoryPath, "/"), datastores: map[string]*object.Datastore{},
		networks: map[string]types.BaseVirtualDeviceBackingInfo{}}
	if t.Folder == "" {
		folders, err := dc.Folders(ctx)
		if err != nil {
			return nil, fmt.Errorf("read folders of datacenter %s: %w", t.Datacenter, err)
		}
		p.folder = folders.VmFolder
	} else if p.folder, err = f.Folder(ctx, t.Folder); err != nil {
		return nil, notFound("folder", t.Folder, err)
	}

	var hosts []*object.HostSystem
	switch {
	case t.Host != "":
		h, err := f.HostSystem(ctx, t.Host)
		if err != nil {
			return nil, notFound("host", t.Host, err)
		}
		p.host, hosts = h, []*object.HostSystem{h}
		if p.pool, err = h.ResourcePool(ctx); err != nil {
			return nil, fmt.Errorf("resource pool of host %s: %w", t.Host, err)
		}
	case t.Cluster != "":
		cl, err := f.ClusterComputeResource(ctx, t.Cluster)
		if err != nil {
			return nil, notFound("cluster", t.Cluster, err)
		}
		if hosts, err = cl.Hosts(ctx); err != nil {
			return nil, fmt.Errorf("hosts of cluster %s: %w", t.Cluster, err)
		}
		if p.pool, err = cl.ResourcePool(ctx); err != nil {
			return nil, fmt.Errorf("resource pool of cluster %s: %w", t.Cluster, err)
		}
	default:
		crs, err := f.ComputeResourceList(ctx, "*")
		if err != nil || len(crs) == 0 {
			return nil, notFound("compute resource", "(any)", err)
		}
		if hosts, err = crs[0].Hosts(ctx); err != nil {
			return nil, fmt.Errorf("hosts of %s: %w", crs[0].Name(), err)
		}
		if p.pool, err = crs[0].ResourcePool(ctx); err != nil {
			return nil, fmt.Errorf("resource pool of %s: %w", crs[0].Name(), err)
		}
	}
	if t.ResourcePool != "" {
		if p.pool, err = f.ResourcePool(ctx, t.ResourcePool); err != nil {
			return nil, notFound("resource pool", t.ResourcePool, err)
		}
	}

	need := map[string]int64{t.Datastore: 0}
	for _, d := range job.Disks {
		need[d.Datastore] += d.CapacityBytes
	}
	if job.PowerOn {
		need[t.Datastore] += job.VM.MemoryMB << 20 // the swap file, unless memory is reserved
	}
	for name := range need {
		ds, err := f.Datastore(ctx, name)
		if err != nil {
			return nil, notFound("datastore", name, err)
		}
		p.datastores[name] = ds
	}
	for _, n := range job.VM.NICs {
		name := n.Network
		if m := job.NetworkMap[name]; m != "" {
			name = m
		}
		if _, done := p.networks[n.Network]; done {
			continue
		}
		if name == "" {
			return nil, fmt.Errorf("nic %d: %w: the backup names no network for it; map it in network_map", n.Key, ErrTargetNotFound)
		}
		ref, err := f.Network(ctx, name)
		if err != nil {
			return nil, notFound("network", name, err)
		}
		b, err := ref.EthernetCardBackingInfo(ctx)
		if err != nil {
			return nil, fmt.Errorf("backing of network %s: %w", name, err)
		}
		p.networks[n.Network] = b
	}
	if err := p.checkName(ctx, t.Name); err != nil {
		return nil, err
	}
	if err := p.checkRoom(ctx, need); err != nil {
		return nil, err
	}
	if err := p.checkHosts(ctx, hosts, t.Host != ""); err != nil {
		return nil, err
	}
	return p, nil
}

func notFound(kind, name string, err error) error {
	var nf *find.NotFoundError
	if err == nil || errors.As(err, &nf) || strings.Contains(err.Error(), "not found") {
		return fmt.Errorf("%s %q: %w", kind, name, ErrTargetNotFound)
	}
	return fmt.Errorf("find %s %q: %w", kind, name, err)
}

func (p *Placement) checkName(ctx context.Context, name string) error {
	v, err := view.NewManager(p.c.vc).CreateContainerView(ctx, p.dc.Reference(), []string{"VirtualMachine"}, true)
	if err != nil {
		return fmt.Errorf("list vms of the datacenter: %w", err)
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
	refs, err := v.Find(ctx, []string{"VirtualMachine"}, property.Match{"name": name})
	if err != nil {
		return fmt.Errorf("look up vm %q: %w", name, err)
	}
	if len(refs) > 0 {
		return fmt.Errorf("vm %q (%s): %w", name, refs[0].Value, ErrNameTaken)
	}
	return nil
}

func (p *Placement) checkRoom(ctx context.Context, need map[string]int64) error {
	for name, n := range need {
		var ds mo.Datastore
		if err := p.datastores[name].Properties(ctx, p.datastores[name].Reference(), []string{"summary"}, &ds); err != nil {
			return fmt.Errorf("read datastore %s: %w", name, err)
		}
		if !ds.Summary.Accessible {
			return fmt.Errorf("datastore %q is not accessible: %w", name, ErrTargetNotFound)
		}
		if ds.Summary.FreeSpace < n {
			return fmt.Errorf("datastore %q: %d bytes free, the restore needs %d: %w", name, ds.Summary.FreeSpace, n, ErrNoRoom)
		}
	}
	return nil
}

// checkHosts refuses a named host in maintenance mode, or a target whose every host is.
func (p *Placement) checkHosts(ctx context.Context, hosts []*object.HostSystem, named bool) error {
	if len(hosts) == 0 {
		return nil // a pool without hosts listed: vSphere decides
	}
	var inMaint []string
	for _, h := range hosts {
		var hs mo.HostSystem
		if err := h.Properties(ctx, h.Reference(), []string{"runtime.inMaintenanceMode", "name"}, &hs); err != nil {
			return fmt.Errorf("read host %s: %w", h.Reference().Value, err)
		}
		if hs.Runtime.InMaintenanceMode {
			inMaint = append(inMaint, hs.Name)
		}
	}
	if (named && len(inMaint) > 0) || len(inMaint) == len(hosts) {
		return fmt.Errorf("host %s: %w", strings.Join(inMaint, ", "), ErrMaintenance)
	}
	return nil
}

// RestoredVM is a VM a restore created.
type RestoredVM struct {
	p   *Placement
	obj *object.VirtualMachine
	// Disks are the new VM's disks by the backup's disk id.
	Disks map[string]RestoredDisk
}

// RestoredDisk is where one restored disk's bytes go.
type RestoredDisk struct {
	Datastore string
	DataFile  string // datastore-relative path of the flat file ("vm/vm-flat.vmdk")
	Capacity  int64

	descriptor string // datastore-relative path of the descriptor ("vm/vm.vmdk")
	index      int    // among the VM's disks, in device order
	// controllerClass is the vSphere type of the disk's controller ("ParaVirtualSCSIController");
	// bus is the controller's bus number, unit the disk's unit on it.
	controllerClass string
	bus, unit       int32
}

// MoRef returns the new VM's managed object id.
func (v *RestoredVM) MoRef() string { return v.obj.Reference().Value }

// readDisks maps the new VM's disks to the backup's by controller and unit.
func (v *RestoredVM) readDisks(ctx context.Context, job *api.RestoreJob) error {
	var m mo.VirtualMachine
	if err := v.obj.Properties(ctx, v.obj.Reference(), []string{"config.hardware.device"}, &m); err != nil {
		return fmt.Errorf("read disks of the new vm: %w", err)
	}
	devices := object.VirtualDeviceList(m.Config.Hardware.Device)
	type slot struct {
		bus  string
		unit int32
	}
	created := map[slot]*types.VirtualDisk{}
	order := map[*types.VirtualDisk]int{}
	ctrls := map[*types.VirtualDisk]types.BaseVirtualController{}
	for i, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		vd := d.(*types.VirtualDisk)
		order[vd] = i
		ctrl, ok := devices.FindByKey(vd.ControllerKey).(types.BaseVirtualController)
		if !ok || vd.UnitNumber == nil {
			continue
		}
		ctrls[vd] = ctrl
		name := fmt.Sprintf("%s-%d", controllerType(ctrl.(types.BaseVirtualDevice)), ctrl.GetVirtualController().BusNumber)
		created[slot{name, *vd.UnitNumber}] = vd
	}
	want := map[string]api.VMConfigDisk{}
	for _, d := range job.VM.Disks {
		want[d.DiskID] = d
	}
	for _, d := range job.Disks {
		cd, ok := want[d.DiskID]
		if !ok {
			return fmt.Errorf("disk %s of the backup is not in its vm configuration", d.DiskID)
		}
		name := fmt.Sprintf("%s-%d", cd.Controller.Type, cd.Controller.BusNumber)
		vd := created[slot{name, cd.UnitNumber}]
		if vd == nil {
			return fmt.Errorf("the new vm has no disk at %s unit %d for %s", name, cd.UnitNumber, d.DiskID)
		}
		b, ok := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			return fmt.Errorf("disk %s of the new vm has a %T backing", d.DiskID, vd.Backing)
		}
		var dp object.DatastorePath
		if !dp.FromString(b.FileName) {
			return fmt.Errorf("disk %s of the new vm: bad file name %q", d.DiskID, b.FileName)
		}
		v.Disks[d.DiskID] = RestoredDisk{Datastore: dp.Datastore, DataFile: strings.TrimSuffix(dp.Path, ".vmdk") + "-flat.vmdk", Capacity: vd.CapacityInBytes,
			descriptor: dp.Path, index: order[vd], controllerClass: reflect.TypeOf(ctrls[vd]).Elem().Name(),
			bus: ctrls[vd].GetVirtualController().BusNumber, unit: *vd.UnitNumber}
	}
	return nil
}

// Destroy powers the VM off if needed and deletes it with its files.
func (v *RestoredVM) Destroy(ctx context.Context) error {
	return destroyVM(ctx, v.obj)
}

// DestroyRestoredVM removes a VM a restore created (after an agent restart, by its moref). A VM
// that is gone is not an error; a VM whose annotation does not name the restore job is left
// alone and refused, so that a moref reused by vCenter never costs someone else's VM.
func (c *Client) DestroyRestoredVM(ctx context.Context, moref, jobID string) error {
	obj := object.NewVirtualMachine(c.vc, types.ManagedObjectReference{Type: "VirtualMachine", Value: moref})
	var m mo.VirtualMachine
	if err := obj.Properties(ctx, obj.Reference(), []string{"config.annotation"}, &m); err != nil {
		if isGone(err) {
			return nil
		}
		return fmt.Errorf("read vm %s: %w", moref, err)
	}
	if m.Config == nil || !strings.HasPrefix(m.Config.Annotation, api.RestoreVMPrefix+jobID) {
		return fmt.Errorf("vm %s was not made by restore %s: left alone", moref, jobID)
	}
	return destroyVM(ctx, obj)
}

func destroyVM(ctx context.Context, obj *object.VirtualMachine) error {
	if st, err := obj.PowerState(ctx); err == nil && st == types.VirtualMachinePowerStatePoweredOn {
		if t, err := obj.PowerOff(ctx); err == nil {
			_ = t.Wait(ctx)
		}
	}
	t, err := obj.Destroy(ctx)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil && !isGone(err) {
		return fmt.Errorf("destroy vm %s: %w", obj.Reference().Value, err)
	}
	return nil
}

// PowerOn starts the restored VM.
func (v *RestoredVM) PowerOn(ctx context.Context) error {
	t, err := v.obj.PowerOn(ctx)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("power on vm %s: %w", v.MoRef(), err)
	}
	return nil
}
