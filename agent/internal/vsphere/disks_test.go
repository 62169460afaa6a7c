package vsphere

import (
	"slices"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

func TestDescribeDisk(t *testing.T) {
	ds := types.ManagedObjectReference{Type: "Datastore", Value: "datastore-1"}
	unit := func(n int32) *int32 { return &n }
	controllers := object.VirtualDeviceList{
		&types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 1000}, BusNumber: 0}}},
		&types.VirtualLsiLogicController{VirtualSCSIController: types.VirtualSCSIController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 1001}, BusNumber: 1}}},
		&types.VirtualNVMEController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 31000}, BusNumber: 2}},
		&types.VirtualAHCIController{VirtualSATAController: types.VirtualSATAController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 15000}, BusNumber: 0}}},
		&types.VirtualIDEController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 200}, BusNumber: 1}},
		&types.VirtualBusLogicController{VirtualSCSIController: types.VirtualSCSIController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 1003}, BusNumber: 3}}},
		&types.VirtualLsiLogicSASController{VirtualSCSIController: types.VirtualSCSIController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 1002}, BusNumber: 2}}},
	}
	file := func(name string) types.VirtualDeviceFileBackingInfo {
		return types.VirtualDeviceFileBackingInfo{FileName: name, Datastore: &ds}
	}
	disk := func(ctrl int32, u int32, backing types.BaseVirtualDeviceBackingInfo) *types.VirtualDisk {
		return &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key: 2000, ControllerKey: ctrl, UnitNumber: unit(u), Backing: backing,
				DeviceInfo: &types.Description{Label: "Hard disk 1"},
			},
			CapacityInBytes: 5 << 30,
		}
	}

	tests := []struct {
		name           string
		disk           *types.VirtualDisk
		backingType    string
		provisioning   string
		controller     string
		bus, unit      int32
		backupable     bool
		changeID, uuid string
		dataFile       string
	}{
		{"thin flat on pvscsi", disk(1000, 0, &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/vm.vmdk"), DiskMode: "persistent",
			ThinProvisioned: types.NewBool(true), Uuid: "6000C29a", ChangeId: "52 aa/3",
		}), "flatVer2", "thin", "pvscsi", 0, 0, true, "52 aa/3", "6000C29a", "vm/vm-flat.vmdk"},
		{"lazy zeroed thick on lsilogic", disk(1001, 5, &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/vm_1.vmdk"), DiskMode: "persistent",
			ThinProvisioned: types.NewBool(false),
		}), "flatVer2", "thick", "lsilogic", 1, 5, true, "", "", "vm/vm_1-flat.vmdk"},
		{"eager zeroed on nvme", disk(31000, 2, &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/vm_2.vmdk"), DiskMode: "persistent",
			EagerlyScrub: types.NewBool(true),
		}), "flatVer2", "eagerZeroedThick", "nvme", 2, 2, true, "", "", "vm/vm_2-flat.vmdk"},
		{"delta disk has no flat file", disk(15000, 1, &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/vm-000001.vmdk"), DiskMode: "persistent",
			ThinProvisioned: types.NewBool(true),
			Parent:          &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: file("[ds1] vm/vm.vmdk")},
		}), "flatVer2", "thin", "sata", 0, 1, true, "", "", ""},
		{"seSparse on ide", disk(200, 0, &types.VirtualDiskSeSparseBackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/vm.vmdk"), DiskMode: "persistent", ChangeId: "52 bb/1",
		}), "seSparse", "thin", "ide", 1, 0, true, "52 bb/1", "", ""},
		{"sparseVer2 on buslogic", disk(1003, 0, &types.VirtualDiskSparseVer2BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/vm.vmdk"), DiskMode: "persistent",
		}), "sparseVer2", "thin", "buslogic", 3, 0, true, "", "", ""},
		{"virtual rdm", disk(1002, 1, &types.VirtualDiskRawDiskMappingVer1BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/rdm.vmdk"), CompatibilityMode: "virtualMode", DiskMode: "persistent",
		}), "rdmVirtual", "", "lsilogic-sas", 2, 1, true, "", "", ""},
		{"physical rdm", disk(1002, 2, &types.VirtualDiskRawDiskMappingVer1BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/rdmp.vmdk"), CompatibilityMode: "physicalMode", DiskMode: "independent_persistent",
		}), "rdmPhysical", "", "lsilogic-sas", 2, 2, false, "", "", ""},
		{"independent persistent", disk(1000, 1, &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/ind.vmdk"), DiskMode: "independent_persistent",
		}), "flatVer2", "thick", "pvscsi", 0, 1, false, "", "", "vm/ind-flat.vmdk"},
		{"independent nonpersistent", disk(1000, 2, &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/indn.vmdk"), DiskMode: "independent_nonpersistent",
		}), "flatVer2", "thick", "pvscsi", 0, 2, false, "", "", "vm/indn-flat.vmdk"},
		{"multi-writer", disk(1000, 3, &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/mw.vmdk"), DiskMode: "persistent", Sharing: "sharingMultiWriter",
			EagerlyScrub: types.NewBool(true),
		}), "flatVer2", "eagerZeroedThick", "pvscsi", 0, 3, false, "", "", "vm/mw-flat.vmdk"},
		{"persistent memory", disk(1000, 4, &types.VirtualDiskLocalPMemBackingInfo{
			VirtualDeviceFileBackingInfo: file("[pmem] vm/pm.vmdk"), DiskMode: "persistent",
		}), "localPMem", "", "pvscsi", 0, 4, false, "", "", ""},
		{"unknown controller key", disk(9999, 0, &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: file("[ds1] vm/x.vmdk"), DiskMode: "persistent", ThinProvisioned: types.NewBool(true),
		}), "flatVer2", "thin", "", 0, 0, true, "", "", "vm/x-flat.vmdk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			devices := append(slices.Clone(controllers), tt.disk)
			f := describeDisk(tt.disk, devices)
			if f.backingType != tt.backingType || f.provisioning != tt.provisioning || f.controllerType != tt.controller ||
				f.controllerBus != tt.bus || f.unitNumber != tt.unit || f.backupable != tt.backupable ||
				f.changeID != tt.changeID || f.uuid != tt.uuid {
				t.Errorf("facts = %+v", f)
			}
			if !f.backupable && f.reason == "" {
				t.Error("not backupable without a reason")
			}
			if f.backupable && f.reason != "" {
				t.Errorf("backupable with a reason %q", f.reason)
			}
			dataFile, ok := f.flatFile()
			if dataFile != tt.dataFile || ok != (tt.dataFile != "") {
				t.Errorf("flat file = %q %v, want %q", dataFile, ok, tt.dataFile)
			}
			d := f.apiDisk("ds1")
			if d.DiskID != "disk-2000" || d.Key != 2000 || d.CapacityBytes != 5<<30 || d.Label != "Hard disk 1" ||
				d.Datastore != "ds1" || d.Backupable != tt.backupable || d.NotBackupableReason != f.reason {
				t.Errorf("api disk = %+v", d)
			}
		})
	}

	// CapacityInKB is the fallback of old servers that leave CapacityInBytes unset.
	old := disk(1000, 0, &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: file("[ds1] a/a.vmdk")})
	old.CapacityInBytes, old.CapacityInKB = 0, 1024
	if f := describeDisk(old, controllers); f.capacity != 1<<20 {
		t.Errorf("capacity from KB = %d, want %d", f.capacity, 1<<20)
	}
}

func TestParseChangeID(t *testing.T) {
	tests := []struct {
		in        string
		uuid, seq string
		ok        bool
	}{
		{"52 de 0c 8b 4f 1a 2b 3c-9d 8e 7f 6a 5b 4c 3d 2b/17", "52 de 0c 8b 4f 1a 2b 3c-9d 8e 7f 6a 5b 4c 3d 2b", "17", true},
		{"abc/def/42", "abc/def", "42", true},
		{"*", "", "", false},
		{"", "", "", false},
		{"/17", "", "", false},
		{"52 de/", "", "", false},
		{"no-slash", "", "", false},
		{" /3", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			uuid, seq, ok := ParseChangeID(tt.in)
			if uuid != tt.uuid || seq != tt.seq || ok != tt.ok {
				t.Errorf("ParseChangeID(%q) = %q, %q, %v; want %q, %q, %v", tt.in, uuid, seq, ok, tt.uuid, tt.seq, tt.ok)
			}
		})
	}
}

func TestNormalizeExtents(t *testing.T) {
	tests := []struct {
		name     string
		in, want []Extent
	}{
		{"empty", nil, []Extent{}},
		{"sorted and merged", []Extent{{100, 10}, {0, 10}, {10, 5}, {105, 20}}, []Extent{{0, 15}, {100, 25}}},
		{"contained", []Extent{{0, 100}, {10, 5}}, []Extent{{0, 100}}},
		{"clipped to capacity", []Extent{{990, 100}, {2000, 5}}, []Extent{{990, 10}}},
		{"empty dropped", []Extent{{5, 0}, {7, -1}}, []Extent{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := normalizeExtents(slices.Clone(tt.in), 1000); !slices.Equal(got, tt.want) {
				t.Errorf("normalizeExtents(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseThumbprint(t *testing.T) {
	sha256 := "4C:3D:58:C2:80:EA:08:A0:67:53:79:A8:D5:3B:7C:77:6A:8A:40:EE:D1:80:4E:17:26:39:5B:D7:07:23:D4:D8"
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{sha256, sha256, true},
		{"4c3d58c280ea08a0675379a8d53b7c776a8a40eed1804e1726395bd70723d4d8", sha256, true},
		{" 52:6C:4E:88:1D:78:AE:12:1C:F3:BB:6C:5B:F4:E2:82:86:A7:08:AF ", "52:6C:4E:88:1D:78:AE:12:1C:F3:BB:6C:5B:F4:E2:82:86:A7:08:AF", true},
		{"4C:3D:58", "", false},
		{"zz" + sha256[2:], "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			tp, err := parseThumbprint(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("parseThumbprint(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if tt.ok && tp.String() != tt.want {
				t.Errorf("parseThumbprint(%q) = %s, want %s", tt.in, tp, tt.want)
			}
		})
	}
}
