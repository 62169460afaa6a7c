package vsphere

import (
	"fmt"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/api"
)

// vmSpec builds the configuration of a restored VM (the ConfigSpec of its import spec) of a restore from the backup's configuration.
func vmSpec(job *api.RestoreJob, p *Placement) (*types.VirtualMachineConfigSpec, error) {
	cfg := job.VM
	annotation := api.RestoreVMPrefix + job.ID + " of " + job.BackupID
	if cfg.Annotation != "" {
		annotation += "\n" + cfg.Annotation
	}
	spec := &types.VirtualMachineConfigSpec{
		Name:                job.Target.Name,
		GuestId:             cfg.GuestID,
		Version:             cfg.HardwareVersion,
		NumCPUs:             cfg.NumCPU,
		MemoryMB:            cfg.MemoryMB,
		Firmware:            cfg.Firmware,
		Annotation:          annotation,
		CpuHotAddEnabled:    types.NewBool(cfg.CPUHotAdd),
		MemoryHotAddEnabled: types.NewBool(cfg.MemoryHotAdd),
		NestedHVEnabled:     types.NewBool(cfg.NestedHV),
		Files:               &types.VirtualMachineFileInfo{VmPathName: "[" + job.Target.Datastore + "]"},
		BootOptions: &types.VirtualMachineBootOptions{
			BootDelay: cfg.BootDelayMS, EnterBIOSSetup: types.NewBool(cfg.EnterBIOSSetup),
			EfiSecureBootEnabled: types.NewBool(cfg.SecureBoot),
		},
		CpuAllocation:    allocationSpec(cfg.CPUAllocation),
		MemoryAllocation: allocationSpec(cfg.MemoryAllocation),
	}
	if cfg.CoresPerSocket > 0 {
		spec.NumCoresPerSocket = types.NewInt32(cfg.CoresPerSocket)
	}
	for k, v := range cfg.ExtraConfig {
		spec.ExtraConfig = append(spec.ExtraConfig, &types.OptionValue{Key: k, Value: v})
	}

	// New devices carry negative keys; disks and NICs refer to their controller by the new key.
	next := int32(-100)
	newKey := func() int32 { next--; return next }
	ctrlKey := map[int32]int32{}
	for _, c := range cfg.Controllers {
		dev, err := newController(c)
		if err != nil {
			return nil, err
		}
		if dev == nil { // IDE: every VM has two
			ctrlKey[c.Key] = 200 + c.BusNumber
			continue
		}
		k := newKey()
		ctrlKey[c.Key] = k
		dev.GetVirtualDevice().Key = k
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: dev})
	}
	onDS := map[string]string{}
	for _, d := range job.Disks {
		onDS[d.DiskID] = d.Datastore
	}
	for _, d := range cfg.Disks {
		ds, ok := onDS[d.DiskID]
		if !ok {
			continue // not in the backup (an independent disk, say): not restored
		}
		ck, ok := ctrlKey[d.Controller.Key]
		if !ok {
			return nil, fmt.Errorf("disk %s: controller %d is not in the configuration: %w", d.DiskID, d.Controller.Key, ErrUnsupported)
		}
		thin := job.DiskProvisioning != api.ProvisionThick
		mode := string(types.VirtualDiskModePersistent)
		if d.Mode != "" && d.Mode != "independent_persistent" && d.Mode != "independent_nonpersistent" && d.Mode != "nonpersistent" {
			mode = d.Mode
		}
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key: newKey(), ControllerKey: ck, UnitNumber: types.NewInt32(d.UnitNumber),
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: "[" + ds + "]"},
					DiskMode:                     mode, ThinProvisioned: types.NewBool(thin),
				},
			},
			CapacityInBytes: d.CapacityBytes,
		}
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd, FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate, Device: disk,
		})
	}
	for _, n := range cfg.NICs {
		card, err := newNIC(n.AdapterType)
		if err != nil {
			return nil, err
		}
		c := card.GetVirtualEthernetCard()
		c.Key = newKey()
		c.Backing = p.networks[n.Network]
		c.Connectable = &types.VirtualDeviceConnectInfo{StartConnected: n.StartConnected, AllowGuestControl: true}
		c.AddressType = string(types.VirtualEthernetCardMacTypeGenerated)
		if job.MACAddresses == api.MACKeep && n.MACAddress != "" {
			c.AddressType, c.MacAddress = string(types.VirtualEthernetCardMacTypeManual), n.MACAddress
		}
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: card.(types.BaseVirtualDevice)})
	}
	return spec, nil
}

func allocationSpec(a *api.ResourceAllocation) *types.ResourceAllocationInfo {
	if a == nil {
		return nil
	}
	out := &types.ResourceAllocationInfo{Reservation: types.NewInt64(a.Reservation), Limit: types.NewInt64(a.Limit)}
	if a.SharesLevel != "" {
		out.Shares = &types.SharesInfo{Shares: a.Shares, Level: types.SharesLevel(a.SharesLevel)}
	}
	return out
}

// newController returns a new storage controller of the configuration's kind; nil for IDE.
func newController(c api.VMController) (types.BaseVirtualDevice, error) {
	scsi := types.VirtualSCSIController{
		VirtualController: types.VirtualController{BusNumber: c.BusNumber},
		SharedBus:         types.VirtualSCSISharing(c.Sharing),
	}
	if scsi.SharedBus == "" {
		scsi.SharedBus = types.VirtualSCSISharingNoSharing
	}
	switch c.Type {
	case "pvscsi":
		return &types.ParaVirtualSCSIController{VirtualSCSIController: scsi}, nil
	case "lsilogic":
		return &types.VirtualLsiLogicController{VirtualSCSIController: scsi}, nil
	case "lsilogic-sas":
		return &types.VirtualLsiLogicSASController{VirtualSCSIController: scsi}, nil
	case "buslogic":
		return &types.VirtualBusLogicController{VirtualSCSIController: scsi}, nil
	case "nvme":
		return &types.VirtualNVMEController{VirtualController: types.VirtualController{BusNumber: c.BusNumber}}, nil
	case "sata":
		return &types.VirtualAHCIController{VirtualSATAController: types.VirtualSATAController{VirtualController: types.VirtualController{BusNumber: c.BusNumber}}}, nil
	case "ide":
		return nil, nil
	}
	return nil, fmt.Errorf("controller %d of kind %q: %w", c.Key, c.Type, ErrUnsupported)
}

func newNIC(adapter string) (types.BaseVirtualEthernetCard, error) {
	switch adapter {
	case "vmxnet3":
		return &types.VirtualVmxnet3{}, nil
	case "vmxnet2":
		return &types.VirtualVmxnet2{}, nil
	case "vmxnet":
		return &types.VirtualVmxnet{}, nil
	case "e1000":
		return &types.VirtualE1000{}, nil
	case "e1000e":
		return &types.VirtualE1000e{}, nil
	case "pcnet32":
		return &types.VirtualPCNet32{}, nil
	}
	return nil, fmt.Errorf("nic of kind %q (needs hardware passthrough): %w", adapter, ErrUnsupported)
}
