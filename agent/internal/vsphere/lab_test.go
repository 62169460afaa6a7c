package vsphere_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

const (
	mib    = int64(1) << 20
	window = 128 * mib // the lab answers QueryChangedDiskAreas in windows of this size
)

// startLab starts the lab with a small query window, so every ChangedAreas call must loop.
func startLab(t *testing.T, spec lab.Spec) *lab.Lab {
	t.Helper()
	l, err := lab.Start(t.Context(), spec, lab.Options{Dir: t.TempDir(), QueryWindow: window})
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

// connectLab connects the product client to the lab, verifying it by the CA file the lab
// writes (the thumbprint path is covered against the plain simulator).
func connectLab(t *testing.T, l *lab.Lab) *vsphere.Client {
	t.Helper()
	c, err := vsphere.Connect(t.Context(), vsphere.Config{
		Name: "lab", URL: l.SDKURL(), Username: l.Username(), Password: l.Password(), CAFile: l.CACertFile(),
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("connect to lab: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.WithoutCancel(t.Context())) })
	return c
}

func labVM(t *testing.T, l *lab.Lab, name string) lab.VMInfo {
	t.Helper()
	info, err := l.VM(name)
	if err != nil {
		t.Fatalf("lab vm %s: %v", name, err)
	}
	return info
}

func diskByKey(t *testing.T, disks []vsphere.SnapshotDisk, key int32) vsphere.SnapshotDisk {
	t.Helper()
	i := slices.IndexFunc(disks, func(d vsphere.SnapshotDisk) bool { return d.Key == key })
	if i < 0 {
		t.Fatalf("snapshot has no disk %d: %+v", key, disks)
	}
	return disks[i]
}

// merge turns the extents the lab reports into what ChangedAreas returns: sorted, with
// touching and overlapping extents merged.
func merge(in []lab.Extent) []vsphere.Extent {
	var es []vsphere.Extent
	for _, e := range in {
		es = append(es, vsphere.Extent{Offset: e.Offset, Length: e.Length})
	}
	slices.SortFunc(es, func(a, b vsphere.Extent) int { return int(a.Offset - b.Offset) })
	out := []vsphere.Extent{}
	for _, e := range es {
		if n := len(out); n > 0 && e.Offset <= out[n-1].Offset+out[n-1].Length {
			out[n-1].Length = max(out[n-1].Offset+out[n-1].Length, e.Offset+e.Length) - out[n-1].Offset
			continue
		}
		out = append(out, e)
	}
	return out
}

func sameExtents(t *testing.T, what string, got, want []vsphere.Extent) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// TestLabSnapshotsAndCBT is the backup sequence against the lab: discovery, a full (changed
// areas "*"), writes, an incremental, bytes over datastore HTTP, CBT faults, quiescing, reaping.
func TestLabSnapshotsAndCBT(t *testing.T) {
	spec := lab.Spec{VMs: []lab.VMSpec{
		{Name: "db1", CBT: true, Disks: []lab.DiskSpec{
			{Key: 2000, Size: "1GiB", Fill: lab.FillZeros},
			{Key: 2001, Size: "64MiB", Fill: lab.FillRandom, Seed: 7},
			{Key: 2002, Size: "16MiB", Fill: lab.FillRandom, CBTUnsupported: true},
		}},
		{Name: "app1", CBT: true, QuiesceFails: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "16MiB"}}},
		{Name: "web1", CBT: false, Disks: []lab.DiskSpec{{Key: 2000, Size: "32MiB", Fill: lab.FillRandom}}},
	}}
	l := startLab(t, spec)
	c := connectLab(t, l)
	ctx := t.Context()

	// Discovery sees the lab's VMs and disks as the lab describes them.
	inv, err := c.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app1", "db1", "web1"} {
		info := labVM(t, l, name)
		i := slices.IndexFunc(inv.VMs, func(vm api.VM) bool { return vm.Name == name })
		if i < 0 {
			t.Fatalf("inventory lacks %s", name)
		}
		vm := inv.VMs[i]
		if vm.InstanceUUID != info.InstanceUUID || vm.MoRef != info.MoRef || vm.CBTEnabled != info.CBT || len(vm.Disks) != len(info.Disks) {
			t.Fatalf("inventory vm %+v, lab says %+v", vm, info)
		}
		for j, d := range vm.Disks {
			ld := info.Disks[j]
			if d.Key != ld.Key || d.DiskID != ld.DiskID || d.CapacityBytes != ld.CapacityBytes || d.BackingFile != ld.DatastorePath || d.Datastore != ld.Datastore {
				t.Errorf("%s disk %+v, lab says %+v", name, d, ld)
			}
		}
	}

	db1 := labVM(t, l, "db1")
	vm, err := c.FindVM(ctx, db1.InstanceUUID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vm.EnableCBT(ctx); err != nil {
		t.Fatalf("enable cbt (already on): %v", err)
	}

	// Content before the first backup: two extents on the zero-filled disk.
	first := []lab.Extent{{Offset: 8 * mib, Length: 2 * mib}, {Offset: 700 * mib, Length: 64 << 10}}
	for i, e := range first {
		if err := l.Write("db1", "disk-2000", e.Offset, bytes.Repeat([]byte{byte(0xA0 + i)}, int(e.Length))); err != nil {
			t.Fatal(err)
		}
	}

	snap1, err := vm.CreateSnapshot(ctx, "sendense-job-1", "full", true)
	if err != nil {
		t.Fatalf("create snapshot: %v", err)
	}
	disks1, err := snap1.Disks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d2000, d2001, d2002 := diskByKey(t, disks1, 2000), diskByKey(t, disks1, 2001), diskByKey(t, disks1, 2002)
	if _, _, ok := vsphere.ParseChangeID(d2000.ChangeID); !ok {
		t.Fatalf("disk 2000 change id after a CBT snapshot = %q", d2000.ChangeID)
	}
	if d2002.ChangeID != "" {
		t.Errorf("disk without CBT support has change id %q", d2002.ChangeID)
	}
	wantFlat := strings.TrimPrefix(db1.Disks[0].FlatDatastorePath, "[LocalDS_0] ")
	if d2000.DataFile != wantFlat || d2000.DatacenterPath != "DC0" || d2000.Datastore != l.Datastore() || d2000.CapacityBytes != 1<<30 {
		t.Errorf("snapshot disk 2000 = %+v, want data file %s in DC0", d2000, wantFlat)
	}

	t.Run("full: allocated areas", func(t *testing.T) {
		got, err := snap1.ChangedAreas(ctx, 2000, d2000.CapacityBytes, "*")
		if err != nil {
			t.Fatal(err)
		}
		sameExtents(t, "allocated areas of the zero disk after two writes", got, merge(first))
		got, err = snap1.ChangedAreas(ctx, 2001, d2001.CapacityBytes, "*")
		if err != nil {
			t.Fatal(err)
		}
		sameExtents(t, "allocated areas of a fully written disk", got, []vsphere.Extent{{Offset: 0, Length: 64 * mib}})
	})

	t.Run("datastore http bytes", func(t *testing.T) {
		u, hc, err := c.DatastoreHTTP(ctx, d2000.DatacenterPath, d2000.Datastore, d2000.DataFile)
		if err != nil {
			t.Fatal(err)
		}
		flat, err := os.Open(db1.Disks[0].FlatPath)
		if err != nil {
			t.Fatal(err)
		}
		defer flat.Close()
		for _, e := range []lab.Extent{{Offset: 8*mib - 4096, Length: 8192}, {Offset: 700 * mib, Length: 64 << 10}, {Offset: 1<<30 - 4096, Length: 4096}} {
			got := rangeGet(t, hc, u, e.Offset, e.Length)
			want := make([]byte, e.Length)
			if _, err := flat.ReadAt(want, e.Offset); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("bytes at %d over datastore http differ from the lab's disk", e.Offset)
			}
		}
		if got := rangeGet(t, hc, u, 8*mib, 4); !bytes.Equal(got, []byte{0xA0, 0xA0, 0xA0, 0xA0}) {
			t.Errorf("written bytes read back as %x", got)
		}
	})

	// Incremental: 1% of the disk plus a write across a window boundary.
	written, err := l.WritePercent("db1", "disk-2000", 1, 42)
	if err != nil {
		t.Fatal(err)
	}
	straddle := lab.Extent{Offset: 3*window - 4096, Length: 12288}
	if err := l.Write("db1", "disk-2000", straddle.Offset, bytes.Repeat([]byte{0x5A}, int(straddle.Length))); err != nil {
		t.Fatal(err)
	}
	written = append(written, straddle)
	snap2, err := vm.CreateSnapshot(ctx, "sendense-job-2", "incremental", false)
	if err != nil {
		t.Fatal(err)
	}
	disks2, err := snap2.Disks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d2000b := diskByKey(t, disks2, 2000)
	if d2000b.ChangeID == d2000.ChangeID {
		t.Fatal("change id did not advance between snapshots")
	}

	t.Run("incremental equals the written extents", func(t *testing.T) {
		got, err := snap2.ChangedAreas(ctx, 2000, d2000b.CapacityBytes, d2000.ChangeID)
		if err != nil {
			t.Fatal(err)
		}
		sameExtents(t, "changed areas since snapshot 1", got, merge(written))
		// Disk 2001 was not written.
		got, err = snap2.ChangedAreas(ctx, 2001, d2001.CapacityBytes, d2001.ChangeID)
		if err != nil || len(got) != 0 {
			t.Fatalf("unchanged disk: %v, %v; want no areas", got, err)
		}
	})

	t.Run("fault mapping", func(t *testing.T) {
		tests := []struct {
			name     string
			key      int32
			capacity int64
			changeID string
			want     error
		}{
			{"cbt unsupported, full", 2002, d2002.CapacityBytes, "*", vsphere.ErrCBTUnavailable},
			{"cbt unsupported, incremental", 2002, d2002.CapacityBytes, d2000.ChangeID, vsphere.ErrCBTUnavailable},
			{"another disk's change id", 2000, d2000.CapacityBytes, d2001.ChangeID, vsphere.ErrChangeIDInvalid},
			{"change id newer than the snapshot", 2000, d2000.CapacityBytes, d2000b.ChangeID, vsphere.ErrChangeIDInvalid},
			{"empty change id", 2000, d2000.CapacityBytes, "", vsphere.ErrChangeIDInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := snap1.ChangedAreas(ctx, tt.key, tt.capacity, tt.changeID)
				if !errors.Is(err, tt.want) {
					t.Fatalf("error = %v, want %v", err, tt.want)
				}
			})
		}
	})

	t.Run("reset cbt invalidates change ids", func(t *testing.T) {
		if err := l.ResetCBT("db1", "disk-2000"); err != nil {
			t.Fatal(err)
		}
		snap3, err := vm.CreateSnapshot(ctx, "sendense-job-3", "after reset", false)
		if err != nil {
			t.Fatal(err)
		}
		defer snap3.Remove(ctx)
		disks3, err := snap3.Disks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d := diskByKey(t, disks3, 2000)
		oldUUID, _, _ := vsphere.ParseChangeID(d2000b.ChangeID)
		newUUID, _, _ := vsphere.ParseChangeID(d.ChangeID)
		if oldUUID == newUUID {
			t.Fatalf("change id uuid unchanged after reset: %s", d.ChangeID)
		}
		if _, err := snap3.ChangedAreas(ctx, 2000, d.CapacityBytes, d2000b.ChangeID); !errors.Is(err, vsphere.ErrChangeIDInvalid) {
			t.Fatalf("incremental from before the reset: %v, want ErrChangeIDInvalid", err)
		}
		// The fallback, a full, works.
		got, err := snap3.ChangedAreas(ctx, 2000, d.CapacityBytes, "*")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			t.Fatal("no allocated areas after reset")
		}
	})

	for _, s := range []*vsphere.Snapshot{snap1, snap2} {
		if err := s.Remove(ctx); err != nil {
			t.Fatalf("remove %s: %v", s.Name(), err)
		}
	}
	if list, err := c.Snapshots(ctx, ""); err != nil || len(list) != 0 {
		t.Fatalf("snapshots after removal: %+v, %v", list, err)
	}
}

func TestLabQuiesceFailure(t *testing.T) {
	l := startLab(t, lab.Spec{VMs: []lab.VMSpec{
		{Name: "app1", CBT: true, QuiesceFails: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "16MiB"}}},
	}})
	c := connectLab(t, l)
	ctx := t.Context()
	vm, err := c.FindVM(ctx, labVM(t, l, "app1").InstanceUUID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = vm.CreateSnapshot(ctx, "sendense-job-9", "", true)
	if !errors.Is(err, vsphere.ErrQuiesceFailed) {
		t.Fatalf("quiesced snapshot of a vm whose quiescing fails: %v, want ErrQuiesceFailed", err)
	}
	if list, err := c.Snapshots(ctx, ""); err != nil || len(list) != 0 {
		t.Fatalf("a failed snapshot left %+v (%v)", list, err)
	}
	snap, err := vm.CreateSnapshot(ctx, "sendense-job-9", "", false)
	if err != nil {
		t.Fatalf("snapshot without quiescing: %v", err)
	}
	if err := snap.Remove(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLabCBTOffThenEnabled(t *testing.T) {
	l := startLab(t, lab.Spec{VMs: []lab.VMSpec{
		{Name: "web1", CBT: false, Disks: []lab.DiskSpec{{Key: 2000, Size: "32MiB", Fill: lab.FillRandom}}},
	}})
	c := connectLab(t, l)
	ctx := t.Context()
	info := labVM(t, l, "web1")
	vm, err := c.FindVM(ctx, info.InstanceUUID)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := vm.CreateSnapshot(ctx, "sendense-job-1", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snap.ChangedAreas(ctx, 2000, 32*mib, "*"); !errors.Is(err, vsphere.ErrCBTUnavailable) {
		t.Fatalf("changed areas with CBT off: %v, want ErrCBTUnavailable", err)
	}
	if err := snap.Remove(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := vm.EnableCBT(ctx); err != nil {
		t.Fatal(err)
	}
	if !labVM(t, l, "web1").CBT {
		t.Fatal("lab does not see CBT on after EnableCBT")
	}
	snap, err = vm.CreateSnapshot(ctx, "sendense-job-2", "", false)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Remove(ctx)
	got, err := snap.ChangedAreas(ctx, 2000, 32*mib, "*")
	if err != nil {
		t.Fatalf("changed areas after enabling CBT: %v", err)
	}
	sameExtents(t, "allocated areas", got, []vsphere.Extent{{Offset: 0, Length: 32 * mib}})
}

// TestLabReaper lists the sendense- snapshots a crash left behind and removes them by
// reference, leaving other snapshots alone.
func TestLabReaper(t *testing.T) {
	l := startLab(t, lab.Spec{VMs: []lab.VMSpec{
		{Name: "db1", CBT: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "16MiB"}}},
		{Name: "db2", CBT: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "16MiB"}}},
	}})
	c := connectLab(t, l)
	ctx := t.Context()
	var stale []*vsphere.Snapshot
	for _, name := range []string{"db1", "db2"} {
		vm, err := c.FindVM(ctx, labVM(t, l, name).InstanceUUID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := vm.CreateSnapshot(ctx, "nightly", "the user's own", false); err != nil {
			t.Fatal(err)
		}
		s, err := vm.CreateSnapshot(ctx, "sendense-"+name, "left by a crash", false)
		if err != nil {
			t.Fatal(err)
		}
		stale = append(stale, s)
	}
	list, err := c.Snapshots(ctx, "sendense-")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("sendense- snapshots = %+v, want 2", list)
	}
	for i, si := range list {
		want := stale[i]
		if si.MoRef != want.MoRef() || si.Name != want.Name() || si.VMUUID != want.VM().InstanceUUID || si.VMMoRef != want.VM().MoRef() {
			t.Errorf("listed %+v, want %s of %s", si, want.MoRef(), want.VM().Name)
		}
	}
	for _, si := range list {
		if err := c.RemoveSnapshotByRef(ctx, si.VMUUID, si.MoRef); err != nil {
			t.Fatalf("reap %s: %v", si.MoRef, err)
		}
	}
	if list, err := c.Snapshots(ctx, "sendense-"); err != nil || len(list) != 0 {
		t.Fatalf("after reaping: %+v, %v", list, err)
	}
	if list, err := c.Snapshots(ctx, "nightly"); err != nil || len(list) != 2 {
		t.Fatalf("the users' snapshots after reaping: %+v, %v", list, err)
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
	if err != nil || int64(len(b)) != n {
		t.Fatalf("GET %s: %d bytes (%v), want %d", u, len(b), err, n)
	}
	return b
}
