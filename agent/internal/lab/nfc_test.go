package lab

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/agent/internal/vmdk"
)

// importVM starts an import of a VM with one thin disk of size bytes and returns its lease
// and the disk's upload URL.
func importVM(t *testing.T, c *vim25.Client, name string, size int64) (*nfc.Lease, *url.URL, types.ManagedObjectReference) {
	t.Helper()
	ctx := t.Context()
	f := find.NewFinder(c, true)
	dc, err := f.DefaultDatacenter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	crs, err := f.ClusterComputeResourceList(ctx, "*")
	if err != nil || len(crs) == 0 {
		t.Fatalf("clusters: %v", err)
	}
	pool, err := crs[0].ResourcePool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ctrl := &types.VirtualLsiLogicController{VirtualSCSIController: types.VirtualSCSIController{SharedBus: types.VirtualSCSISharingNoSharing}}
	ctrl.Key = -10
	disk := &types.VirtualDisk{CapacityInBytes: size, VirtualDevice: types.VirtualDevice{Key: -11, ControllerKey: -10, UnitNumber: types.NewInt32(0),
		Backing: &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: "[" + datastoreName + "]"},
			DiskMode: string(types.VirtualDiskModePersistent), ThinProvisioned: types.NewBool(true)}}}
	spec := types.VirtualMachineConfigSpec{Name: name, GuestId: "otherGuest64", NumCPUs: 1, MemoryMB: 128,
		Files: &types.VirtualMachineFileInfo{VmPathName: "[" + datastoreName + "]"},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: ctrl},
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate, Device: disk},
		}}
	lease, err := pool.ImportVApp(ctx, &types.VirtualMachineImportSpec{ConfigSpec: spec}, folders.VmFolder, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := lease.Wait(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range info.DeviceUrl {
		if d.Disk != nil && *d.Disk {
			u, err := c.ParseURL(d.Url)
			if err != nil {
				t.Fatal(err)
			}
			return lease, u, info.Entity
		}
	}
	t.Fatalf("lease has no disk url: %+v", info.DeviceUrl)
	return nil, nil, types.ManagedObjectReference{}
}

func upload(ctx context.Context, c *vim25.Client, u *url.URL, body []byte) error {
	return c.Client.Upload(ctx, bytes.NewReader(body), u, &soap.Upload{Method: "POST", Type: "application/x-vnd.vmware-streamVmdk", ContentLength: int64(len(body))})
}

// An upload into an import lease lands, decoded and sparse, in the new disk's flat file;
// a stream that is no VMDK is refused; Complete ends the lease, and a lease nobody renews
// expires and refuses what comes after.
func TestImportKeepsUploads(t *testing.T) {
	requireHoles(t)
	const size = int64(48) << 20
	l := startLab(t, Spec{VMs: []VMSpec{{Name: "src", Disks: []DiskSpec{{Size: "1MiB"}}}}}, Options{})
	// The leases' clock runs skew ahead of the real one: the test moves it on instead of
	// sleeping through a short timeout that a slow upload could outlast.
	var skew time.Duration // guarded by l.nfc.mu, under which the lab reads its clock
	l.nfc.mu.Lock()
	l.nfc.now = func() time.Time { return time.Now().Add(skew) }
	l.nfc.mu.Unlock()
	c := login(t, l)
	ctx := t.Context()

	disk := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{9})
	_, _ = rng.Read(disk[1<<20 : 3<<20])    // 2 MiB of data
	_, _ = rng.Read(disk[size-1000 : size]) // and the last bytes
	var stream bytes.Buffer
	if _, err := vmdk.Write(ctx, &stream, bytes.NewReader(disk), size, vmdk.Options{}); err != nil {
		t.Fatal(err)
	}

	lease, u, vm := importVM(t, c, "imported", size)
	if got := l.OpenLeases(); len(got) != 1 || got[0] != lease.Reference().Value {
		t.Fatalf("open leases %v, want %s", got, lease.Reference().Value)
	}
	if err := upload(ctx, c, u, []byte(strings.Repeat("not a vmdk ", 100))); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("garbage upload: %v, want 400", err)
	}
	if err := lease.Progress(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if err := upload(ctx, c, u, stream.Bytes()); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if err := lease.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	if got := l.OpenLeases(); len(got) != 0 || l.LeaseState(lease.Reference().Value) != LeaseCompleted {
		t.Fatalf("after Complete: open leases %v, state %q", got, l.LeaseState(lease.Reference().Value))
	}
	imps := l.Imports()
	if len(imps) != 2 || imps[0].Err == "" || imps[1].Err != "" || imps[1].VM != vm.Value || imps[1].StreamBytes != int64(stream.Len()) {
		t.Fatalf("imports %+v", imps)
	}
	got, err := os.ReadFile(imps[1].FlatPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, disk) {
		t.Fatal("the flat file does not hold the uploaded disk")
	}
	fi, _ := os.Stat(imps[1].FlatPath)
	if alloc := fi.Sys().(*syscall.Stat_t).Blocks * 512; alloc > 3<<20 {
		t.Fatalf("a disk holding 2 MiB and 1000 bytes allocates %d bytes", alloc)
	}
	if imps[1].WrittenBytes != 2<<20+vmdk.GrainSize {
		t.Fatalf("wrote %d bytes, want 2 MiB and the last grain", imps[1].WrittenBytes)
	}

	// A lease nobody renews expires: its uploads and renewals are refused.
	lease2, u2, _ := importVM(t, c, "abandoned", size)
	l.nfc.mu.Lock()
	skew += DefaultLeaseTimeout + time.Second
	l.nfc.mu.Unlock()
	if got := l.OpenLeases(); len(got) != 0 || l.LeaseState(lease2.Reference().Value) != LeaseExpired {
		t.Fatalf("unrenewed lease: open %v, state %q", got, l.LeaseState(lease2.Reference().Value))
	}
	if err := upload(ctx, c, u2, stream.Bytes()); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("upload into an expired lease: %v, want 403", err)
	}
	if err := lease2.Progress(ctx, 50); err == nil {
		t.Fatal("an expired lease was renewed")
	}
	// An aborted lease is not open either.
	lease3, _, _ := importVM(t, c, "aborted", size)
	if err := lease3.Abort(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if s := l.LeaseState(lease3.Reference().Value); s != LeaseAborted {
		t.Fatalf("aborted lease is %q", s)
	}
}
