package lab

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/shared/testenv"
)

// startLab starts a lab for one test; it closes with the test.
func startLab(t testing.TB, spec Spec, opts Options) *Lab {
	t.Helper()
	l, err := Start(t.Context(), spec, opts)
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// login connects to the lab as a client would: TLS verified against the lab's CA, then Login.
func login(t testing.TB, l *Lab) *vim25.Client {
	t.Helper()
	c, err := dial(t.Context(), l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = session.NewManager(c).Logout(context.WithoutCancel(t.Context())) })
	return c
}

func dial(ctx context.Context, l *Lab) (*vim25.Client, error) {
	u, err := soap.ParseURL(l.SDKURL())
	if err != nil {
		return nil, fmt.Errorf("parse sdk url: %w", err)
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(l.CACertFile()); err != nil {
		return nil, fmt.Errorf("set root CAs: %w", err)
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("vim25 client: %w", err)
	}
	if err := session.NewManager(c).Login(ctx, url.UserPassword(l.Username(), l.Password())); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	return c, nil
}

// findVM finds a VM by name through a container view, as discovery does.
func findVM(t testing.TB, c *vim25.Client, name string) (*object.VirtualMachine, mo.VirtualMachine) {
	t.Helper()
	vm, props, err := lookupVM(t.Context(), c, name)
	if err != nil {
		t.Fatal(err)
	}
	return vm, props
}

func lookupVM(ctx context.Context, c *vim25.Client, name string) (*object.VirtualMachine, mo.VirtualMachine, error) {
	m := view.NewManager(c)
	v, err := m.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		return nil, mo.VirtualMachine{}, fmt.Errorf("container view: %w", err)
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
	var vms []mo.VirtualMachine
	if err := v.RetrieveWithFilter(ctx, []string{"VirtualMachine"}, []string{"name", "config", "runtime.powerState"}, &vms, property.Match{"name": name}); err != nil {
		return nil, mo.VirtualMachine{}, fmt.Errorf("retrieve vm %s: %w", name, err)
	}
	if len(vms) != 1 {
		return nil, mo.VirtualMachine{}, fmt.Errorf("found %d VMs named %s", len(vms), name)
	}
	return object.NewVirtualMachine(c, vms[0].Self), vms[0], nil
}

// disksOf lists the virtual disks of a configuration by key.
func disksOf(devices []types.BaseVirtualDevice) map[int32]*types.VirtualDisk {
	out := make(map[int32]*types.VirtualDisk)
	for _, d := range object.VirtualDeviceList(devices).SelectByType((*types.VirtualDisk)(nil)) {
		disk := d.(*types.VirtualDisk)
		out[disk.Key] = disk
	}
	return out
}

// snapshot takes a snapshot and returns it with its disks.
func snapshot(t testing.TB, vm *object.VirtualMachine, name string, quiesce bool) (types.ManagedObjectReference, map[int32]*types.VirtualDisk) {
	t.Helper()
	ref, disks, err := snapshotDisks(t.Context(), vm, name, quiesce)
	if err != nil {
		t.Fatal(err)
	}
	return ref, disks
}

func snapshotDisks(ctx context.Context, vm *object.VirtualMachine, name string, quiesce bool) (types.ManagedObjectReference, map[int32]*types.VirtualDisk, error) {
	ref, err := createSnapshot(ctx, vm, name, quiesce)
	if err != nil {
		return ref, nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	var s mo.VirtualMachineSnapshot
	if err := vm.Properties(ctx, ref, []string{"config.hardware"}, &s); err != nil {
		return ref, nil, fmt.Errorf("snapshot %s config: %w", name, err)
	}
	return ref, disksOf(s.Config.Hardware.Device), nil
}

func createSnapshot(ctx context.Context, vm *object.VirtualMachine, name string, quiesce bool) (types.ManagedObjectReference, error) {
	task, err := vm.CreateSnapshot(ctx, name, "", false, quiesce)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	res, err := task.WaitForResult(ctx)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	return res.Result.(types.ManagedObjectReference), nil
}

func changeID(disk *types.VirtualDisk) string {
	return disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).ChangeId
}

// changedAreas asks QueryChangedDiskAreas window by window until the disk's end, as a backup
// does, and returns the areas and the number of calls.
func changedAreas(ctx context.Context, c *vim25.Client, vm, snap types.ManagedObjectReference, disk *types.VirtualDisk, changeID string) ([]Extent, int, error) {
	var out []Extent
	calls := 0
	capacity := capacityOf(disk)
	for off := int64(0); off < capacity; {
		res, err := methods.QueryChangedDiskAreas(ctx, c, &types.QueryChangedDiskAreas{
			This: vm, Snapshot: &snap, DeviceKey: disk.Key, StartOffset: off, ChangeId: changeID,
		})
		if err != nil {
			return nil, calls, err
		}
		calls++
		info := res.Returnval
		if info.StartOffset != off || info.Length <= 0 {
			return nil, calls, errors.New("window does not advance")
		}
		for _, a := range info.ChangedArea {
			if a.Start < info.StartOffset || a.Start+a.Length > info.StartOffset+info.Length {
				return nil, calls, errors.New("area outside its window")
			}
			out = append(out, Extent{Offset: a.Start, Length: a.Length})
		}
		off = info.StartOffset + info.Length
	}
	return mergeExtents(out), calls, nil
}

// faultOf returns the vSphere fault inside an error from a SOAP call or a task.
func faultOf(err error) types.BaseMethodFault {
	if soap.IsSoapFault(err) {
		if f, ok := soap.ToSoapFault(err).VimFault().(types.BaseMethodFault); ok {
			return f
		}
	}
	var te interface{ Fault() types.BaseMethodFault }
	if errors.As(err, &te) {
		return te.Fault()
	}
	return nil
}

// requireHoles skips (fails under SENDENSE_TEST_STRICT) unless the file system of the test's
// temporary directory reports holes through SEEK_DATA/SEEK_HOLE: full CBT queries and fill
// checks read allocation from it.
func requireHoles(t *testing.T) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "holes")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 4<<20); err != nil {
		t.Fatal(err)
	}
	got, err := dataExtents(f, 0, 8<<20)
	if err == nil && len(got) == 1 && got[0].Offset >= 1<<20 && got[0].Length <= 1<<20 {
		return
	}
	msg := fmt.Sprintf("the file system of %s does not report holes (SEEK_DATA/SEEK_HOLE: %v, %v); point TMPDIR at ext4, xfs, btrfs or tmpfs", os.TempDir(), got, err)
	testenv.Skip(t, "%s", msg)
}
