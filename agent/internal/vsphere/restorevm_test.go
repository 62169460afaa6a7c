package vsphere

import (
	"errors"
	"strings"
	"testing"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/api"
)

// restoreJobOf captures a simulator VM's configuration as a backup does and turns it into a
// restore job to the same datacenter.
func restoreJobOf(t *testing.T, c *Client, vmName string) *api.RestoreJob {
	t.Helper()
	inv, err := c.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	vm, err := c.FindVM(t.Context(), vmByName(t, inv, vmName).InstanceUUID)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := vm.CreateSnapshot(t.Context(), "sendense-bk-1", "", false)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := snap.VMConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = snap.Remove(t.Context())
	job := &api.RestoreJob{ID: "rs-1", BackupID: "bk-1", Source: "vc1", VM: cfg, DiskProvisioning: api.ProvisionThin, MACAddresses: api.MACKeep,
		Target: api.RestoreTarget{Source: "vc1", Datacenter: "DC0", Datastore: "LocalDS_0", Name: vmName + "-restored"}}
	for _, d := range cfg.Disks {
		job.Disks = append(job.Disks, api.RestoreDiskSpec{DiskID: d.DiskID, CapacityBytes: d.CapacityBytes, Datastore: "LocalDS_0"})
	}
	return job
}

func vmCount(t *testing.T, s *sim) int {
	t.Helper()
	vms, err := find.NewFinder(s.admin(t).Client).VirtualMachineList(t.Context(), "*")
	if err != nil {
		t.Fatal(err)
	}
	return len(vms)
}

// A restore imports a VM with the captured hardware: CPUs, memory, firmware, controllers, disks
// on their units, NICs with the kept MACs, an import lease with a device URL per disk; and the
// VM can be destroyed again once the lease is aborted.
func TestImportRestoredVM(t *testing.T) {
	s := startSim(t, simulator.VPX())
	c := s.connect(t)
	job := restoreJobOf(t, c, "DC0_H0_VM0")
	p, err := c.ResolveRestore(t.Context(), job)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	vm, err := p.ImportVM(t.Context(), job)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if len(vm.urls) != len(job.Disks) || vm.LeaseTimeout() <= 0 {
		t.Fatalf("lease: %d device urls for %d disks, timeout %s", len(vm.urls), len(job.Disks), vm.LeaseTimeout())
	}
	if err := vm.Progress(t.Context(), 50); err != nil {
		t.Fatalf("renew lease: %v", err)
	}
	var m mo.VirtualMachine
	if err := vm.obj.Properties(t.Context(), vm.obj.Reference(), []string{"config", "name"}, &m); err != nil {
		t.Fatal(err)
	}
	got := m.Config
	if m.Name != job.Target.Name || got.Hardware.NumCPU != job.VM.NumCPU || int64(got.Hardware.MemoryMB) != job.VM.MemoryMB ||
		got.GuestId != job.VM.GuestID || !strings.HasPrefix(got.Annotation, api.RestoreVMPrefix+"rs-1") {
		t.Fatalf("new vm %s: cpu %d mem %d guest %s annotation %q; want %+v", m.Name, got.Hardware.NumCPU, got.Hardware.MemoryMB, got.GuestId, got.Annotation, job.VM)
	}
	devices := object.VirtualDeviceList(got.Hardware.Device)
	disks := devices.SelectByType((*types.VirtualDisk)(nil))
	nics := devices.SelectByType((*types.VirtualEthernetCard)(nil))
	if len(disks) != len(job.VM.Disks) || len(nics) != len(job.VM.NICs) || len(vm.Disks) != len(job.Disks) {
		t.Fatalf("new vm has %d disks, %d nics (%d mapped); want %d, %d", len(disks), len(nics), len(vm.Disks), len(job.VM.Disks), len(job.VM.NICs))
	}
	for i, d := range disks {
		vd := d.(*types.VirtualDisk)
		want := job.VM.Disks[i]
		ctrl := devices.FindByKey(vd.ControllerKey).(types.BaseVirtualController)
		if vd.CapacityInBytes != want.CapacityBytes || *vd.UnitNumber != want.UnitNumber ||
			controllerType(ctrl.(types.BaseVirtualDevice)) != want.Controller.Type || ctrl.GetVirtualController().BusNumber != want.Controller.BusNumber {
			t.Errorf("disk %d: %d bytes at %s-%d:%d, want %+v", i, vd.CapacityInBytes, controllerType(ctrl.(types.BaseVirtualDevice)), ctrl.GetVirtualController().BusNumber, *vd.UnitNumber, want)
		}
		if b := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo); b.ThinProvisioned == nil || !*b.ThinProvisioned {
			t.Errorf("disk %d is not thin", i)
		}
		rd := vm.Disks[want.DiskID]
		if rd.Datastore != "LocalDS_0" || !strings.HasSuffix(rd.DataFile, "-flat.vmdk") || rd.Capacity != want.CapacityBytes {
			t.Errorf("restored disk %s: %+v", want.DiskID, rd)
		}
	}
	for i, n := range nics {
		card := n.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		if want := job.VM.NICs[i]; nicAdapterType(n.(types.BaseVirtualEthernetCard)) != want.AdapterType || (want.MACAddress != "" && card.MacAddress != want.MACAddress) {
			t.Errorf("nic %d: %s %s, want %+v", i, nicAdapterType(n.(types.BaseVirtualEthernetCard)), card.MacAddress, want)
		}
	}
	// The same name again is refused before anything is created.
	before := vmCount(t, s)
	if _, err := c.ResolveRestore(t.Context(), job); !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), job.Target.Name) {
		t.Fatalf("restore to an existing name: %v, want ErrNameTaken naming it", err)
	}
	if err := vm.Abort(t.Context(), errors.New("test ends")); err != nil {
		t.Fatalf("abort lease: %v", err)
	}
	if err := c.DestroyRestoredVM(t.Context(), vm.MoRef(), "rs-other"); err == nil {
		t.Fatal("a VM of another restore was destroyed")
	}
	if err := c.DestroyRestoredVM(t.Context(), vm.MoRef(), "rs-1"); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if n := vmCount(t, s); n != before-1 {
		t.Fatalf("%d vms after destroy, want %d", n, before-1)
	}
	if err := c.DestroyRestoredVM(t.Context(), vm.MoRef(), "rs-1"); err != nil {
		t.Fatalf("destroying a gone VM: %v", err)
	}
}

// Every object a restore names must exist, the datastore must have room and the host must not
// be in maintenance: each failure names the object, and nothing is created.
func TestRestoreChecksCreateNothing(t *testing.T) {
	s := startSim(t, simulator.VPX())
	c := s.connect(t)
	base := restoreJobOf(t, c, "DC0_H0_VM0")
	before := vmCount(t, s)
	for _, tc := range []struct {
		name string
		edit func(j *api.RestoreJob)
		want error
		text string
	}{
		{"datacenter", func(j *api.RestoreJob) { j.Target.Datacenter = "DC9" }, ErrTargetNotFound, `datacenter "DC9"`},
		{"folder", func(j *api.RestoreJob) { j.Target.Folder = "nope" }, ErrTargetNotFound, `folder "nope"`},
		{"cluster", func(j *api.RestoreJob) { j.Target.Cluster = "C9" }, ErrTargetNotFound, `cluster "C9"`},
		{"host", func(j *api.RestoreJob) { j.Target.Host = "H9" }, ErrTargetNotFound, `host "H9"`},
		{"pool", func(j *api.RestoreJob) { j.Target.ResourcePool = "RP9" }, ErrTargetNotFound, `resource pool "RP9"`},
		{"datastore", func(j *api.RestoreJob) { j.Target.Datastore = "DS9" }, ErrTargetNotFound, `datastore "DS9"`},
		{"network", func(j *api.RestoreJob) { j.NetworkMap = map[string]string{j.VM.NICs[0].Network: "NoSuchNet"} }, ErrTargetNotFound, `network "NoSuchNet"`},
		{"room", func(j *api.RestoreJob) { j.Disks[0].CapacityBytes = 1 << 50 }, ErrNoRoom, `datastore "LocalDS_0"`},
		{"name", func(j *api.RestoreJob) { j.Target.Name = "DC0_C0_RP0_VM1" }, ErrNameTaken, `"DC0_C0_RP0_VM1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := *base
			j.Disks = append([]api.RestoreDiskSpec(nil), base.Disks...)
			tc.edit(&j)
			_, err := c.ResolveRestore(t.Context(), &j)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want %v naming %s", err, tc.want, tc.text)
			}
		})
	}
	// A host in maintenance mode.
	admin := s.admin(t)
	f := find.NewFinder(admin.Client, true)
	dc, err := f.Datacenter(t.Context(), "DC0")
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	hosts, err := f.HostSystemList(t.Context(), "*")
	if err != nil {
		t.Fatal(err)
	}
	var h *object.HostSystem
	for _, x := range hosts {
		if x.Name() == "DC0_H0" {
			h = x
		}
	}
	task, err := h.EnterMaintenanceMode(t.Context(), 0, false, nil)
	if err == nil {
		err = task.Wait(t.Context())
	}
	if err != nil {
		t.Fatal(err)
	}
	j := *base
	j.Target.Host = "DC0_H0"
	if _, err := c.ResolveRestore(t.Context(), &j); !errors.Is(err, ErrMaintenance) || !strings.Contains(err.Error(), "DC0_H0") {
		t.Fatalf("host in maintenance: %v", err)
	}
	if n := vmCount(t, s); n != before {
		t.Fatalf("%d vms after refused restores, want %d", n, before)
	}
}

// Each disk of an import gets its own device url: by target id where that names one disk's
// descriptor, else by the import key as vCenter writes it (controller class, bus and unit) or as
// the simulator does (disks counted in device order). A key that does not count disks in device
// order (a disk on scsi0:1 before one on scsi1:0) maps by controller and unit, never by
// position; a url two disks could take fails.
func TestDeviceURLs(t *testing.T) {
	yes := true
	u := func(target, key string) types.HttpNfcLeaseDeviceUrl {
		return types.HttpNfcLeaseDeviceUrl{TargetId: target, ImportKey: key, Url: "https://esx/nfc/" + key, Disk: &yes}
	}
	a := RestoredDisk{descriptor: "web/web.vmdk", index: 0, controllerClass: "VirtualLsiLogicController", bus: 0, unit: 1}
	b := RestoredDisk{descriptor: "web/web_1.vmdk", index: 1, controllerClass: "ParaVirtualSCSIController", bus: 1, unit: 0}
	named := func(descriptor string, d RestoredDisk) RestoredDisk { d.descriptor = descriptor; return d }
	sameName := b
	sameName.descriptor = "web/web.vmdk" // the first disk of its folder on another datastore
	for _, tc := range []struct {
		name    string
		disks   map[string]RestoredDisk
		urls    []types.HttpNfcLeaseDeviceUrl
		want    map[string]string // disk → import key
		wantErr string
	}{
		{"target ids", map[string]RestoredDisk{"d0": a, "d1": b},
			[]types.HttpNfcLeaseDeviceUrl{u("web_1.vmdk", "/web/disk:1"), u("web.vmdk", "/web/disk:0")},
			map[string]string{"d0": "/web/disk:0", "d1": "/web/disk:1"}, ""},
		{"vCenter import keys", map[string]RestoredDisk{"d0": a, "d1": b},
			[]types.HttpNfcLeaseDeviceUrl{u("disk-0.vmdk", "/web/ParaVirtualSCSIController1:0"), u("disk-1.vmdk", "/web/VirtualLsiLogicController0:1")},
			map[string]string{"d0": "/web/VirtualLsiLogicController0:1", "d1": "/web/ParaVirtualSCSIController1:0"}, ""},
		{"vCenter, a VM named like its target ids", map[string]RestoredDisk{"d0": named("disk-1/disk-1.vmdk", a), "d1": named("disk-1/disk-1_1.vmdk", b)},
			[]types.HttpNfcLeaseDeviceUrl{u("disk-0.vmdk", "/disk-1/VirtualLsiLogicController0:1"), u("disk-1.vmdk", "/disk-1/ParaVirtualSCSIController1:0")},
			map[string]string{"d0": "/disk-1/VirtualLsiLogicController0:1", "d1": "/disk-1/ParaVirtualSCSIController1:0"}, ""},
		{"vCenter, a name it escapes", map[string]RestoredDisk{"d0": a, "d1": b},
			[]types.HttpNfcLeaseDeviceUrl{u("disk-0.vmdk", "/a%2fb/VirtualLsiLogicController0:1"), u("disk-1.vmdk", "/a%2fb/ParaVirtualSCSIController1:0")},
			map[string]string{"d0": "/a%2fb/VirtualLsiLogicController0:1", "d1": "/a%2fb/ParaVirtualSCSIController1:0"}, ""},
		{"two disks to one url", map[string]RestoredDisk{"d0": a, "d1": named("web/web_1.vmdk", a)},
			[]types.HttpNfcLeaseDeviceUrl{u("x", "/web/VirtualLsiLogicController0:1"), u("y", "/web/disk:1")}, nil, "both map to the lease's device url"},
		{"one file name on two datastores", map[string]RestoredDisk{"d0": a, "d1": sameName},
			[]types.HttpNfcLeaseDeviceUrl{u("web.vmdk", "/web/disk:0"), u("web.vmdk", "/web/disk:1")},
			map[string]string{"d0": "/web/disk:0", "d1": "/web/disk:1"}, ""},
		{"no url for a disk", map[string]RestoredDisk{"d0": a, "d1": b},
			[]types.HttpNfcLeaseDeviceUrl{u("disk-0.vmdk", "/web/VirtualLsiLogicController0:1")}, nil, "no device url for disk d1"},
		{"two urls for one disk", map[string]RestoredDisk{"d0": a, "d1": sameName},
			[]types.HttpNfcLeaseDeviceUrl{u("x", "/web/VirtualLsiLogicController0:1"), u("y", "/web/ParaVirtualSCSIController1:0"), u("z", "/web/x/ParaVirtualSCSIController1:0")}, nil, "device urls that could be disk d1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := deviceURLs(tc.urls, tc.disks)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for id, key := range tc.want {
				if got[id].ImportKey != key {
					t.Fatalf("disk %s → %s, want %s", id, got[id].ImportKey, key)
				}
			}
		})
	}
}
