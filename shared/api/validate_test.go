package api

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// The UUIDs are of the forms vcsim and the lab produce: lowercase hex, 8-4-4-4-12.
const (
	testSourceUUID = "0ba3d9a4-8f39-4a3c-9d36-2c1b6f1e7a10"
	testVMUUID     = "5012abcd-1111-2222-3333-444455556666"
	testBIOSUUID   = "4212abcd-1111-2222-3333-444455556666"
)

func goodInventory() Inventory {
	return Inventory{
		Source: Source{Name: "vc1", URL: "https://vc/sdk", APIType: "VirtualCenter", Version: "8.0.3.0", InstanceUUID: testSourceUUID},
		VMs: []VM{{InstanceUUID: testVMUUID, BIOSUUID: testBIOSUUID, MoRef: "vm-42", Name: "pgtest1", PowerState: "poweredOn",
			GuestOS: "Other Linux (64-bit)", Datacenter: "DC0", Cluster: "C0", Host: "esx1.example", Folder: "/DC0/vm/prod",
			Disks: []Disk{
				{Key: 2000, DiskID: "disk-2000", Label: "Hard disk 1", CapacityBytes: 102e9, Datastore: "LocalDS_0",
					BackingFile: "[LocalDS_0] pgtest1/pgtest1.vmdk", BackingType: "flatVer2", Provisioning: "thin",
					ControllerType: "pvscsi", DiskMode: "persistent", ChangeID: "52 de c0 d9 98 47 31 f3-a5 ab 3c 1d 6a 9a 8b 5f/4"},
				{Key: 2001, DiskID: "disk-2001", CapacityBytes: 5e9},
			}}},
	}
}

func TestInventoryValidate(t *testing.T) {
	if inv := goodInventory(); inv.Validate() != nil {
		t.Fatalf("good inventory refused: %v", inv.Validate())
	}
	for _, tc := range []struct {
		field  string
		mutate func(*Inventory)
	}{
		{"source.name", func(i *Inventory) { i.Source.Name = "" }},
		{"vms[0].instance_uuid", func(i *Inventory) { i.VMs[0].InstanceUUID = " " }},
		{"vms[0].name", func(i *Inventory) { i.VMs[0].Name = strings.Repeat("x", 256) }},
		{"vms[1].instance_uuid", func(i *Inventory) { i.VMs = append(i.VMs, i.VMs[0]) }},
		{"vms[0].disks[0].capacity_bytes", func(i *Inventory) { i.VMs[0].Disks[0].CapacityBytes = -1 }},
		{"vms[0].disks[1].key", func(i *Inventory) { i.VMs[0].Disks[1].Key = 2000; i.VMs[0].Disks[1].DiskID = "disk-2000" }},
		{"vms[0].disks[0].disk_id", func(i *Inventory) { i.VMs[0].Disks[0].DiskID = "" }},
		{"vms[0].memory_mb", func(i *Inventory) { i.VMs[0].MemoryMB = -5 }},
		{"vms[0].guest_os", func(i *Inventory) { i.VMs[0].GuestOS = "a\x00b" }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			inv := goodInventory()
			tc.mutate(&inv)
			wantFieldError(t, inv.Validate(), tc.field)
		})
	}
}

func wantFieldError(t *testing.T, err error, field string) {
	t.Helper()
	fe, ok := err.(*FieldError)
	if !ok || fe.Field != field {
		t.Fatalf("err %v, want a FieldError on %s", err, field)
	}
}

// textFields points at every free-text field of an inventory, by its name in errors.
func textFields(i *Inventory) map[string]*string {
	vm, d := &i.VMs[0], &i.VMs[0].Disks[0]
	return map[string]*string{
		"source.name": &i.Source.Name, "source.url": &i.Source.URL, "source.api_type": &i.Source.APIType,
		"source.version": &i.Source.Version, "source.instance_uuid": &i.Source.InstanceUUID,
		"vms[0].instance_uuid": &vm.InstanceUUID, "vms[0].bios_uuid": &vm.BIOSUUID, "vms[0].moref": &vm.MoRef,
		"vms[0].name": &vm.Name, "vms[0].power_state": &vm.PowerState, "vms[0].guest_os": &vm.GuestOS,
		"vms[0].datacenter": &vm.Datacenter, "vms[0].cluster": &vm.Cluster, "vms[0].host": &vm.Host, "vms[0].folder": &vm.Folder,
		"vms[0].disks[0].disk_id": &d.DiskID, "vms[0].disks[0].label": &d.Label, "vms[0].disks[0].datastore": &d.Datastore,
		"vms[0].disks[0].backing_file": &d.BackingFile, "vms[0].disks[0].backing_type": &d.BackingType,
		"vms[0].disks[0].provisioning": &d.Provisioning, "vms[0].disks[0].controller_type": &d.ControllerType,
		"vms[0].disks[0].disk_mode": &d.DiskMode, "vms[0].disks[0].not_backupable_reason": &d.NotBackupableReason,
		"vms[0].disks[0].change_id": &d.ChangeID,
	}
}

// Terminal escapes and bidi controls in any string an agent sends would let it forge what an
// operator reads (a fake table row, a reordered name): every free-text field refuses them.
func TestInventoryRefusesControlAndBidiCharacters(t *testing.T) {
	bad := []rune{0x1b, 0x07, '\r', '\n', '\t', 0x00, 0x7f, 0x85, 0x9b, 0x202a, 0x202e, 0x2066, 0x2069, 0x200e, 0x200f, 0x061c}
	for field := range textFields(&Inventory{VMs: []VM{{Disks: []Disk{{}}}}}) {
		for _, r := range bad {
			t.Run(fmt.Sprintf("%s/%U", field, r), func(t *testing.T) {
				inv := goodInventory()
				p := textFields(&inv)[field]
				*p = string(r) + *p // in front: a UUID or an id stays otherwise well-formed
				wantFieldError(t, inv.Validate(), field)
			})
		}
	}
}

// What real vCenters send stays valid: names with spaces, non-ASCII letters and slashes.
func TestInventoryAcceptsRealNames(t *testing.T) {
	inv := goodInventory()
	inv.VMs[0].Name = "Ünïcode VM / prod (copy 2) — 数据库"
	inv.VMs[0].Folder = "/DC 0/vm/Prod VMs/Ünïcode"
	inv.VMs[0].Disks[0].Datastore = "Datastore (1) ÄÖ"
	inv.VMs[0].Disks[0].BackingFile = "[Datastore (1) ÄÖ] Ünïcode VM %2f prod/Ünïcode VM.vmdk"
	inv.VMs[0].Disks[0].Label = "Hard disk 1"
	if err := inv.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Identifiers are checked for their vSphere form when they arrive, not when a path or a
// statement built from them fails later.
func TestInventoryChecksIdentifierFormats(t *testing.T) {
	for _, tc := range []struct {
		field, value string
	}{
		{"source.instance_uuid", "../../x"},
		{"source.instance_uuid", "0ba3d9a4-8f39-4a3c-9d36-2c1b6f1e7a1"},
		{"source.url", "vc.example/sdk"},
		{"source.url", "ftp://vc.example/sdk"},
		{"source.api_type", "Hypervisor"},
		{"source.version", "8.0 beta"},
		{"vms[0].instance_uuid", "../../x"},
		{"vms[0].instance_uuid", "5012-aaaa"},
		{"vms[0].instance_uuid", "5012abcd111122223333444455556666"},
		{"vms[0].instance_uuid", "5012ABCD-1111-2222-3333-444455556666"},
		{"vms[0].instance_uuid", "5012abcd-1111-2222-3333-44445555666g"},
		{"vms[0].bios_uuid", "42 12 ab cd 11 11 22 22-33 33 44 44 55 55 66 66"},
		{"vms[0].moref", "../vm-42"},
		{"vms[0].moref", "vm 42"},
		{"vms[0].power_state", "exploded"},
		{"vms[0].disks[0].backing_file", "/etc/passwd"},
		{"vms[0].disks[0].backing_file", "[LocalDS_0] ../../etc/passwd"},
		{"vms[0].disks[0].backing_file", "[LocalDS_0 pgtest1/pgtest1.vmdk"},
		{"vms[0].disks[0].backing_type", "flat Ver2"},
		{"vms[0].disks[0].provisioning", "fat"},
		{"vms[0].disks[0].controller_type", "SCSI controller 0"},
		{"vms[0].disks[0].disk_mode", "independent persistent"},
		{"vms[0].disks[0].datastore", "ds]x"},
	} {
		t.Run(tc.field+"="+tc.value, func(t *testing.T) {
			inv := goodInventory()
			*textFields(&inv)[tc.field] = tc.value
			wantFieldError(t, inv.Validate(), tc.field)
		})
	}
	for _, tc := range []struct {
		field  string
		mutate func(*Inventory)
	}{
		{"vms[0].disks[0].key", func(i *Inventory) { i.VMs[0].Disks[0].Key, i.VMs[0].Disks[0].DiskID = 0, "disk-0" }},
		{"vms[0].disks[0].key", func(i *Inventory) { i.VMs[0].Disks[0].Key, i.VMs[0].Disks[0].DiskID = -5, "disk--5" }},
		{"vms[0].disks[0].disk_id", func(i *Inventory) { i.VMs[0].Disks[0].DiskID = "disk-02000" }},
		{"vms[0].disks[0].controller_bus", func(i *Inventory) { i.VMs[0].Disks[0].ControllerBus = -1 }},
		{"vms[0].disks[0].unit_number", func(i *Inventory) { i.VMs[0].Disks[0].UnitNumber = -1 }},
		{"vms[0].disks[0].capacity_bytes", func(i *Inventory) { i.VMs[0].Disks[0].CapacityBytes = MaxDiskCapacityBytes + 1 }},
		{"vms[0].num_cpu", func(i *Inventory) { i.VMs[0].NumCPU = MaxVMCPUs + 1 }},
		{"vms[0].memory_mb", func(i *Inventory) { i.VMs[0].MemoryMB = MaxVMMemoryMB + 1 }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			inv := goodInventory()
			tc.mutate(&inv)
			wantFieldError(t, inv.Validate(), tc.field)
		})
	}
	// What vcsim, the lab and real vCenters and ESXi hosts send.
	for _, mutate := range []func(*Inventory){
		func(i *Inventory) { i.VMs[0].MoRef = "42" }, // ESXi's host agent numbers its VMs
		func(i *Inventory) { i.VMs[0].BIOSUUID = "" },
		func(i *Inventory) { i.VMs[0].PowerState = "suspended" },
		func(i *Inventory) { i.Source.APIType, i.Source.URL = "HostAgent", "https://esx1.example:443/sdk" },
		func(i *Inventory) { i.VMs[0].Disks[0].BackingFile = "[] /vmfs/volumes/5e1f.../vm/vm.vmdk" },
		func(i *Inventory) {
			i.VMs[0].Disks[0].BackingFile, i.VMs[0].Disks[0].Datastore = "[vsanDatastore] 5c6f1d2e-aaaa/vm.vmdk", "vsanDatastore"
		},
		func(i *Inventory) { i.VMs[0].Disks[0].BackingType = "partitionedRawDiskVer2" },
		func(i *Inventory) { i.VMs[0].Disks[0].DiskMode = "independent_nonpersistent" },
		func(i *Inventory) { i.VMs[0].Disks[0].ControllerType = "lsilogic-sas" },
		func(i *Inventory) { i.VMs[0].Disks[0].Provisioning = "eagerZeroedThick" },
		func(i *Inventory) { i.VMs[0].Disks[0].Key, i.VMs[0].Disks[0].DiskID = 31000, "disk-31000" }, // NVMe
	} {
		inv := goodInventory()
		mutate(&inv)
		if err := inv.Validate(); err != nil {
			t.Errorf("valid inventory refused: %v", err)
		}
	}
}

// The documented limits of one inventory are enforced, naming the limit.
func TestInventoryLimits(t *testing.T) {
	inv := goodInventory()
	inv.VMs = make([]VM, MaxInventoryVMs+1)
	err := inv.Validate()
	wantFieldError(t, err, "vms")
	if !strings.Contains(err.Error(), fmt.Sprint(MaxInventoryVMs)) {
		t.Fatalf("%v does not name the limit", err)
	}
	inv = goodInventory()
	for k := range MaxDisksPerVM + 1 {
		key := int32(3000 + k)
		inv.VMs[0].Disks = append(inv.VMs[0].Disks, Disk{Key: key, DiskID: DiskIDForKey(key)})
	}
	err = inv.Validate()
	wantFieldError(t, err, "vms[0].disks")
	if !strings.Contains(err.Error(), fmt.Sprint(MaxDisksPerVM)) {
		t.Fatalf("%v does not name the limit", err)
	}
}

// Free text an agent sends (a job's error, its notes) is stored and shown without anything a
// terminal would act on, within its limit, and cut only between characters.
func TestDisplayText(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"snapshot failed: disk locked", 100, "snapshot failed: disk locked"},
		{"Größe überschritten ✓", 100, "Größe überschritten ✓"},
		{"line one\nline two\tand\r", 100, "line one line two and "},
		{"x\x1b]0;pwned\x07\x1b[2J", 100, "x\uFFFD]0;pwned\uFFFD\uFFFD[2J"},
		{"evil\u202etxt.exe \u2066x\u2069 \u0085", 100, "evil\uFFFDtxt.exe \uFFFDx\uFFFD \uFFFD"},
		{"bad \xff\xfe bytes", 100, "bad \uFFFD bytes"},
		{"aaé", 3, "aa"}, // é is two bytes: not split
		{"abcdef", 4, "abcd"},
		{"", 10, ""},
	} {
		got := DisplayText(c.in, c.max)
		if got != c.want {
			t.Errorf("DisplayText(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
		if !utf8.ValidString(got) || len(got) > c.max || strings.IndexFunc(got, UnsafeRune) >= 0 {
			t.Errorf("DisplayText(%q, %d) = %q: not valid, too long or unsafe", c.in, c.max, got)
		}
	}
}
