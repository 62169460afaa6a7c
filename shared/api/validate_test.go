package api

import (
	"strings"
	"testing"
)

func goodInventory() Inventory {
	return Inventory{
		Source: Source{Name: "vc1", URL: "https://vc/sdk"},
		VMs: []VM{{InstanceUUID: "u1", Name: "pgtest1", Disks: []Disk{
			{Key: 2000, DiskID: "disk-2000", CapacityBytes: 102e9},
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
			err := inv.Validate()
			fe, ok := err.(*FieldError)
			if !ok || fe.Field != tc.field {
				t.Fatalf("err %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
}
