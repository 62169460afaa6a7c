package instantrecovery

import (
	"errors"
	"strings"
	"testing"

	"github.com/sendense/sendense/shared/api"
)

func TestGuestOS(t *testing.T) {
	for id, want := range map[string]string{
		"windows2019srv_64Guest": "windows2019srv-64",
		"otherLinux64Guest":      "otherlinux-64",
		"ubuntu64Guest":          "ubuntu-64",
		"rhel8_64Guest":          "rhel8-64",
		"winNetStandardGuest":    "winnetstandard",
		"":                       "other",
	} {
		if got := guestOS(id); got != want {
			t.Errorf("guestOS(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestVMX(t *testing.T) {
	sas := api.DeviceController{Key: 1000, Type: "lsilogic-sas", BusNumber: 0}
	sata := api.DeviceController{Key: 15000, Type: "sata", BusNumber: 0}
	cfg := api.VMConfig{
		HardwareVersion: "vmx-19", GuestID: "windows2019srv_64Guest", Firmware: "efi", SecureBoot: true,
		NumCPU: 4, CoresPerSocket: 2, MemoryMB: 8192,
		Controllers: []api.VMController{{Key: 1000, Type: "lsilogic-sas", BusNumber: 0, Sharing: "noSharing"}, {Key: 15000, Type: "sata"}},
		NICs: []api.VMNIC{
			{AdapterType: "vmxnet3", Network: "Prod", StartConnected: true},
			{AdapterType: "pcnet32", Network: "Backup"},
		},
		ExtraConfig: map[string]string{"disk.EnableUUID": "TRUE", "a.first": "1"},
	}
	disks := []vmxDisk{{DiskID: "disk-2000", File: "w.vmdk", Controller: sas, Unit: 0}, {DiskID: "disk-16000", File: "w_1.vmdk", Controller: sata, Unit: 1}}
	b, err := VMX(cfg, `w "1" | #x`, "note\nline two", disks, map[string]string{"Prod": "Recovery"})
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{
		`.encoding = "UTF-8"`, `virtualHW.version = "19"`, `displayName = "w |221|22 |7C |23x"`, `annotation = "note|0Aline two"`,
		`guestOS = "windows2019srv-64"`, `numvcpus = "4"`, `cpuid.coresPerSocket = "2"`, `memSize = "8192"`,
		`firmware = "efi"`, `uefi.secureBoot.enabled = "TRUE"`,
		`scsi0.virtualDev = "lsisas1068"`, `scsi0:0.deviceType = "scsi-hardDisk"`, `scsi0:0.fileName = "w.vmdk"`,
		`sata0.present = "TRUE"`, `sata0:1.fileName = "w_1.vmdk"`,
		`ethernet0.virtualDev = "vmxnet3"`, `ethernet0.networkName = "Recovery"`, `ethernet0.addressType = "generated"`, `ethernet0.startConnected = "TRUE"`,
		`ethernet1.virtualDev = "vlance"`, `ethernet1.networkName = "Backup"`, `ethernet1.startConnected = "FALSE"`,
		`disk.EnableUUID = "TRUE"`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("the .vmx lacks %s", want)
		}
	}
	if strings.Contains(got, "sata0:1.deviceType") {
		t.Error("a SATA disk names a SCSI device type")
	}
	if strings.Index(got, "a.first") > strings.Index(got, "disk.EnableUUID") {
		t.Error("extra configuration is not in key order")
	}
	if strings.Count(got, "\n") != strings.Count(got, " = ") {
		t.Errorf("a value spans lines:\n%s", got)
	}

	bad := cfg
	bad.Controllers = []api.VMController{{Key: 1000, Type: "floppy"}}
	if _, err := VMX(bad, "w", "", disks, nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("an unknown controller: %v, want ErrUnsupported", err)
	}
	bad = cfg
	bad.ExtraConfig = map[string]string{"bad key": "x"}
	if _, err := VMX(bad, "w", "", disks, nil); err == nil {
		t.Fatal("a key with a space was written")
	}
}
