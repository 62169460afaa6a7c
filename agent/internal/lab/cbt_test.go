package lab

import (
	"context"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// cbtSpec is one VM with a 64 MiB sparse disk; with a 16 MiB query window a query takes four
// calls, so the tests exercise the caller's loop.
func cbtSpec() Spec {
	return Spec{VMs: []VMSpec{{Name: "db", CBT: true, Disks: []DiskSpec{{Size: "64MiB", Fill: FillSparse, Data: "8MiB", Seed: 7}}}}}
}

const cbtWindow = 16 << 20

func TestChangedBlockTracking(t *testing.T) {
	requireHoles(t)
	l := startLab(t, cbtSpec(), Options{QueryWindow: cbtWindow})
	c := login(t, l)
	ctx := t.Context()
	vm, _ := findVM(t, c, "db")
	info, err := l.VM("db")
	if err != nil {
		t.Fatal(err)
	}
	flat := info.Disks[0].FlatPath

	// Snapshot 1: a full backup lists the allocated areas.
	snap1, disks1 := snapshot(t, vm, "s1", false)
	id1 := changeID(disks1[2000])
	if _, seq, ok := parseChangeID(id1); !ok || seq != 1 {
		t.Fatalf("first snapshot's change ID %q, want <uuid>/1", id1)
	}
	full, calls, err := changedAreas(ctx, c, vm.Reference(), snap1, disks1[2000], "*")
	if err != nil {
		t.Fatalf("full query: %v", err)
	}
	if calls != 4 {
		t.Errorf("full query took %d calls, want 4 windows of 16 MiB", calls)
	}
	f, err := os.Open(flat)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantFull, err := dataExtents(f, 0, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(full, wantFull) || !reflect.DeepEqual(full, sparseLayout(64<<20, 8<<20, 7)) {
		t.Errorf("full query %v, allocated %v", full, wantFull)
	}

	// Writes at two offsets, then snapshot 2: the incremental is exactly those writes.
	writes := []Extent{{Offset: 5<<20 + 100, Length: 3000}, {Offset: 40 << 20, Length: 1 << 20}}
	for _, w := range writes {
		if err := l.Write("db", "disk-2000", w.Offset, make([]byte, w.Length)); err != nil {
			t.Fatal(err)
		}
	}
	snap2, disks2 := snapshot(t, vm, "s2", false)
	id2 := changeID(disks2[2000])
	got, _, err := changedAreas(ctx, c, vm.Reference(), snap2, disks2[2000], id1)
	if err != nil {
		t.Fatalf("incremental query: %v", err)
	}
	if !reflect.DeepEqual(got, writes) {
		t.Errorf("incremental since %s = %v, want %v", id1, got, writes)
	}
	if got, _, err := changedAreas(ctx, c, vm.Reference(), snap2, disks2[2000], id2); err != nil || len(got) != 0 {
		t.Errorf("query since the snapshot's own change ID = %v, %v; want nothing", got, err)
	}

	// govmomi's helper reads the base change ID from the base snapshot.
	first, err := vm.QueryChangedDiskAreas(ctx, &snap1, &snap2, disks2[2000], 0)
	if err != nil {
		t.Fatalf("govmomi QueryChangedDiskAreas: %v", err)
	}
	if first.StartOffset != 0 || first.Length != cbtWindow || len(first.ChangedArea) != 1 || first.ChangedArea[0].Start != writes[0].Offset {
		t.Errorf("govmomi first window %+v", first)
	}

	// A change ID newer than the snapshot faults.
	if _, _, err := changedAreas(ctx, c, vm.Reference(), snap1, disks1[2000], id2); !isFault[*types.InvalidArgument](err) {
		t.Errorf("query of snapshot 1 since snapshot 2's change ID: %v, want InvalidArgument", err)
	}

	// Removing snapshot 1 leaves snapshot 2 queryable; a write after snapshot 2 shows in 3.
	if err := removeSnapshot(ctx, c, snap1); err != nil {
		t.Fatalf("remove snapshot 1: %v", err)
	}
	if n := snapshotCount(t, vm); n != 1 {
		t.Errorf("after removing the root snapshot the VM has %d root snapshots, want 1", n)
	}
	if err := l.Write("db", "disk-2000", 60<<20, []byte("x")); err != nil {
		t.Fatal(err)
	}
	snap3, disks3 := snapshot(t, vm, "s3", false)
	got, _, err = changedAreas(ctx, c, vm.Reference(), snap3, disks3[2000], id2)
	if err != nil || !reflect.DeepEqual(got, []Extent{{Offset: 60 << 20, Length: 1}}) {
		t.Errorf("incremental 2→3 = %v, %v", got, err)
	}
	if got, _, err := changedAreas(ctx, c, vm.Reference(), snap3, disks3[2000], id1); err != nil || len(got) != 3 {
		t.Errorf("incremental 1→3 = %v, %v; want the three writes", got, err)
	}

	// A CBT reset invalidates every change ID: old ones fault, a new snapshot has a new UUID.
	if err := l.ResetCBT("db", "disk-2000"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := changedAreas(ctx, c, vm.Reference(), snap3, disks3[2000], id2); !isFault[*types.FileFault](err) {
		t.Errorf("query of a snapshot taken before the reset: %v, want FileFault", err)
	}
	snap4, disks4 := snapshot(t, vm, "s4", false)
	id4 := changeID(disks4[2000])
	if uuidOf(id4) == uuidOf(id2) {
		t.Errorf("change ID after reset %q keeps the UUID of %q", id4, id2)
	}
	if _, _, err := changedAreas(ctx, c, vm.Reference(), snap4, disks4[2000], id2); !isFault[*types.FileFault](err) {
		t.Errorf("query with a change ID from before the reset: %v, want FileFault", err)
	}
	if _, _, err := changedAreas(ctx, c, vm.Reference(), snap4, disks4[2000], "*"); err != nil {
		t.Errorf("full query after reset: %v", err)
	}

	// CBT off: queries fault and new snapshots carry no change ID.
	setCBT(t, l, vm, "db", false)
	if _, _, err := changedAreas(ctx, c, vm.Reference(), snap4, disks4[2000], "*"); !isFault[*types.FileFault](err) {
		t.Errorf("query with CBT off: %v, want FileFault", err)
	}
	_, disks5 := snapshot(t, vm, "s5", false)
	if id := changeID(disks5[2000]); id != "" {
		t.Errorf("snapshot with CBT off has change ID %q", id)
	}

	// CBT on again through ReconfigVM: a new UUID, and writes are journaled from then on.
	setCBT(t, l, vm, "db", true)
	snap6, disks6 := snapshot(t, vm, "s6", false)
	id6 := changeID(disks6[2000])
	if id6 == "" || uuidOf(id6) == uuidOf(id4) {
		t.Fatalf("change ID after CBT off/on %q (before: %q)", id6, id4)
	}
	if _, _, err := changedAreas(ctx, c, vm.Reference(), snap6, disks6[2000], id4); !isFault[*types.FileFault](err) {
		t.Errorf("query with a change ID from before CBT off/on: %v, want FileFault", err)
	}
	if err := l.Write("db", "disk-2000", 1<<20, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	snap7, disks7 := snapshot(t, vm, "s7", false)
	got, _, err = changedAreas(ctx, c, vm.Reference(), snap7, disks7[2000], id6)
	if err != nil || !reflect.DeepEqual(got, []Extent{{Offset: 1 << 20, Length: 4096}}) {
		t.Errorf("incremental after CBT on = %v, %v", got, err)
	}
}

func TestChangedBlockTrackingFaults(t *testing.T) {
	spec := Spec{VMs: []VMSpec{
		{Name: "mixed", CBT: true, Disks: []DiskSpec{
			{Key: 2000, Size: "8MiB", Fill: FillRandom},
			{Key: 2001, Size: "8MiB", CBTUnsupported: true},
			{Key: 2002, Size: "8MiB", Mode: ModeIndependentPersistent},
		}},
		{Name: "nocbt", Disks: []DiskSpec{{Size: "8MiB", Fill: FillRandom}}},
	}}
	l := startLab(t, spec, Options{})
	c := login(t, l)
	ctx := t.Context()
	vm, _ := findVM(t, c, "mixed")
	snap, disks := snapshot(t, vm, "s", false)
	other, _ := findVM(t, c, "nocbt")
	otherSnap, otherDisks := snapshot(t, other, "s", false)

	if id := changeID(disks[2000]); id == "" {
		t.Fatal("tracked disk has no change ID")
	}
	query := func(vm, snap types.ManagedObjectReference, key int32, offset int64, id string) error {
		_, err := methods.QueryChangedDiskAreas(ctx, c, &types.QueryChangedDiskAreas{
			This: vm, Snapshot: &snap, DeviceKey: key, StartOffset: offset, ChangeId: id,
		})
		return err
	}
	tests := []struct {
		name string
		err  error
		want string // fault type
	}{
		{"tracked disk", query(vm.Reference(), snap, 2000, 0, "*"), ""},
		{"cbt unsupported disk", query(vm.Reference(), snap, 2001, 0, "*"), "FileFault"},
		{"independent disk", query(vm.Reference(), snap, 2002, 0, "*"), "FileFault"},
		{"unknown device key", query(vm.Reference(), snap, 2999, 0, "*"), "InvalidArgument"},
		{"offset past the end", query(vm.Reference(), snap, 2000, 9<<20, "*"), "InvalidArgument"},
		{"malformed change ID", query(vm.Reference(), snap, 2000, 0, "52 aa"), "InvalidArgument"},
		{"foreign UUID", query(vm.Reference(), snap, 2000, 0, "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1"), "FileFault"},
		{"snapshot of another VM", query(vm.Reference(), otherSnap, 2000, 0, "*"), "InvalidArgument"},
		{"VM without CBT", query(other.Reference(), otherSnap, 2000, 0, "*"), "FileFault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if tt.err != nil {
				f := faultOf(tt.err)
				if f == nil {
					t.Fatalf("error %v is not a vSphere fault", tt.err)
				}
				got = reflect.TypeOf(f).Elem().Name()
			}
			if got != tt.want {
				t.Errorf("fault %q (%v), want %q", got, tt.err, tt.want)
			}
		})
	}
	for key, d := range map[int32]string{2001: "unsupported", 2002: "independent"} {
		if id := changeID(disks[key]); id != "" {
			t.Errorf("%s disk %d has change ID %q", d, key, id)
		}
	}
	if id := changeID(otherDisks[2000]); id != "" {
		t.Errorf("disk of a VM without CBT has change ID %q", id)
	}
}

func TestQuiesceFailure(t *testing.T) {
	spec := Spec{VMs: []VMSpec{
		{Name: "stubborn", CBT: true, QuiesceFails: true, Disks: []DiskSpec{{Size: "4MiB"}}},
		{Name: "calm", CBT: true, Disks: []DiskSpec{{Size: "4MiB"}}},
	}}
	l := startLab(t, spec, Options{})
	c := login(t, l)
	ctx := t.Context()
	stubborn, _ := findVM(t, c, "stubborn")
	calm, _ := findVM(t, c, "calm")

	_, err := createSnapshot(ctx, stubborn, "q", true)
	if !isFault[*types.ApplicationQuiesceFault](err) {
		t.Fatalf("quiesced snapshot of stubborn: %v, want ApplicationQuiesceFault", err)
	}
	task, err := stubborn.CreateSnapshotEx(ctx, "qx", "", false, &types.VirtualMachineGuestQuiesceSpec{})
	if err == nil {
		err = task.Wait(ctx)
	}
	if !isFault[*types.ApplicationQuiesceFault](err) {
		t.Fatalf("CreateSnapshotEx with quiesce spec: %v, want ApplicationQuiesceFault", err)
	}
	if n := snapshotCount(t, stubborn); n != 0 {
		t.Errorf("failed quiesced snapshots left %d snapshots", n)
	}
	if _, err := createSnapshot(ctx, stubborn, "crash-consistent", false); err != nil {
		t.Errorf("snapshot without quiesce: %v", err)
	}
	if _, err := createSnapshot(ctx, calm, "q", true); err != nil {
		t.Errorf("quiesced snapshot of calm: %v", err)
	}
	if n := snapshotCount(t, stubborn); n != 1 {
		t.Errorf("stubborn has %d snapshots, want 1", n)
	}
}

func removeSnapshot(ctx context.Context, c *vim25.Client, snap types.ManagedObjectReference) error {
	res, err := methods.RemoveSnapshot_Task(ctx, c, &types.RemoveSnapshot_Task{This: snap, RemoveChildren: false})
	if err != nil {
		return err
	}
	return object.NewTask(c, res.Returnval).Wait(ctx)
}

func snapshotCount(t *testing.T, vm *object.VirtualMachine) int {
	t.Helper()
	var props mo.VirtualMachine
	if err := vm.Properties(t.Context(), vm.Reference(), []string{"rootSnapshot"}, &props); err != nil {
		t.Fatal(err)
	}
	return len(props.RootSnapshot)
}

func setCBT(t *testing.T, l *Lab, vm *object.VirtualMachine, name string, on bool) {
	t.Helper()
	ctx := t.Context()
	task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(on)})
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("set changeTrackingEnabled=%v: %v", on, err)
	}
	info, err := l.VM(name)
	if err != nil || info.CBT != on {
		t.Fatalf("lab sees CBT %v (%v), want %v", info.CBT, err, on)
	}
}

func uuidOf(changeID string) string {
	i := strings.LastIndexByte(changeID, '/')
	return changeID[:max(i, 0)]
}

// isFault reports whether err carries a vSphere fault of type F.
func isFault[F types.BaseMethodFault](err error) bool {
	_, ok := faultOf(err).(F)
	return ok
}
