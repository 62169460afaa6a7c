package vsphere

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/api"
)

// findVM returns a simulator VM by inventory path through the admin client.
func findVM(t *testing.T, admin *govmomi.Client, path string) *object.VirtualMachine {
	t.Helper()
	vm, err := find.NewFinder(admin.Client).VirtualMachine(context.Background(), path)
	if err != nil {
		t.Fatalf("find %s: %v", path, err)
	}
	return vm
}

// vmByName picks a VM out of an inventory.
func vmByName(t *testing.T, inv api.Inventory, name string) api.VM {
	t.Helper()
	i := slices.IndexFunc(inv.VMs, func(vm api.VM) bool { return vm.Name == name })
	if i < 0 {
		t.Fatalf("vm %s not in inventory (%d vms)", name, len(inv.VMs))
	}
	return inv.VMs[i]
}

func vmNames(inv api.Inventory) []string {
	var names []string
	for _, vm := range inv.VMs {
		names = append(names, vm.Name)
	}
	return names
}

// TestInventoryMatchesSimulator checks every VM of the default vCenter model against what a
// plain govmomi client reads for it, and the fields that do not come from the VM itself
// (source, cluster, host names, folder path, datastore name).
func TestInventoryMatchesSimulator(t *testing.T) {
	s := startSim(t, simulator.VPX())
	admin := s.admin(t)
	c := s.connect(t)

	inv, err := c.Inventory(t.Context())
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	wantNames := []string{"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1", "DC0_H0_VM0", "DC0_H0_VM1"}
	if got := vmNames(inv); !slices.Equal(got, wantNames) {
		t.Fatalf("vms = %v, want %v", got, wantNames)
	}
	about := admin.ServiceContent.About
	wantSource := api.Source{Name: "vc1", URL: s.url, APIType: "VirtualCenter", Version: about.ApiVersion, InstanceUUID: about.InstanceUuid}
	if inv.Source != wantSource {
		t.Errorf("source = %+v, want %+v", inv.Source, wantSource)
	}
	if inv.CollectedAt.IsZero() {
		t.Error("collected_at is zero")
	}
	// What the simulator reports is what a vCenter reports: the hub's checks accept it.
	if err := inv.Validate(); err != nil {
		t.Errorf("the hub would refuse this inventory: %v", err)
	}
	if !api.ValidUUID(inv.Source.InstanceUUID) {
		t.Errorf("source instance uuid %q is not a vSphere UUID", inv.Source.InstanceUUID)
	}

	ctx := t.Context()
	for _, got := range inv.VMs {
		t.Run(got.Name, func(t *testing.T) {
			vm := findVM(t, admin, "/DC0/vm/"+got.Name)
			var m mo.VirtualMachine
			if err := vm.Properties(ctx, vm.Reference(), []string{"config", "runtime"}, &m); err != nil {
				t.Fatal(err)
			}
			host, err := vm.HostSystem(ctx)
			if err != nil {
				t.Fatal(err)
			}
			hostName, err := host.ObjectName(ctx)
			if err != nil {
				t.Fatal(err)
			}
			wantCluster := ""
			if slices.Contains([]string{"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}, got.Name) {
				wantCluster = "DC0_C0"
			}
			checks := []struct {
				field     string
				got, want any
			}{
				{"instance_uuid", got.InstanceUUID, m.Config.InstanceUuid},
				{"bios_uuid", got.BIOSUUID, m.Config.Uuid},
				{"moref", got.MoRef, vm.Reference().Value},
				{"power_state", got.PowerState, string(m.Runtime.PowerState)},
				{"guest_os", got.GuestOS, m.Config.GuestFullName},
				{"num_cpu", got.NumCPU, int(m.Config.Hardware.NumCPU)},
				{"memory_mb", got.MemoryMB, int64(m.Config.Hardware.MemoryMB)},
				{"datacenter", got.Datacenter, "DC0"},
				{"cluster", got.Cluster, wantCluster},
				{"host", got.Host, hostName},
				{"folder", got.Folder, "/DC0/vm"},
				{"template", got.Template, false},
				{"cbt_enabled", got.CBTEnabled, false},
				{"disks", len(got.Disks), 1},
			}
			for _, ch := range checks {
				if ch.got != ch.want {
					t.Errorf("%s = %v, want %v", ch.field, ch.got, ch.want)
				}
			}
			if len(got.Disks) != 1 {
				return
			}
			d := got.Disks[0]
			want := api.Disk{
				Key: 204, DiskID: "disk-204", Label: "disk-202-0", CapacityBytes: 10 << 30,
				Datastore: "LocalDS_0", BackingFile: "[LocalDS_0] " + got.Name + "/disk1.vmdk",
				BackingType: "flatVer2", Provisioning: "thin", ControllerType: "pvscsi",
				ControllerBus: 0, UnitNumber: 0, DiskMode: "persistent", Backupable: true,
			}
			if d != want {
				t.Errorf("disk =\n %+v, want\n %+v", d, want)
			}
		})
	}
}

// TestInventoryDiskVariants reconfigures simulator VMs into the cases discovery must tell
// apart: independent disks, a second controller with an eager-zeroed disk, a template, CBT
// with a change ID.
func TestInventoryDiskVariants(t *testing.T) {
	s := startSim(t, simulator.VPX())
	admin := s.admin(t)
	c := s.connect(t)
	ctx := t.Context()

	// DC0_H0_VM0: existing disk independent, plus an eager-zeroed thick disk on a new
	// LSI Logic SAS controller (bus 1), CBT on with a change ID on the first disk.
	vm := findVM(t, admin, "/DC0/vm/DC0_H0_VM0")
	devices, err := vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	disk := devices.SelectByType((*types.VirtualDisk)(nil))[0].(*types.VirtualDisk)
	backing := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	backing.DiskMode = string(types.VirtualDiskModeIndependent_persistent)
	backing.ChangeId = "52 aa bb cc dd ee ff 00-11 22 33 44 55 66 77 88/7"
	if err := vm.EditDevice(ctx, disk); err != nil {
		t.Fatalf("edit disk: %v", err)
	}
	ctrl, err := devices.CreateSCSIController("lsilogic-sas")
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.AddDevice(ctx, ctrl); err != nil {
		t.Fatalf("add controller: %v", err)
	}
	devices, err = vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sas := devices.SelectByType((*types.VirtualLsiLogicSASController)(nil))[0].(types.BaseVirtualController)
	dsRef := *backing.Datastore
	thick := devices.CreateDisk(sas, dsRef, "[LocalDS_0] DC0_H0_VM0/data.vmdk")
	thick.CapacityInKB = 5 << 20 // 5 GiB
	thick.Backing.(*types.VirtualDiskFlatVer2BackingInfo).ThinProvisioned = types.NewBool(false)
	thick.Backing.(*types.VirtualDiskFlatVer2BackingInfo).EagerlyScrub = types.NewBool(true)
	unit := int32(3)
	thick.UnitNumber = &unit
	if err := vm.AddDevice(ctx, thick); err != nil {
		t.Fatalf("add disk: %v", err)
	}
	task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(true)})
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("enable cbt: %v", err)
	}

	// DC0_H0_VM1 becomes a template.
	tmpl := findVM(t, admin, "/DC0/vm/DC0_H0_VM1")
	if task, err := tmpl.PowerOff(ctx); err != nil || task.Wait(ctx) != nil {
		t.Fatalf("power off: %v", err)
	}
	if err := tmpl.MarkAsTemplate(ctx); err != nil {
		t.Fatalf("mark as template: %v", err)
	}

	inv, err := c.Inventory(ctx)
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	if err := inv.Validate(); err != nil {
		t.Errorf("the hub would refuse this inventory: %v", err)
	}

	got := vmByName(t, inv, "DC0_H0_VM0")
	if !got.CBTEnabled {
		t.Error("cbt_enabled = false after enabling it")
	}
	if len(got.Disks) != 2 {
		t.Fatalf("disks = %+v, want 2", got.Disks)
	}
	first, second := got.Disks[0], got.Disks[1]
	if first.Backupable || first.NotBackupableReason == "" || first.DiskMode != "independent_persistent" {
		t.Errorf("independent disk: backupable=%v reason=%q mode=%q, want not backupable with a reason",
			first.Backupable, first.NotBackupableReason, first.DiskMode)
	}
	if first.ChangeID != backing.ChangeId {
		t.Errorf("change_id = %q, want %q", first.ChangeID, backing.ChangeId)
	}
	wantSecond := api.Disk{
		Key: second.Key, DiskID: api.DiskIDForKey(second.Key), Label: second.Label, CapacityBytes: 5 << 30,
		Datastore: "LocalDS_0", BackingFile: "[LocalDS_0] DC0_H0_VM0/data.vmdk", BackingType: "flatVer2",
		Provisioning: "eagerZeroedThick", ControllerType: "lsilogic-sas", ControllerBus: 1, UnitNumber: 3,
		DiskMode: "persistent", Backupable: true,
	}
	if second != wantSecond {
		t.Errorf("added disk =\n %+v, want\n %+v", second, wantSecond)
	}
	if second.Key <= first.Key {
		t.Errorf("disks not ordered by key: %d, %d", first.Key, second.Key)
	}

	tv := vmByName(t, inv, "DC0_H0_VM1")
	if !tv.Template || tv.PowerState != "poweredOff" {
		t.Errorf("template vm: template=%v power=%s, want true poweredOff", tv.Template, tv.PowerState)
	}
	if other := vmByName(t, inv, "DC0_C0_RP0_VM0"); other.Template || other.CBTEnabled {
		t.Errorf("untouched vm: template=%v cbt=%v, want false false", other.Template, other.CBTEnabled)
	}
}

// TestInventoryDatacenters uses two datacenters, one of them inside a folder, and the
// datacenters filter by name and by path.
func TestInventoryDatacenters(t *testing.T) {
	m := simulator.VPX()
	m.Datacenter = 2
	m.Folder = 1 // DC1 is placed under folder F0
	s := startSim(t, m)

	all := s.connect(t)
	inv, err := all.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	perDC := map[string]int{}
	for _, vm := range inv.VMs {
		perDC[vm.Datacenter]++
	}
	if perDC["DC0"] != 4 || perDC["DC1"] != 4 || len(perDC) != 2 {
		t.Fatalf("vms per datacenter = %v, want 4 in DC0 and 4 in DC1", perDC)
	}
	dc1vm := vmByName(t, inv, "DC1_H0_VM0")
	if dc1vm.Folder != "/F0/DC1/vm/F0" {
		t.Errorf("folder of a vm in a foldered datacenter = %q, want /F0/DC1/vm/F0", dc1vm.Folder)
	}
	dc0vm := vmByName(t, inv, "DC0_H0_VM0")

	tests := []struct {
		name    string
		filter  []string
		wantDCs []string
		wantErr error
	}{
		{"by name", []string{"DC1"}, []string{"DC1"}, nil},
		{"by path", []string{"/F0/DC1"}, []string{"DC1"}, nil},
		{"both", []string{"DC0", "F0/DC1"}, []string{"DC0", "DC1"}, nil},
		{"unknown", []string{"DC0", "DC9"}, nil, ErrDatacenterNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := s.connect(t, func(cfg *Config) { cfg.Datacenters = tt.filter })
			inv, err := c.Inventory(t.Context())
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("inventory error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			var dcs []string
			for _, vm := range inv.VMs {
				if !slices.Contains(dcs, vm.Datacenter) {
					dcs = append(dcs, vm.Datacenter)
				}
			}
			if !slices.Equal(dcs, tt.wantDCs) {
				t.Errorf("datacenters in inventory = %v, want %v", dcs, tt.wantDCs)
			}
			// FindVM honours the same filter.
			_, err = c.FindVM(t.Context(), dc0vm.InstanceUUID)
			if wantFound := slices.Contains(tt.wantDCs, "DC0"); wantFound != (err == nil) {
				t.Errorf("FindVM(DC0 vm) error = %v, want found=%v", err, wantFound)
			}
			if err != nil && !errors.Is(err, ErrVMNotFound) {
				t.Errorf("FindVM error = %v, want ErrVMNotFound", err)
			}
		})
	}
}

// TestInventoryContinuation makes the property collector answer two objects at a time, so
// discovery must follow continuation tokens, and checks nothing is lost.
func TestInventoryContinuation(t *testing.T) {
	m := simulator.VPX()
	m.Datacenter = 2
	s := startSim(t, m)
	c := s.connect(t)
	whole, err := c.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c.pageSize = 2
	paged, err := c.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(whole.VMs) != 8 || len(paged.VMs) != len(whole.VMs) {
		t.Fatalf("paged inventory has %d vms, whole %d, want 8", len(paged.VMs), len(whole.VMs))
	}
	for i := range whole.VMs {
		w, p := whole.VMs[i], paged.VMs[i]
		if w.InstanceUUID != p.InstanceUUID || w.Host != p.Host || w.Cluster != p.Cluster || w.Folder != p.Folder ||
			len(p.Disks) != 1 || p.Disks[0] != w.Disks[0] {
			t.Errorf("paged vm %+v\n differs from %+v", p, w)
		}
	}
}

func TestFindVM(t *testing.T) {
	s := startSim(t, simulator.VPX())
	c := s.connect(t)
	inv, err := c.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := vmByName(t, inv, "DC0_C0_RP0_VM1")
	vm, err := c.FindVM(t.Context(), want.InstanceUUID)
	if err != nil {
		t.Fatalf("find vm: %v", err)
	}
	if vm.MoRef() != want.MoRef || vm.Name != want.Name || vm.InstanceUUID != want.InstanceUUID {
		t.Errorf("found %s %s %s, want %s %s %s", vm.MoRef(), vm.Name, vm.InstanceUUID, want.MoRef, want.Name, want.InstanceUUID)
	}
	// The BIOS UUID is not an identity: searching by it must not find the VM.
	for _, id := range []string{want.BIOSUUID, "00000000-0000-0000-0000-000000000000", ""} {
		if _, err := c.FindVM(t.Context(), id); !errors.Is(err, ErrVMNotFound) {
			t.Errorf("FindVM(%q) error = %v, want ErrVMNotFound", id, err)
		}
	}
}

// An ESXi host answering directly has no about.instanceUuid: the source is identified by the
// host's hardware UUID, in the same form.
func TestInventoryESXiSourceUUID(t *testing.T) {
	s := startSim(t, simulator.ESX())
	admin := s.admin(t)
	if admin.ServiceContent.About.InstanceUuid != "" {
		t.Fatalf("the simulated ESXi host has an instance uuid %q; this test expects none", admin.ServiceContent.About.InstanceUuid)
	}
	c := s.connect(t)
	inv, err := c.Inventory(t.Context())
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	var hosts []mo.HostSystem
	v, err := view.NewManager(admin.Client).CreateContainerView(t.Context(), admin.ServiceContent.RootFolder, []string{"HostSystem"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Retrieve(t.Context(), []string{"HostSystem"}, []string{"hardware.systemInfo.uuid"}, &hosts); err != nil || len(hosts) != 1 {
		t.Fatalf("hosts %d: %v", len(hosts), err)
	}
	if want := hosts[0].Hardware.SystemInfo.Uuid; inv.Source.InstanceUUID != want || inv.Source.APIType != "HostAgent" {
		t.Fatalf("source %+v, want instance uuid %s", inv.Source, want)
	}
	if err := inv.Validate(); err != nil {
		t.Fatalf("the hub would refuse this inventory: %v", err)
	}
}

// removeOnRead destroys a VM just before the first property retrieval that names VMs one by
// one, the moment between listing a datacenter's VMs and reading them.
type removeOnRead struct {
	soap.RoundTripper
	once   sync.Once
	remove func()
}

func (r *removeOnRead) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	if b, ok := req.(*methods.RetrievePropertiesExBody); ok {
		for _, spec := range b.Req.SpecSet {
			if len(spec.ObjectSet) > 0 && spec.ObjectSet[0].Obj.Type == "VirtualMachine" {
				r.once.Do(r.remove)
			}
		}
	}
	return r.RoundTripper.RoundTrip(ctx, req, res)
}

// TestInventoryVMRemovedWhileRead removes a VM after discovery has listed the VMs and before
// it reads them in parallel parts: the inventory is read again and holds every other VM.
func TestInventoryVMRemovedWhileRead(t *testing.T) {
	m := simulator.VPX()
	m.Machine = 4
	s := startSim(t, m)
	c := s.connect(t)
	before, err := c.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	admin := s.admin(t)
	victim := findVM(t, admin, "/DC0/vm/DC0_H0_VM1")
	c.pageSize = 2 // several parts for the 8 VMs
	rt := &removeOnRead{RoundTripper: c.vc.RoundTripper, remove: func() {
		ctx := context.Background()
		var err error
		for _, op := range []func(context.Context) (*object.Task, error){victim.PowerOff, victim.Destroy} {
			var task *object.Task
			if task, err = op(ctx); err == nil {
				err = task.Wait(ctx)
			}
			if err != nil {
				break
			}
		}
		if err != nil {
			t.Errorf("destroy %s: %v", victim.Name(), err)
		}
	}}
	c.vc.RoundTripper = rt
	after, err := c.Inventory(t.Context())
	if err != nil {
		t.Fatalf("inventory with a vm removed while read: %v", err)
	}
	var want []string
	for _, vm := range before.VMs {
		if vm.Name != "DC0_H0_VM1" {
			want = append(want, vm.Name)
		}
	}
	if got := vmNames(after); !slices.Equal(got, want) {
		t.Errorf("inventory = %v, want %v", got, want)
	}
	fired := false
	rt.once.Do(func() { fired = true })
	if fired || len(before.VMs) != 8 {
		t.Fatalf("the vm was not removed during the read (before: %d vms)", len(before.VMs))
	}
}

// TestFoundVMResolve names what a read VM refers to: a disk's datastore by the reference its
// backing holds (the name in the file's path is only the fallback, as a datastore can be
// renamed), the host and its cluster, and the folder.
func TestFoundVMResolve(t *testing.T) {
	ref := func(kind, id string) types.ManagedObjectReference {
		return types.ManagedObjectReference{Type: kind, Value: id}
	}
	names := map[types.ManagedObjectReference]string{
		ref("Datastore", "ds-1"):                   "renamed",
		ref("HostSystem", "host-1"):                "esx1",
		ref("ClusterComputeResource", "domain-c1"): "prod",
	}
	hostParent := map[types.ManagedObjectReference]types.ManagedObjectReference{
		ref("HostSystem", "host-1"): ref("ClusterComputeResource", "domain-c1"),
	}
	folderPath := func(r types.ManagedObjectReference, _ int) string { return "/DC/vm/" + r.Value }
	f := foundVM{
		vm:     api.VM{MoRef: "vm-1", Name: "a", InstanceUUID: "u"},
		parent: ref("Folder", "group-1"),
		host:   ref("HostSystem", "host-1"),
		disks: []foundDisk{
			{disk: api.Disk{Key: 2000, Datastore: "old"}, datastore: ref("Datastore", "ds-1")},
			{disk: api.Disk{Key: 2001, Datastore: "frompath"}, datastore: ref("Datastore", "ds-unknown")},
			{disk: api.Disk{Key: 2002, Datastore: "frompath"}},
		},
	}
	got := f.resolve(datacenter{name: "DC"}, names, hostParent, folderPath)
	want := api.VM{
		MoRef: "vm-1", Name: "a", InstanceUUID: "u", Datacenter: "DC", Host: "esx1", Cluster: "prod", Folder: "/DC/vm/group-1",
		Disks: []api.Disk{{Key: 2000, Datastore: "renamed"}, {Key: 2001, Datastore: "frompath"}, {Key: 2002, Datastore: "frompath"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("resolved =\n %+v, want\n %+v", got, want)
	}

	bare := foundVM{vm: api.VM{MoRef: "vm-2"}, parentVApp: ref("VirtualApp", "resgroup-v1")}
	got = bare.resolve(datacenter{name: "DC"}, names, hostParent, folderPath)
	if got.Disks == nil || len(got.Disks) != 0 || got.Folder != "/DC/vm/resgroup-v1" || got.Host != "" || got.Cluster != "" {
		t.Errorf("vm without disks or host: %+v, want an empty (not null) disk list, the vApp's folder, no host", got)
	}
}
