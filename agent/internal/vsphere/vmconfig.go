package vsphere

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/api"
)

// VMConfig returns the VM's configuration as the snapshot recorded it: a snapshot keeps the
// whole config of the moment it was taken (VirtualMachineSnapshot.config), so the description
// matches the disks the backup reads even when the VM is reconfigured meanwhile. Names of the
// datastores and distributed port groups are read from the inventory now; a port group that
// cannot be read leaves the NIC's network name empty (its key and switch uuid identify it).
func (s *Snapshot) VMConfig(ctx context.Context) (api.VMConfig, error) {
	c := s.vm.c
	var snap mo.VirtualMachineSnapshot
	if err := c.collector().RetrieveOne(ctx, s.ref, []string{"config"}, &snap); err != nil {
		return api.VMConfig{}, fmt.Errorf("read config of snapshot %s: %w", s.ref.Value, err)
	}
	cfg := &snap.Config
	devices := object.VirtualDeviceList(cfg.Hardware.Device)
	out := api.VMConfig{
		Version:         api.VMConfigVersion,
		InstanceUUID:    cfg.InstanceUuid,
		BIOSUUID:        cfg.Uuid,
		Name:            cfg.Name,
		HardwareVersion: cfg.Version,
		GuestID:         cfg.GuestId,
		GuestFullName:   cfg.GuestFullName,
		Firmware:        cfg.Firmware,
		NumCPU:          cfg.Hardware.NumCPU,
		MemoryMB:        int64(cfg.Hardware.MemoryMB),
		CPUHotAdd:       isTrue(cfg.CpuHotAddEnabled),
		MemoryHotAdd:    isTrue(cfg.MemoryHotAddEnabled),
		NestedHV:        isTrue(cfg.NestedHVEnabled),
		// Newlines and tabs are common in annotations; other control characters would make the
		// hub refuse the whole configuration, so they are replaced.
		Annotation:       sanitizeText(cfg.Annotation, "\n\t"),
		CPUAllocation:    allocation(cfg.CpuAllocation),
		MemoryAllocation: allocation(cfg.MemoryAllocation),
		Controllers:      []api.VMController{},
		Disks:            []api.VMConfigDisk{},
		NICs:             []api.VMNIC{},
		CDROMs:           []api.VMCDROM{},
	}
	if n := cfg.Hardware.NumCoresPerSocket; n != nil {
		out.CoresPerSocket = *n
	}
	if out.Firmware == "" {
		out.Firmware = string(types.GuestOsDescriptorFirmwareTypeBios) // vSphere's default
	}
	if o := cfg.BootOptions; o != nil {
		out.SecureBoot = isTrue(o.EfiSecureBootEnabled)
		out.BootDelayMS = o.BootDelay
		out.EnterBIOSSetup = isTrue(o.EnterBIOSSetup)
	}
	for _, o := range cfg.ExtraConfig {
		ov := o.GetOptionValue()
		if ov == nil || !api.ExtraConfigAllowed(ov.Key) {
			continue
		}
		v := fmt.Sprint(ov.Value)
		if v != sanitizeText(v, "") {
			continue // not a value any boot setting has
		}
		if out.ExtraConfig == nil {
			out.ExtraConfig = map[string]string{}
		}
		out.ExtraConfig[ov.Key] = v
	}

	var dsRefs, pgRefs []types.ManagedObjectReference
	diskDS := map[int32]types.ManagedObjectReference{}
	for _, dev := range devices {
		switch d := dev.(type) {
		case types.BaseVirtualController:
			if ct, ok := storageController(d); ok {
				out.Controllers = append(out.Controllers, ct)
			}
		case *types.VirtualDisk:
			f := describeDisk(d, devices)
			if f.datastoreRef != nil {
				diskDS[f.key] = *f.datastoreRef
				if !slices.Contains(dsRefs, *f.datastoreRef) {
					dsRefs = append(dsRefs, *f.datastoreRef)
				}
			}
			out.Disks = append(out.Disks, api.VMConfigDisk{
				DiskID: api.DiskIDForKey(f.key), Key: f.key, Label: f.label, CapacityBytes: f.capacity,
				Controller: deviceController(devices, f.controllerKey), UnitNumber: f.unitNumber,
				Provisioning: f.provisioning, Mode: f.diskMode, BackingType: f.backingType, Sharing: f.sharing,
				Datastore: datastoreFromPath(f.fileName),
			})
		case types.BaseVirtualEthernetCard:
			n := nic(d)
			pg := types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: n.PortgroupKey}
			if n.BackingType == "distributed" && n.PortgroupKey != "" && !slices.Contains(pgRefs, pg) {
				pgRefs = append(pgRefs, pg)
			}
			out.NICs = append(out.NICs, n)
		case *types.VirtualCdrom:
			out.CDROMs = append(out.CDROMs, cdrom(d, devices))
		}
	}

	dsNames, err := c.datastoreNames(ctx, dsRefs)
	if err != nil {
		return api.VMConfig{}, fmt.Errorf("read datastores of snapshot %s: %w", s.ref.Value, err)
	}
	for i := range out.Disks {
		if ref, ok := diskDS[out.Disks[i].Key]; ok && dsNames[ref] != "" {
			out.Disks[i].Datastore = dsNames[ref]
		}
	}
	pgNames := c.portgroupNames(ctx, pgRefs)
	for i := range out.NICs {
		if n := &out.NICs[i]; n.BackingType == "distributed" {
			n.Network = pgNames[n.PortgroupKey]
		}
	}

	slices.SortFunc(out.Controllers, func(a, b api.VMController) int { return cmp.Compare(a.Key, b.Key) })
	slices.SortFunc(out.Disks, func(a, b api.VMConfigDisk) int { return cmp.Compare(a.Key, b.Key) })
	slices.SortFunc(out.NICs, func(a, b api.VMNIC) int { return cmp.Compare(a.Key, b.Key) })
	slices.SortFunc(out.CDROMs, func(a, b api.VMCDROM) int { return cmp.Compare(a.Key, b.Key) })
	return out, nil
}

// portgroupNames reads the names of distributed port groups by key (their moref value). A
// failure only costs the names: it is logged, not returned.
func (c *Client) portgroupNames(ctx context.Context, refs []types.ManagedObjectReference) map[string]string {
	names := map[string]string{}
	if len(refs) == 0 {
		return names
	}
	var pgs []mo.DistributedVirtualPortgroup
	if err := c.collector().Retrieve(ctx, refs, []string{"name"}, &pgs); err != nil {
		c.log.Debug("read distributed port group names", "port_groups", len(refs), "err", err)
		return names
	}
	for _, pg := range pgs {
		names[pg.Self.Value] = pg.Name
	}
	return names
}

// storageController describes a disk or CD-ROM controller; other controllers (PCI, PS/2, SIO,
// USB) are left out, vSphere creates them itself.
func storageController(d types.BaseVirtualController) (api.VMController, bool) {
	typ := controllerType(d.(types.BaseVirtualDevice))
	if typ == "" {
		return api.VMController{}, false
	}
	vc := d.GetVirtualController()
	ct := api.VMController{Key: vc.Key, Type: typ, BusNumber: vc.BusNumber}
	if scsi, ok := d.(types.BaseVirtualSCSIController); ok {
		ct.Sharing = string(scsi.GetVirtualSCSIController().SharedBus)
	}
	return ct, true
}

func deviceController(devices object.VirtualDeviceList, key int32) api.DeviceController {
	dc := api.DeviceController{Key: key}
	if c := devices.FindByKey(key); c != nil {
		dc.Type = controllerType(c)
		if vc, ok := c.(types.BaseVirtualController); ok {
			dc.BusNumber = vc.GetVirtualController().BusNumber
		}
	}
	return dc
}

func allocation(a *types.ResourceAllocationInfo) *api.ResourceAllocation {
	if a == nil {
		return nil
	}
	out := &api.ResourceAllocation{Limit: -1}
	if a.Reservation != nil {
		out.Reservation = *a.Reservation
	}
	if a.Limit != nil {
		out.Limit = *a.Limit
	}
	if a.Shares != nil {
		out.Shares, out.SharesLevel = a.Shares.Shares, string(a.Shares.Level)
	}
	return out
}

// nicAdapterType names a NIC's emulation as api.VMNIC.AdapterType.
func nicAdapterType(d types.BaseVirtualEthernetCard) string {
	switch d.(type) {
	case *types.VirtualVmxnet3Vrdma:
		return "vmxnet3vrdma"
	case *types.VirtualVmxnet3:
		return "vmxnet3"
	case *types.VirtualVmxnet2:
		return "vmxnet2"
	case *types.VirtualVmxnet:
		return "vmxnet"
	case *types.VirtualE1000e:
		return "e1000e"
	case *types.VirtualE1000:
		return "e1000"
	case *types.VirtualPCNet32:
		return "pcnet32"
	case *types.VirtualSriovEthernetCard:
		return "sriov"
	default:
		return "vmxnet3" // an emulation newer than this code; the closest paravirtual kind
	}
}

func nic(d types.BaseVirtualEthernetCard) api.VMNIC {
	card := d.GetVirtualEthernetCard()
	n := api.VMNIC{Key: card.Key, AdapterType: nicAdapterType(d), MACAddress: card.MacAddress, AddressType: card.AddressType}
	if desc := card.DeviceInfo; desc != nil {
		n.Label = desc.GetDescription().Label
	}
	if c := card.Connectable; c != nil {
		n.Connected, n.StartConnected = c.Connected, c.StartConnected
	}
	switch b := card.Backing.(type) {
	case *types.VirtualEthernetCardNetworkBackingInfo:
		n.BackingType, n.Network = "network", b.DeviceName
	case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
		n.BackingType, n.PortgroupKey, n.SwitchUUID = "distributed", b.Port.PortgroupKey, b.Port.SwitchUuid
	case *types.VirtualEthernetCardOpaqueNetworkBackingInfo:
		n.BackingType, n.Network = "opaque", b.OpaqueNetworkId
	}
	return n
}

func cdrom(d *types.VirtualCdrom, devices object.VirtualDeviceList) api.VMCDROM {
	cd := api.VMCDROM{Key: d.Key, Controller: deviceController(devices, d.ControllerKey)}
	if d.UnitNumber != nil {
		cd.UnitNumber = *d.UnitNumber
	}
	if c := d.Connectable; c != nil {
		cd.Connected, cd.StartConnected = c.Connected, c.StartConnected
	}
	switch b := d.Backing.(type) {
	case *types.VirtualCdromIsoBackingInfo:
		cd.BackingType, cd.ISOFile = "iso", b.FileName
	case *types.VirtualCdromRemotePassthroughBackingInfo, *types.VirtualCdromRemoteAtapiBackingInfo:
		cd.BackingType = "client"
	case *types.VirtualCdromPassthroughBackingInfo, *types.VirtualCdromAtapiBackingInfo:
		cd.BackingType = "host"
	}
	return cd
}

// sanitizeText replaces the characters api.UnsafeRune refuses, except those in keep, with
// U+FFFD, so that text vSphere returns passes the hub's checks.
func sanitizeText(s, keep string) string {
	return strings.Map(func(r rune) rune {
		if api.UnsafeRune(r) && !strings.ContainsRune(keep, r) {
			return '\uFFFD'
		}
		return r
	}, s)
}
