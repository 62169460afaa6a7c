package lab

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func TestInventoryChanges(t *testing.T) {
	spec := Spec{Datacenter: "Lab-DC", VMs: []VMSpec{
		{Name: "golden", Template: true, Disks: []DiskSpec{{Size: "16MiB", Fill: FillSparse, Data: "2MiB", Seed: 3}}},
		{Name: "app", CBT: true, CloneOf: "golden"},
		{Name: "cold", PoweredOff: true, Disks: []DiskSpec{{Key: 2005, Size: "8MiB"}, {Size: "8MiB", Mode: ModeIndependentNonpersistent}}},
	}}
	l := startLab(t, spec, Options{})
	c := login(t, l)
	ctx := t.Context()

	if _, err := find.NewFinder(c).Datacenter(ctx, "Lab-DC"); err != nil {
		t.Fatalf("datacenter Lab-DC: %v", err)
	}
	_, golden := findVM(t, c, "golden")
	if !golden.Config.Template || golden.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("golden: template=%v power=%s", golden.Config.Template, golden.Runtime.PowerState)
	}
	_, cold := findVM(t, c, "cold")
	if cold.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("cold is %s", cold.Runtime.PowerState)
	}
	coldDisks := disksOf(cold.Config.Hardware.Device)
	if coldDisks[2005] == nil || coldDisks[2000] == nil {
		t.Errorf("cold disks %v, want keys 2005 and 2000", keysOf(coldDisks))
	} else if m := coldDisks[2000].Backing.(*types.VirtualDiskFlatVer2BackingInfo).DiskMode; m != ModeIndependentNonpersistent {
		t.Errorf("cold disk 2000 mode %s", m)
	}

	// The clone has the template's disk, bytes and holes alike, but its own identity.
	gi, _ := l.VM("golden")
	ai, err := l.VM("app")
	if err != nil {
		t.Fatal(err)
	}
	if len(ai.Disks) != 1 || ai.Disks[0].CapacityBytes != 16<<20 || !ai.CBT || ai.PowerState != "poweredOn" {
		t.Fatalf("clone %+v", ai)
	}
	if ai.InstanceUUID == gi.InstanceUUID || ai.BIOSUUID == gi.BIOSUUID {
		t.Error("clone shares the template's UUIDs")
	}
	if !sameFile(t, gi.Disks[0].FlatPath, ai.Disks[0].FlatPath) {
		t.Error("clone's disk differs from the template's")
	}

	// AddVM while running, cloning a running VM.
	if err := l.AddVM(ctx, VMSpec{Name: "app2", CloneOf: "app", CBT: true}); err != nil {
		t.Fatalf("add vm: %v", err)
	}
	a2, _ := l.VM("app2")
	if !sameFile(t, ai.Disks[0].FlatPath, a2.Disks[0].FlatPath) {
		t.Error("added clone's disk differs")
	}
	if err := l.AddVM(ctx, VMSpec{Name: "app2", Disks: []DiskSpec{{Size: "1MiB"}}}); !errors.Is(err, ErrVMExists) {
		t.Errorf("adding app2 twice: %v, want ErrVMExists", err)
	}

	// Resize: vSphere sees the new capacity, the flat file and the descriptor grow.
	if err := l.ResizeDisk("app2", "disk-2000", 40_000_000); err != nil {
		t.Fatalf("resize: %v", err)
	}
	vm2, props2 := findVM(t, c, "app2")
	if got := disksOf(props2.Config.Hardware.Device)[2000].CapacityInBytes; got != 39<<20 {
		t.Errorf("capacity after resize %d, want %d (40e6 rounded up to a MiB)", got, 39<<20)
	}
	if fi, err := os.Stat(a2.Disks[0].FlatPath); err != nil || fi.Size() != 39<<20 {
		t.Errorf("flat file after resize: %v", err)
	}
	desc := folderGet(t, c, l, a2.Disks[0].DatastorePath, "")
	if !bytes.Contains(desc, []byte("RW 79872 VMFS")) {
		t.Errorf("descriptor after resize:\n%s", desc)
	}
	if err := l.ResizeDisk("app2", "disk-2000", 1<<20); !errors.Is(err, ErrShrink) {
		t.Errorf("shrink: %v, want ErrShrink", err)
	}

	// Rename: discovery sees the new name; the lab follows.
	if err := l.RenameVM("app2", "app3"); err != nil {
		t.Fatalf("rename: %v", err)
	}
	if _, props := findVM(t, c, "app3"); props.Self != vm2.Reference() {
		t.Error("renamed VM has another identity")
	}
	if _, err := l.VM("app2"); !errors.Is(err, ErrVMNotFound) {
		t.Errorf("old name: %v, want ErrVMNotFound", err)
	}
	if err := l.RenameVM("app3", "app"); !errors.Is(err, ErrVMExists) {
		t.Errorf("rename onto an existing name: %v, want ErrVMExists", err)
	}

	// Remove a disk, then the VM: files go, the VM leaves the inventory.
	before, _ := l.VM("cold")
	if err := l.RemoveDisk("cold", "disk-2005"); err != nil {
		t.Fatalf("remove disk: %v", err)
	}
	ci, _ := l.VM("cold")
	if len(ci.Disks) != 1 || ci.Disks[0].Key != 2000 {
		t.Errorf("cold disks after removal: %+v", ci.Disks)
	}
	if _, err := os.Stat(before.Disks[0].FlatPath); before.Disks[0].Key != 2005 || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed disk %d: file %s: %v", before.Disks[0].Key, before.Disks[0].FlatPath, err)
	}
	if err := l.RemoveDisk("cold", "disk-2005"); !errors.Is(err, ErrDiskNotFound) {
		t.Errorf("removing a removed disk: %v", err)
	}
	if err := l.RemoveVM("app3"); err != nil {
		t.Fatalf("remove vm: %v", err)
	}
	if _, err := os.Stat(a2.Disks[0].FlatPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed VM's disk file: %v", err)
	}
	if names := vmNames(t, c); len(names) != 3 {
		t.Errorf("VMs after removal: %v, want golden, app, cold", names)
	}
	if _, err := vm2.PowerState(ctx); err == nil {
		t.Error("removed VM still answers")
	}
}

func TestAddVMValidates(t *testing.T) {
	l := startLab(t, Spec{VMs: []VMSpec{{Name: "a", Disks: []DiskSpec{{Size: "1MiB"}}}}}, Options{})
	tests := []struct {
		name string
		spec VMSpec
		want error
	}{
		{"unknown clone source", VMSpec{Name: "b", CloneOf: "nope"}, ErrInvalidSpec},
		{"bad fill", VMSpec{Name: "b", Disks: []DiskSpec{{Size: "1MiB", Fill: "confetti"}}}, ErrInvalidSpec},
		{"slash in name", VMSpec{Name: "a/b"}, ErrInvalidSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := l.AddVM(t.Context(), tt.spec); !errors.Is(err, tt.want) {
				t.Errorf("AddVM: %v, want %v", err, tt.want)
			}
		})
	}
	if vms, _ := l.VMs(); len(vms) != 1 {
		t.Errorf("failed AddVM calls left %d VMs", len(vms))
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

func keysOf(m map[int32]*types.VirtualDisk) []int32 {
	var out []int32
	for k := range m {
		out = append(out, k)
	}
	return out
}

func vmNames(t *testing.T, c *vim25.Client) []string {
	t.Helper()
	ctx := t.Context()
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = v.Destroy(ctx) }()
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name"}, &vms); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, vm := range vms {
		names = append(names, vm.Name)
	}
	return names
}
