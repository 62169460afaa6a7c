package vsphere

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// InstantSpec is an instant recovery as the agent carries it out: mount the hub's NFS export
// on an ESXi host as a datastore, register the VM from the .vmx in it, map its networks and
// power it on.
type InstantSpec struct {
	// ID is the session id; the datastore is named InstantDatastorePrefix + ID.
	ID string
	// Host is the ESXi host, by its inventory name.
	Host string
	// NFSServer and NFSPath are the hub's export.
	NFSServer, NFSPath string
	// VMX is the configuration file's path in the export ("web01/web01.vmx"); Name the VM's name.
	VMX, Name string
	// NetworkMap maps the networks the .vmx names to networks on the host.
	NetworkMap map[string]string
	PowerOn    bool
}

// InstantDatastorePrefix starts the name of every datastore an instant recovery mounts.
const InstantDatastorePrefix = "sendense-"

// InstantVM is what StartInstant made.
type InstantVM struct {
	DatastoreRef, VMRef string
}

// ErrForeignVM: a VM on the session's datastore is not registered from the session's .vmx.
var ErrForeignVM = errors.New("the datastore holds a vm this session did not register")

// instantHost is an ESXi host found by name, with what a session needs of it.
type instantHost struct {
	host   *object.HostSystem
	dc     *object.Datacenter
	finder *find.Finder
}

func (c *Client) instantHost(ctx context.Context, name string) (*instantHost, error) {
	f := find.NewFinder(c.vc, false)
	dcs, err := f.DatacenterList(ctx, "*")
	if err != nil {
		return nil, fmt.Errorf("list datacenters: %w", err)
	}
	for _, dc := range dcs {
		f.SetDatacenter(dc)
		h, err := f.HostSystem(ctx, name)
		if err == nil {
			return &instantHost{host: h, dc: dc, finder: f}, nil
		}
	}
	return nil, notFound("host", name, nil)
}

// datastore returns the session's datastore mounted on the host, or nil.
func (h *instantHost) datastore(ctx context.Context, name string) (*object.Datastore, error) {
	var hs mo.HostSystem
	if err := h.host.Properties(ctx, h.host.Reference(), []string{"datastore"}, &hs); err != nil {
		return nil, fmt.Errorf("read datastores of host %s: %w", h.host.Name(), err)
	}
	for _, ref := range hs.Datastore {
		ds := object.NewDatastore(h.host.Client(), ref)
		n, err := ds.ObjectName(ctx)
		if err != nil {
			if isGone(err) {
				continue
			}
			return nil, fmt.Errorf("read datastore %s: %w", ref.Value, err)
		}
		if n == name {
			return ds, nil
		}
	}
	return nil, nil
}

// StartInstant mounts the export, registers the VM and powers it on if asked. It may be run
// again after an agent restart: a datastore already mounted and a VM already registered from
// the .vmx are reused.
func (c *Client) StartInstant(ctx context.Context, s InstantSpec) (InstantVM, error) {
	h, err := c.instantHost(ctx, s.Host)
	if err != nil {
		return InstantVM{}, err
	}
	dsName := InstantDatastorePrefix + s.ID
	ds, err := h.datastore(ctx, dsName)
	if err != nil {
		return InstantVM{}, err
	}
	if ds == nil {
		dss, err := h.host.ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return InstantVM{}, fmt.Errorf("datastore system of host %s: %w", s.Host, err)
		}
		ds, err = dss.CreateNasDatastore(ctx, types.HostNasVolumeSpec{
			RemoteHost: s.NFSServer, RemotePath: s.NFSPath, LocalPath: dsName,
			AccessMode: string(types.HostMountModeReadWrite), Type: string(types.HostFileSystemVolumeFileSystemTypeNFS),
		})
		if err != nil {
			return InstantVM{}, fmt.Errorf("mount %s:%s on host %s: %w", s.NFSServer, s.NFSPath, s.Host, err)
		}
	}
	out := InstantVM{DatastoreRef: ds.Reference().Value}
	vmxPath := "[" + dsName + "] " + s.VMX
	vm, err := h.registered(ctx, ds, vmxPath)
	if err != nil {
		return out, err
	}
	if vm == nil {
		folders, err := h.dc.Folders(ctx)
		if err != nil {
			return out, fmt.Errorf("folders of datacenter %s: %w", h.dc.Name(), err)
		}
		pool, err := h.host.ResourcePool(ctx)
		if err != nil {
			return out, fmt.Errorf("resource pool of host %s: %w", s.Host, err)
		}
		t, err := folders.VmFolder.RegisterVM(ctx, vmxPath, s.Name, false, pool, h.host)
		if err != nil {
			return out, fmt.Errorf("register %s: %w", vmxPath, err)
		}
		res, err := t.WaitForResult(ctx)
		if err != nil {
			return out, fmt.Errorf("register %s: %w", vmxPath, err)
		}
		ref, ok := res.Result.(types.ManagedObjectReference)
		if !ok {
			return out, fmt.Errorf("register %s: no vm in the task's result", vmxPath)
		}
		vm = object.NewVirtualMachine(c.vc, ref)
	}
	out.VMRef = vm.Reference().Value
	if err := h.mapNetworks(ctx, vm, s.NetworkMap); err != nil {
		return out, err
	}
	if s.PowerOn {
		st, err := vm.PowerState(ctx)
		if err != nil {
			return out, fmt.Errorf("read power state of vm %s: %w", out.VMRef, err)
		}
		if st != types.VirtualMachinePowerStatePoweredOn {
			t, err := vm.PowerOn(ctx)
			if err == nil {
				err = t.Wait(ctx)
			}
			if err != nil {
				return out, fmt.Errorf("power on vm %s: %w", out.VMRef, err)
			}
		}
	}
	return out, nil
}

// registered returns the VM registered from vmxPath on ds, or nil.
func (h *instantHost) registered(ctx context.Context, ds *object.Datastore, vmxPath string) (*object.VirtualMachine, error) {
	vms, err := h.vmsOn(ctx, ds)
	if err != nil {
		return nil, err
	}
	for _, v := range vms {
		if v.path == vmxPath {
			return v.obj, nil
		}
	}
	return nil, nil
}

type vmOnDatastore struct {
	obj  *object.VirtualMachine
	path string
}

func (h *instantHost) vmsOn(ctx context.Context, ds *object.Datastore) ([]vmOnDatastore, error) {
	var m mo.Datastore
	if err := ds.Properties(ctx, ds.Reference(), []string{"vm"}, &m); err != nil {
		return nil, fmt.Errorf("read vms of datastore %s: %w", ds.Reference().Value, err)
	}
	var out []vmOnDatastore
	for _, ref := range m.Vm {
		obj := object.NewVirtualMachine(h.host.Client(), ref)
		var vm mo.VirtualMachine
		if err := obj.Properties(ctx, ref, []string{"config.files.vmPathName"}, &vm); err != nil {
			if isGone(err) {
				continue
			}
			return nil, fmt.Errorf("read vm %s: %w", ref.Value, err)
		}
		p := ""
		if vm.Config != nil {
			p = vm.Config.Files.VmPathName
		}
		out = append(out, vmOnDatastore{obj: obj, path: p})
	}
	return out, nil
}

// mapNetworks moves each NIC whose network the map names onto the mapped network.
func (h *instantHost) mapNetworks(ctx context.Context, vm *object.VirtualMachine, m map[string]string) error {
	if len(m) == 0 {
		return nil
	}
	devices, err := vm.Device(ctx)
	if err != nil {
		return fmt.Errorf("read devices of vm %s: %w", vm.Reference().Value, err)
	}
	var changes []types.BaseVirtualDeviceConfigSpec
	for _, d := range devices.SelectByType((*types.VirtualEthernetCard)(nil)) {
		card := d.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		from := ""
		switch b := card.Backing.(type) {
		case *types.VirtualEthernetCardNetworkBackingInfo:
			from = b.DeviceName
		case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
			pg := object.NewDistributedVirtualPortgroup(h.host.Client(), types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: b.Port.PortgroupKey})
			if n, err := pg.ObjectName(ctx); err == nil {
				from = n
			}
		}
		to := m[from]
		if to == "" {
			continue
		}
		net, err := h.finder.Network(ctx, to)
		if err != nil {
			return notFound("network", to, err)
		}
		backing, err := net.EthernetCardBackingInfo(ctx)
		if err != nil {
			return fmt.Errorf("backing of network %s: %w", to, err)
		}
		card.Backing = backing
		changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: d})
	}
	if len(changes) == 0 {
		return nil
	}
	t, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: changes})
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("map networks of vm %s: %w", vm.Reference().Value, err)
	}
	return nil
}

// StopInstant undoes StartInstant: every VM registered from the session's datastore is
// powered off and unregistered (its files stay: they are the hub's), then the datastore is
// unmounted. A session already (or never) cleaned up is not an error; a VM on the datastore
// whose .vmx is not in it is refused with ErrForeignVM and nothing is unmounted.
func (c *Client) StopInstant(ctx context.Context, id, host string) error {
	h, err := c.instantHost(ctx, host)
	if err != nil {
		return err
	}
	dsName := InstantDatastorePrefix + id
	ds, err := h.datastore(ctx, dsName)
	if err != nil || ds == nil {
		return err
	}
	vms, err := h.vmsOn(ctx, ds)
	if err != nil {
		return err
	}
	for _, v := range vms {
		if !strings.HasPrefix(v.path, "["+dsName+"]") {
			return fmt.Errorf("vm %s (%s) on datastore %s: %w", v.obj.Reference().Value, v.path, dsName, ErrForeignVM)
		}
	}
	for _, v := range vms {
		if st, err := v.obj.PowerState(ctx); err == nil && st != types.VirtualMachinePowerStatePoweredOff {
			t, err := v.obj.PowerOff(ctx)
			if err == nil {
				err = t.Wait(ctx)
			}
			if err != nil && !isGone(err) {
				return fmt.Errorf("power off vm %s: %w", v.obj.Reference().Value, err)
			}
		}
		if err := v.obj.Unregister(ctx); err != nil && !isGone(err) {
			return fmt.Errorf("unregister vm %s: %w", v.obj.Reference().Value, err)
		}
	}
	dss, err := h.host.ConfigManager().DatastoreSystem(ctx)
	if err != nil {
		return fmt.Errorf("datastore system of host %s: %w", host, err)
	}
	if err := dss.Remove(ctx, ds); err != nil && !isGone(err) {
		return fmt.Errorf("unmount datastore %s from host %s: %w", dsName, host, err)
	}
	return nil
}

// MigrateInstant moves the VM registered from the session's datastore to the datastore named
// datastore with Storage vMotion (files and disks, while it runs), then unmounts the session's
// datastore. Run again after it succeeded it finds no VM left and only unmounts. The error
// wraps ErrTargetNotFound for a datastore that does not exist.
func (c *Client) MigrateInstant(ctx context.Context, id, host, datastore string) (InstantVM, error) {
	h, err := c.instantHost(ctx, host)
	if err != nil {
		return InstantVM{}, err
	}
	dsName := InstantDatastorePrefix + id
	ds, err := h.datastore(ctx, dsName)
	if err != nil {
		return InstantVM{}, err
	}
	if ds == nil {
		return InstantVM{}, nil // migrated and unmounted before
	}
	target, err := h.finder.Datastore(ctx, datastore)
	if err != nil {
		return InstantVM{}, notFound("datastore", datastore, err)
	}
	vms, err := h.vmsOn(ctx, ds)
	if err != nil {
		return InstantVM{}, err
	}
	var out InstantVM
	for _, v := range vms {
		if !strings.HasPrefix(v.path, "["+dsName+"]") {
			return out, fmt.Errorf("vm %s (%s) on datastore %s: %w", v.obj.Reference().Value, v.path, dsName, ErrForeignVM)
		}
		ref := target.Reference()
		t, err := v.obj.Relocate(ctx, types.VirtualMachineRelocateSpec{Datastore: &ref}, types.VirtualMachineMovePriorityDefaultPriority)
		if err == nil {
			err = t.Wait(ctx)
		}
		if err != nil {
			return out, fmt.Errorf("move vm %s to datastore %s: %w", v.obj.Reference().Value, datastore, err)
		}
		out.VMRef, out.DatastoreRef = v.obj.Reference().Value, ref.Value
	}
	dss, err := h.host.ConfigManager().DatastoreSystem(ctx)
	if err != nil {
		return out, fmt.Errorf("datastore system of host %s: %w", host, err)
	}
	if err := dss.Remove(ctx, ds); err != nil && !isGone(err) {
		return out, fmt.Errorf("unmount datastore %s from host %s: %w", dsName, host, err)
	}
	return out, nil
}
