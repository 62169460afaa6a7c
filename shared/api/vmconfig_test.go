package api

import (
	"errors"
	"strings"
	"testing"
)

func validVMConfig() VMConfig {
	ctrl := DeviceController{Key: 1000, Type: "pvscsi", BusNumber: 0}
	ide := DeviceController{Key: 200, Type: "ide", BusNumber: 0}
	return VMConfig{
		Version: VMConfigVersion, InstanceUUID: "5012abcd-1111-2222-3333-444455556666", Name: "db1",
		HardwareVersion: "vmx-21", GuestID: "otherLinux64Guest", Firmware: "efi", SecureBoot: true,
		NumCPU: 4, CoresPerSocket: 2, MemoryMB: 4096,
		CPUAllocation: &ResourceAllocation{Reservation: 0, Limit: -1, Shares: 4000, SharesLevel: "normal"},
		Controllers:   []VMController{{Key: 1000, Type: "pvscsi", BusNumber: 0, Sharing: "noSharing"}, {Key: 200, Type: "ide", BusNumber: 0}},
		Disks: []VMConfigDisk{{DiskID: "disk-2000", Key: 2000, CapacityBytes: 1 << 30, Controller: ctrl, UnitNumber: 0,
			Provisioning: "thin", Mode: "persistent", BackingType: "flatVer2", Datastore: "LocalDS_0"}},
		NICs: []VMNIC{{Key: 4000, AdapterType: "vmxnet3", BackingType: "distributed", Network: "DC0_DVPG0", PortgroupKey: "dvportgroup-11",
			SwitchUUID: "50 12 ab cd 11 11 22 22 33 33 44 44 55 55 66 66", MACAddress: "00:50:56:aa:bb:cc", AddressType: "assigned", Connected: true, StartConnected: true}},
		CDROMs:      []VMCDROM{{Key: 3000, Controller: ide, UnitNumber: 0, BackingType: "iso", ISOFile: "[LocalDS_0] iso/boot.iso"}},
		ExtraConfig: map[string]string{"bios.bootOrder": "hdd,cdrom", "ethernet0.pciSlotNumber": "192", "pciBridge4.present": "TRUE"},
	}
}

func TestVMConfigValidate(t *testing.T) {
	if c := validVMConfig(); c.Validate() != nil {
		t.Fatalf("valid config refused: %v", c.Validate())
	}
	for _, tc := range []struct {
		field string
		edit  func(c *VMConfig)
	}{
		{"version", func(c *VMConfig) { c.Version = 2 }},
		{"name", func(c *VMConfig) { c.Name = "db\x1b[2J" }},
		{"name", func(c *VMConfig) { c.Name = strings.Repeat("a", MaxNameLen+1) }},
		{"annotation", func(c *VMConfig) { c.Annotation = strings.Repeat("a", MaxAnnotationLen+1) }},
		{"annotation", func(c *VMConfig) { c.Annotation = "ok\u202etxt.exe" }},
		{"firmware", func(c *VMConfig) { c.Firmware = "coreboot" }},
		{"secure_boot", func(c *VMConfig) { c.Firmware = "bios" }},
		{"num_cpu", func(c *VMConfig) { c.NumCPU = 0 }},
		{"cores_per_socket", func(c *VMConfig) { c.CoresPerSocket = 8 }},
		{"memory_mb", func(c *VMConfig) { c.MemoryMB = MaxVMMemoryMB + 1 }},
		{"cpu_allocation.limit", func(c *VMConfig) { c.CPUAllocation.Limit = -2 }},
		{"disks[0].disk_id", func(c *VMConfig) { c.Disks[0].DiskID = "../x" }},
		{"disks[0].controller", func(c *VMConfig) { c.Disks[0].Controller.Key = 1001 }},
		{"disks[0].datastore", func(c *VMConfig) { c.Disks[0].Datastore = "ds\x00" }},
		{"nics[0].key", func(c *VMConfig) { c.NICs[0].Key = 2000 }},
		{"nics[0].mac_address", func(c *VMConfig) { c.NICs[0].MACAddress = "00:50:56:aa:bb" }},
		{"nics[0].adapter_type", func(c *VMConfig) { c.NICs[0].AdapterType = "rtl8139" }},
		{"nics[0].network", func(c *VMConfig) { c.NICs[0].Network = "net\nwork" }},
		{"nics", func(c *VMConfig) { c.NICs = make([]VMNIC, MaxVMConfigNICs+1) }},
		{"cdroms[0].iso_file", func(c *VMConfig) { c.CDROMs[0].ISOFile = "[LocalDS_0] ../../etc/passwd" }},
		{"extra_config.guestinfo.password", func(c *VMConfig) { c.ExtraConfig["guestinfo.password"] = "x" }},
		{"extra_config.bios.bootOrder", func(c *VMConfig) { c.ExtraConfig["bios.bootOrder"] = "hdd\r" }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			c := validVMConfig()
			tc.edit(&c)
			var fe *FieldError
			if err := c.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Validate() = %v, want a field error on %s", err, tc.field)
			}
		})
	}
}

func TestExtraConfigAllowed(t *testing.T) {
	for key, want := range map[string]bool{
		"bios.bootOrder": true, "uefi.secureBoot.enabled": true, "disk.EnableUUID": true,
		"ethernet0.pciSlotNumber": true, "scsi3.pciSlotNumber": true, "pciBridge7.functions": true,
		"guestinfo.userdata": false, "govcsim": false, "ethernet0.address": false, "pciBridge7.evil": false,
		"tools.syncTime": false, "ethernet0.pciSlotNumberX": false,
	} {
		if got := ExtraConfigAllowed(key); got != want {
			t.Errorf("ExtraConfigAllowed(%q) = %v, want %v", key, got, want)
		}
	}
}
