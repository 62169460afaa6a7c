package lab

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// Snapshot removal in any order, with children and all at once, never touches disk files: the
// simulator alone deletes a disk's flat file when a snapshot outlives another one (its file keys
// get renumbered), which the lab repairs.
func TestSnapshotRemovalKeepsDisks(t *testing.T) {
	spec := Spec{VMs: []VMSpec{{Name: "keep", CBT: true, Disks: []DiskSpec{
		{Size: "4MiB", Fill: FillRandom}, {Size: "4MiB", Fill: FillCompressible}, {Size: "4MiB", Fill: FillRandom},
	}}}}
	l := startLab(t, spec, Options{})
	c := login(t, l)
	ctx := t.Context()
	vm, _ := findVM(t, c, "keep")
	info, err := l.VM("keep")
	if err != nil {
		t.Fatal(err)
	}
	// Every file of the VM but snapshot files must survive with its content: disks, descriptors,
	// configuration, log.
	vmDir := filepath.Dir(info.Disks[0].FlatPath)
	before := make(map[string][]byte)
	entries, err := os.ReadDir(vmDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(vmDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		before[e.Name()] = b
	}
	if len(before) < 9 {
		t.Fatalf("vm directory holds %d files, want configuration, log and 3 disks of 2 files", len(before))
	}
	check := func(step string) {
		t.Helper()
		for name, want := range before {
			got, err := os.ReadFile(filepath.Join(vmDir, name))
			if name == "vmware.log" && err == nil {
				continue // the simulator appends to its log
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("after %s: file %s: %v (content changed: %v)", step, name, err, !bytes.Equal(got, want))
			}
		}
	}

	var snaps []types.ManagedObjectReference
	for _, name := range []string{"s1", "s2", "s3", "s4"} {
		s, _ := snapshot(t, vm, name, false)
		snaps = append(snaps, s)
	}
	for i, s := range []types.ManagedObjectReference{snaps[0], snaps[2], snaps[1]} {
		if err := removeSnapshot(ctx, c, s); err != nil {
			t.Fatalf("remove snapshot %d: %v", i, err)
		}
		check("removing a snapshot")
	}
	// s4 with a child, removed with its children.
	snapshot(t, vm, "s5", false)
	res, err := methods.RemoveSnapshot_Task(ctx, c, &types.RemoveSnapshot_Task{This: snaps[3], RemoveChildren: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := object.NewTask(c, res.Returnval).Wait(ctx); err != nil {
		t.Fatal(err)
	}
	check("removing a snapshot with children")
	for _, name := range []string{"a", "b", "c"} {
		snapshot(t, vm, name, false)
	}
	task, err := vm.RemoveAllSnapshot(ctx, nil)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("remove all snapshots: %v", err)
	}
	check("removing all snapshots")
	if n := snapshotCount(t, vm); n != 0 {
		t.Errorf("%d snapshots left", n)
	}
	entries, err = os.ReadDir(vmDir)
	if err != nil {
		t.Fatal(err)
	}
	var vmsn []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".vmsn") {
			vmsn = append(vmsn, e.Name())
		}
	}
	// Only the child removed with its parent keeps its file (the simulator forgets it).
	if len(vmsn) > 1 {
		t.Errorf("snapshot files left behind: %v", vmsn)
	}
}
