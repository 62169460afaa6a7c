package vsphere

import (
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/api"
)

// Backing types as reported in api.Disk.BackingType and SnapshotDisk.BackingType.
const (
	BackingFlatVer2    = "flatVer2"
	BackingSeSparse    = "seSparse"
	BackingSparseVer2  = "sparseVer2"
	BackingRDMVirtual  = "rdmVirtual"
	BackingRDMPhysical = "rdmPhysical"
)

// diskFacts is what this package reads from one VirtualDisk device, whether it comes from a
// VM's current configuration (inventory) or a snapshot's (backup).
type diskFacts struct {
	key            int32
	label          string
	capacity       int64
	fileName       string // "[ds] vm/vm.vmdk"
	datastoreRef   *types.ManagedObjectReference
	backingType    string
	provisioning   string
	diskMode       string
	uuid           string
	changeID       string
	hasParent      bool // a delta disk: the bytes are spread over a chain of files
	controllerKey  int32
	controllerType string
	controllerBus  int32
	sharing        string // sharingNone, sharingMultiWriter ("" when the backing has none)
	unitNumber     int32
	backupable     bool
	reason         string
}

// describeDisk reads the facts of disk; devices is the full device list (for the controller).
func describeDisk(disk *types.VirtualDisk, devices object.VirtualDeviceList) diskFacts {
	f := diskFacts{key: disk.Key, capacity: disk.CapacityInBytes}
	if f.capacity == 0 {
		f.capacity = disk.CapacityInKB * 1024
	}
	if d := disk.DeviceInfo.GetDescription(); d != nil {
		f.label = d.Label
	}
	if disk.UnitNumber != nil {
		f.unitNumber = *disk.UnitNumber
	}
	f.controllerKey = disk.ControllerKey
	if c := devices.FindByKey(disk.ControllerKey); c != nil {
		f.controllerType = controllerType(c)
		if vc, ok := c.(types.BaseVirtualController); ok {
			f.controllerBus = vc.GetVirtualController().BusNumber
		}
	}

	sharing := ""
	physical := false
	switch b := disk.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		f.backingType = BackingFlatVer2
		f.fileName, f.datastoreRef = b.FileName, b.Datastore
		f.diskMode, f.uuid, f.changeID, f.hasParent = b.DiskMode, b.Uuid, b.ChangeId, b.Parent != nil
		sharing = b.Sharing
		switch {
		case isTrue(b.ThinProvisioned):
			f.provisioning = "thin"
		case isTrue(b.EagerlyScrub):
			f.provisioning = "eagerZeroedThick"
		default:
			f.provisioning = "thick"
		}
	case *types.VirtualDiskSeSparseBackingInfo:
		f.backingType = BackingSeSparse
		f.fileName, f.datastoreRef = b.FileName, b.Datastore
		f.diskMode, f.uuid, f.changeID, f.hasParent = b.DiskMode, b.Uuid, b.ChangeId, b.Parent != nil
		f.provisioning = "thin"
	case *types.VirtualDiskSparseVer2BackingInfo:
		f.backingType = BackingSparseVer2
		f.fileName, f.datastoreRef = b.FileName, b.Datastore
		f.diskMode, f.uuid, f.changeID, f.hasParent = b.DiskMode, b.Uuid, b.ChangeId, b.Parent != nil
		f.provisioning = "thin"
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		f.backingType = BackingRDMVirtual
		if b.CompatibilityMode == string(types.VirtualDiskCompatibilityModePhysicalMode) {
			f.backingType = BackingRDMPhysical
			physical = true
		}
		f.fileName, f.datastoreRef = b.FileName, b.Datastore
		f.diskMode, f.uuid, f.changeID, f.hasParent = b.DiskMode, b.Uuid, b.ChangeId, b.Parent != nil
		sharing = b.Sharing
	case *types.VirtualDiskFlatVer1BackingInfo:
		f.backingType = "flatVer1"
		f.fileName, f.datastoreRef, f.diskMode, f.hasParent = b.FileName, b.Datastore, b.DiskMode, b.Parent != nil
		f.provisioning = "thick"
	case *types.VirtualDiskSparseVer1BackingInfo:
		f.backingType = "sparseVer1"
		f.fileName, f.datastoreRef, f.diskMode, f.hasParent = b.FileName, b.Datastore, b.DiskMode, b.Parent != nil
		f.provisioning = "thin"
	case *types.VirtualDiskLocalPMemBackingInfo:
		f.backingType = "localPMem"
		f.fileName, f.datastoreRef, f.diskMode, f.uuid = b.FileName, b.Datastore, b.DiskMode, b.Uuid
	case *types.VirtualDiskPartitionedRawDiskVer2BackingInfo:
		f.backingType = "partitionedRawDiskVer2"
		f.fileName, f.uuid, f.changeID = b.DescriptorFileName, b.Uuid, b.ChangeId
	case *types.VirtualDiskRawDiskVer2BackingInfo:
		f.backingType = "rawDiskVer2"
		f.fileName, f.uuid, f.changeID = b.DescriptorFileName, b.Uuid, b.ChangeId
	default:
		f.backingType = "unknown"
	}

	f.sharing = sharing
	f.backupable, f.reason = backupable(f.backingType, f.diskMode, sharing, physical)
	return f
}

// backupable decides whether a snapshot captures the disk, and if not, why. A snapshot skips
// independent disks; physical-compatibility RDMs, multi-writer disks and raw or persistent
// memory devices cannot be snapshotted at all.
func backupable(backingType, diskMode, sharing string, physicalRDM bool) (bool, string) {
	switch {
	case physicalRDM:
		return false, "physical-compatibility RDM: snapshots and CBT do not apply"
	case strings.HasPrefix(diskMode, "independent"):
		return false, "independent disk (" + diskMode + "): snapshots do not capture it"
	case diskMode == string(types.VirtualDiskModeNonpersistent), diskMode == string(types.VirtualDiskModeUndoable),
		diskMode == string(types.VirtualDiskModeAppend):
		return false, "legacy disk mode " + diskMode + ": snapshots do not apply"
	case sharing == string(types.VirtualDiskSharingSharingMultiWriter):
		return false, "multi-writer disk: snapshots are not supported"
	}
	switch backingType {
	case BackingFlatVer2, BackingSeSparse, BackingSparseVer2, BackingRDMVirtual, "flatVer1", "sparseVer1":
		return true, ""
	case "localPMem":
		return false, "persistent-memory disk: not supported"
	default:
		return false, "disk backing " + backingType + " is not supported"
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

// controllerType names the kind of controller a disk hangs off, as api.Disk.ControllerType.
func controllerType(dev types.BaseVirtualDevice) string {
	switch dev.(type) {
	case *types.ParaVirtualSCSIController:
		return "pvscsi"
	case *types.VirtualLsiLogicController:
		return "lsilogic"
	case *types.VirtualLsiLogicSASController:
		return "lsilogic-sas"
	case *types.VirtualBusLogicController:
		return "buslogic"
	case *types.VirtualNVMEController:
		return "nvme"
	case *types.VirtualAHCIController, *types.VirtualSATAController:
		return "sata"
	case *types.VirtualIDEController:
		return "ide"
	default:
		return ""
	}
}

// datastoreFromPath returns "ds" from "[ds] dir/file.vmdk", or "".
func datastoreFromPath(p string) string {
	var dp object.DatastorePath
	if !dp.FromString(p) {
		return ""
	}
	return dp.Datastore
}

// apiDisk converts facts into the wire type; dsName is the datastore's name.
func (f diskFacts) apiDisk(dsName string) api.Disk {
	return api.Disk{
		Key:                 f.key,
		DiskID:              api.DiskIDForKey(f.key),
		Label:               f.label,
		CapacityBytes:       f.capacity,
		Datastore:           dsName,
		BackingFile:         f.fileName,
		BackingType:         f.backingType,
		Provisioning:        f.provisioning,
		ControllerType:      f.controllerType,
		ControllerBus:       f.controllerBus,
		UnitNumber:          f.unitNumber,
		DiskMode:            f.diskMode,
		Backupable:          f.backupable,
		NotBackupableReason: f.reason,
		ChangeID:            f.changeID,
	}
}

// flatFile returns the datastore-relative path of the file that holds the raw bytes of a
// flatVer2 disk without parent: "vm/disk.vmdk" is a small text descriptor, its extent
// "vm/disk-flat.vmdk" holds the bytes (on ESXi/VMFS and in vcsim alike). Delta, sparse and
// RDM disks have no such file ("", false): their bytes are only readable through VDDK/NBD.
func (f diskFacts) flatFile() (string, bool) {
	if f.backingType != BackingFlatVer2 || f.hasParent {
		return "", false
	}
	var dp object.DatastorePath
	if !dp.FromString(f.fileName) || !strings.HasSuffix(dp.Path, ".vmdk") {
		return "", false
	}
	return strings.TrimSuffix(dp.Path, ".vmdk") + "-flat.vmdk", true
}
