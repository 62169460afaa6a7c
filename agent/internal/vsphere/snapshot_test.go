package vsphere

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// TestSnapshotLifecycleSimulator runs the backup-time operations against the plain simulator:
// snapshot, its disks, reading the disk over datastore HTTP, CBT refusal, listing and removal.
func TestSnapshotLifecycleSimulator(t *testing.T) {
	s := startSim(t, simulator.VPX())
	admin := s.admin(t)
	c := s.connect(t)
	ctx := t.Context()

	inv, err := c.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := vmByName(t, inv, "DC0_H0_VM0")
	vm, err := c.FindVM(ctx, want.InstanceUUID)
	if err != nil {
		t.Fatal(err)
	}
	if on, err := vm.EnableCBT(ctx); err != nil || !on {
		t.Fatalf("enable cbt: %v %v, want it turned on", on, err)
	}
	if on, err := vm.EnableCBT(ctx); err != nil || on { // no-op the second time
		t.Fatalf("enable cbt again: %v %v, want nothing done", on, err)
	}
	inv, err = c.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !vmByName(t, inv, "DC0_H0_VM0").CBTEnabled {
		t.Fatal("cbt not enabled after EnableCBT")
	}

	snap, err := vm.CreateSnapshot(ctx, "sendense-job-1", "test", true)
	if err != nil {
		t.Fatalf("create snapshot: %v", err)
	}
	disks, err := snap.Disks(ctx)
	if err != nil {
		t.Fatalf("snapshot disks: %v", err)
	}
	if len(disks) != 1 {
		t.Fatalf("snapshot disks = %+v, want 1", disks)
	}
	d := disks[0]
	wantDisk := SnapshotDisk{
		Key: 204, DiskID: "disk-204", Label: "disk-202-0", CapacityBytes: 10 << 30,
		FileName: "[LocalDS_0] DC0_H0_VM0/disk1.vmdk", Datastore: "LocalDS_0", DatacenterPath: "DC0",
		DataFile: "DC0_H0_VM0/disk1-flat.vmdk", BackingUUID: d.BackingUUID, BackingType: "flatVer2",
		DiskMode: "persistent", Backupable: true, VMMoRef: vm.MoRef(), SnapshotMoRef: snap.MoRef(),
	}
	if d != wantDisk {
		t.Errorf("snapshot disk =\n %+v, want\n %+v", d, wantDisk)
	}

	// The simulator has no QueryChangedDiskAreas: that is "CBT unavailable", never a bad ID.
	for _, id := range []string{"*", "52 00/1"} {
		if _, err := snap.ChangedAreas(ctx, d.Key, d.CapacityBytes, id); !errors.Is(err, ErrCBTUnavailable) {
			t.Errorf("ChangedAreas(%q) on the plain simulator: error = %v, want ErrCBTUnavailable", id, err)
		}
	}

	t.Run("datastore http range read", func(t *testing.T) {
		flat := flatFilePath(t, admin, "LocalDS_0", d.DataFile)
		pattern := bytes.Repeat([]byte("sendense"), 512) // 4 KiB
		off := int64(9<<30 + 12345)                      // beyond 4 GiB, in a sparse file
		writeAt(t, flat, d.CapacityBytes, off, pattern)

		u, hc, err := c.DatastoreHTTP(ctx, d.DatacenterPath, d.Datastore, d.DataFile)
		if err != nil {
			t.Fatal(err)
		}
		got := rangeGet(t, hc, u, off, int64(len(pattern)))
		if !bytes.Equal(got, pattern) {
			t.Fatalf("range read returned %q..., want the written bytes", got[:16])
		}
		// The descriptor is not the data: reading the descriptor's path gives text.
		du, _, err := c.DatastoreHTTP(ctx, d.DatacenterPath, d.Datastore, strings.TrimSuffix(d.DataFile, "-flat.vmdk")+".vmdk")
		if err != nil {
			t.Fatal(err)
		}
		if desc := rangeGet(t, hc, du, 0, 21); !strings.HasPrefix(string(desc), "# Disk DescriptorFile") {
			t.Errorf("descriptor starts with %q, want a vmdk descriptor", desc)
		}
	})

	t.Run("list and reap", func(t *testing.T) {
		other := vmByName(t, inv, "DC0_C0_RP0_VM1")
		ovm, err := c.FindVM(ctx, other.InstanceUUID)
		if err != nil {
			t.Fatal(err)
		}
		userSnap, err := ovm.CreateSnapshot(ctx, "before-upgrade", "a user's snapshot", false)
		if err != nil {
			t.Fatal(err)
		}
		stale, err := ovm.CreateSnapshot(ctx, "sendense-job-0", "left by a crash", false)
		if err != nil {
			t.Fatal(err)
		}
		list, err := c.Snapshots(ctx, "sendense-")
		if err != nil {
			t.Fatalf("snapshots: %v", err)
		}
		got := map[string]SnapshotInfo{}
		for _, si := range list {
			got[si.MoRef] = si
		}
		if len(list) != 2 {
			t.Fatalf("snapshots with prefix = %+v, want 2", list)
		}
		si, ok := got[stale.MoRef()]
		if !ok || si.VMUUID != other.InstanceUUID || si.VMName != other.Name || si.VMMoRef != other.MoRef ||
			si.Name != "sendense-job-0" || si.Created.IsZero() {
			t.Errorf("stale snapshot listed as %+v", si)
		}
		if _, ok := got[snap.MoRef()]; !ok {
			t.Errorf("job snapshot %s not listed", snap.MoRef())
		}
		if _, ok := got[userSnap.MoRef()]; ok {
			t.Error("a user's snapshot matched the sendense- prefix")
		}

		// The reaper must not remove another VM's snapshot through a wrong pairing.
		if err := c.RemoveSnapshotByRef(ctx, want.InstanceUUID, stale.MoRef()); err != nil {
			t.Fatalf("remove by ref with the wrong vm: %v", err)
		}
		if n := countSnapshots(t, c, "sendense-job-0"); n != 1 {
			t.Fatalf("snapshot of another vm removed through a wrong pairing (left %d)", n)
		}
		if err := c.RemoveSnapshotByRef(ctx, other.InstanceUUID, stale.MoRef()); err != nil {
			t.Fatalf("remove by ref: %v", err)
		}
		if n := countSnapshots(t, c, "sendense-job-0"); n != 0 {
			t.Fatalf("stale snapshot still listed after removal")
		}
		if err := c.RemoveSnapshotByRef(ctx, other.InstanceUUID, stale.MoRef()); err != nil {
			t.Fatalf("second remove by ref: %v", err)
		}
		if err := c.RemoveSnapshotByRef(ctx, "00000000-0000-0000-0000-000000000000", stale.MoRef()); !errors.Is(err, ErrVMNotFound) {
			t.Fatalf("remove by ref of an unknown vm: %v, want ErrVMNotFound", err)
		}
		if n := countSnapshots(t, c, "before-upgrade"); n != 1 {
			t.Fatalf("the user's snapshot was touched")
		}
	})

	if err := snap.Remove(ctx); err != nil {
		t.Fatalf("remove snapshot: %v", err)
	}
	if err := snap.Remove(ctx); err != nil {
		t.Fatalf("remove snapshot again: %v", err)
	}
	if n := countSnapshots(t, c, "sendense-job-1"); n != 0 {
		t.Fatal("snapshot still listed after Remove")
	}
	var m mo.VirtualMachine
	if err := admin.RetrieveOne(ctx, vm.obj.Reference(), []string{"snapshot"}, &m); err != nil {
		t.Fatal(err)
	}
	if m.Snapshot != nil {
		t.Fatalf("vm still has snapshots: %+v", m.Snapshot.RootSnapshotList)
	}
}

func countSnapshots(t *testing.T, c *Client, name string) int {
	t.Helper()
	list, err := c.Snapshots(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// flatFilePath maps a datastore-relative path of DC0 to the simulator's host file.
func flatFilePath(t *testing.T, admin *govmomi.Client, ds, rel string) string {
	t.Helper()
	f := find.NewFinder(admin.Client)
	dc, err := f.Datacenter(t.Context(), "DC0")
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	d, err := f.Datastore(t.Context(), ds)
	if err != nil {
		t.Fatal(err)
	}
	var m mo.Datastore
	if err := d.Properties(t.Context(), d.Reference(), []string{"summary.url"}, &m); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(m.Summary.Url, filepath.FromSlash(rel))
}

// writeAt makes path a sparse file of size bytes with data at off.
func writeAt(t *testing.T, path string, size, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// rangeGet reads [off, off+n) of u and insists on a 206 with exactly those bytes.
func rangeGet(t *testing.T, hc *http.Client, u string, off, n int64) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusPartialContent {
		t.Fatalf("GET %s: %s, want 206", u, res.Status)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != n {
		t.Fatalf("GET %s returned %d bytes, want %d", u, len(b), n)
	}
	return b
}

// TestDatastoreHTTPRelogin serves a datastore-like endpoint that, like real ESXi (and unlike
// the simulator's /folder), requires a live session cookie. After the session is terminated
// server-side, a read through the DatastoreHTTP client logs in again and succeeds.
func TestDatastoreHTTPRelogin(t *testing.T) {
	s := startSim(t, simulator.VPX())
	admin := s.admin(t)
	c := s.connect(t)
	ctx := t.Context()
	sm := *admin.ServiceContent.SessionManager

	var requests, rejected atomic.Int64
	ds := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		ck, err := r.Cookie("vmware_soap_session")
		active := false
		if err == nil {
			res, err := methods.SessionIsActive(r.Context(), admin.Client, &types.SessionIsActive{This: sm, SessionID: ck.Value, UserName: simUser})
			active = err == nil && res.Returnval
		}
		if !active {
			rejected.Add(1)
			http.Error(w, "no session", http.StatusUnauthorized)
			return
		}
		http.ServeContent(w, r, "disk-flat.vmdk", time.Time{}, bytes.NewReader([]byte("0123456789abcdef")))
	}))
	ds.TLS = &tls.Config{Certificates: s.server.TLS.Certificates} // same certificate: the pin holds
	ds.StartTLS()
	defer ds.Close()

	raw, hc, err := c.DatastoreHTTP(ctx, "DC0", "LocalDS_0", "vm/disk-flat.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Path != "/folder/vm/disk-flat.vmdk" || u.Query().Get("dcPath") != "DC0" || u.Query().Get("dsName") != "LocalDS_0" {
		t.Fatalf("datastore url = %s", raw)
	}
	u.Host = strings.TrimPrefix(ds.URL, "https://")

	if got := rangeGet(t, hc, u.String(), 4, 4); string(got) != "4567" {
		t.Fatalf("read with a live session = %q", got)
	}
	if rejected.Load() != 0 {
		t.Fatal("a live session was rejected")
	}

	old := c.sess.sessionKey()
	if err := session.NewManager(admin.Client).TerminateSession(ctx, []string{old}); err != nil {
		t.Fatal(err)
	}
	if got := rangeGet(t, hc, u.String(), 10, 6); string(got) != "abcdef" {
		t.Fatalf("read after session termination = %q", got)
	}
	if rejected.Load() != 1 || requests.Load() != 3 {
		t.Errorf("requests = %d, rejected = %d; want 3 and 1 (one 401, then the repeat)", requests.Load(), rejected.Load())
	}
	if c.sess.sessionKey() == old {
		t.Error("no re-login happened")
	}
	// Only body-less GET/HEAD are repeated: a POST gets the 401 back.
	if err := session.NewManager(admin.Client).TerminateSession(ctx, []string{c.sess.sessionKey()}); err != nil {
		t.Fatal(err)
	}
	res, err := hc.Post(u.String(), "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized || requests.Load() != 4 {
		t.Errorf("POST after session loss: %s after %d requests, want 401 after 4", res.Status, requests.Load())
	}
}
