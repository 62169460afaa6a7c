package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sendense/sendense/agent/internal/lab"
)

// serve + write end to end: the lab from command-line flags, changed by the write command, and a
// vSphere client that sees exactly those writes in the next incremental.
func TestServeAndWrite(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	var serveErr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"serve", "--dir", dir, "--vm", "cli", "--disk", "64MiB:sparse:8MiB:3", "--disk", "8MiB",
			"--query-window", "16MiB", "--log-level", "warn"}, new(bytes.Buffer), &serveErr)
	}()
	st := waitReady(t, dir, done)
	if len(st.VMs) != 1 || st.VMs[0].Name != "cli" || len(st.VMs[0].Disks) != 2 || st.VMs[0].Disks[0].CapacityBytes != 64<<20 {
		t.Fatalf("lab.json VMs %+v", st.VMs)
	}

	c := connect(t, st)
	vm := findVM(t, c, "cli")
	_, disks1 := snapshot(t, c, vm, "before")
	base := disks1[2000].Backing.(*types.VirtualDiskFlatVer2BackingInfo).ChangeId

	var out bytes.Buffer
	if err := run(t.Context(), []string{"write", "--dir", dir, "--vm", "cli", "--disk", "disk-2000", "--percent", "10", "--seed", "9", "--json"}, &out, new(bytes.Buffer)); err != nil {
		t.Fatalf("write --percent: %v", err)
	}
	var res struct {
		Seed    int64        `json:"seed"`
		Bytes   int64        `json:"bytes"`
		Extents []lab.Extent `json:"extents"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("write --json output %q: %v", out.String(), err)
	}
	if res.Seed != 9 || len(res.Extents) != 6 || res.Bytes != 6<<20 {
		t.Errorf("10%% of 64 MiB: %+v, want seed 9 and six 1 MiB writes", res)
	}
	// Hidden writes change the bytes but not what CBT reports.
	flat := st.VMs[0].Disks[0].FlatPath
	before, err := os.ReadFile(flat)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), []string{"write", "--dir", dir, "--vm", "cli", "--disk", "disk-2000", "--percent", "5", "--seed", "11", "--hide-from-cbt"}, new(bytes.Buffer), new(bytes.Buffer)); err != nil {
		t.Fatalf("write --hide-from-cbt: %v", err)
	}
	if after, err := os.ReadFile(flat); err != nil || bytes.Equal(before, after) {
		t.Errorf("write --hide-from-cbt left the disk's bytes unchanged (%v)", err)
	}
	out.Reset()
	if err := run(t.Context(), []string{"write", "--dir", dir, "--vm", "cli", "--disk", "disk-2000", "--offset", "63MiB", "--length", "4096"}, &out, new(bytes.Buffer)); err != nil {
		t.Fatalf("write --offset: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || lines[0] != strconv.Itoa(63<<20)+" 4096" || !strings.HasPrefix(lines[1], "# 1 extents, 4096 bytes") {
		t.Errorf("write --offset printed %q", out.String())
	}

	snap2, disks2 := snapshot(t, c, vm, "after")
	got := changedAreas(t, c, vm.Reference(), snap2, disks2[2000], base)
	want := append(slices.Clone(res.Extents), lab.Extent{Offset: 63 << 20, Length: 4096})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("incremental after the write commands: %v, want %v", got, want)
	}

	if err := run(t.Context(), []string{"reset-cbt", "--dir", dir, "--vm", "cli", "--disk", "disk-2000"}, new(bytes.Buffer), new(bytes.Buffer)); err != nil {
		t.Errorf("reset-cbt: %v", err)
	}
	if err := run(t.Context(), []string{"resize", "--dir", dir, "--vm", "cli", "--disk", "disk-2001", "--size", "10MB"}, new(bytes.Buffer), new(bytes.Buffer)); err != nil {
		t.Errorf("resize: %v", err)
	}
	if st, _ := lab.ReadState(dir); st.VMs[0].Disks[1].CapacityBytes != 10<<20 {
		t.Errorf("capacity after resize to 10MB: %d, want 10 MiB", st.VMs[0].Disks[1].CapacityBytes)
	}
	err = run(t.Context(), []string{"write", "--dir", dir, "--vm", "nope", "--disk", "disk-2000", "--percent", "1"}, new(bytes.Buffer), new(bytes.Buffer))
	if !errors.Is(err, lab.ErrVMNotFound) {
		t.Errorf("write to an unknown VM: %v, want ErrVMNotFound", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, serveErr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, lab.StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab.json after exit: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no inventory", []string{"serve", "--dir", dir}, "exactly one"},
		{"two inventories", []string{"serve", "--dir", dir, "--demo", "--vm", "a"}, "exactly one"},
		{"disk before vm", []string{"serve", "--dir", dir, "--disk", "1GiB"}, "must follow a --vm"},
		{"bad disk spec", []string{"serve", "--dir", dir, "--vm", "a", "--disk", "1GiB:sparse:1MiB:x"}, "seed"},
		{"bad spec file", []string{"serve", "--dir", dir, "--spec", writeFile(t, "vms: [{name: a, disks: [{size: 1Moo}]}]")}, "unknown unit"},
		{"no dir", []string{"serve", "--demo"}, "dir"},
		{"write without amount", []string{"write", "--dir", dir, "--vm", "a", "--disk", "disk-2000"}, "--percent"},
		{"hide without percent", []string{"write", "--dir", dir, "--vm", "a", "--disk", "disk-2000", "--offset", "0", "--length", "1", "--hide-from-cbt"}, "--hide-from-cbt needs --percent"},
		{"write with both", []string{"write", "--dir", dir, "--vm", "a", "--disk", "disk-2000", "--percent", "1", "--offset", "0", "--length", "1"}, "not both"},
		{"write without a lab", []string{"write", "--dir", dir, "--vm", "a", "--disk", "disk-2000", "--percent", "1"}, "lab.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), tt.args, new(bytes.Buffer), new(bytes.Buffer))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run %v: %v, want an error mentioning %q", tt.args, err, tt.want)
			}
		})
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"version"}, &out, new(bytes.Buffer)); err != nil || !strings.HasPrefix(out.String(), "sendense-lab ") {
		t.Errorf("version: %q, %v", out.String(), err)
	}
}

func writeFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitReady waits for lab.json (written atomically once the lab is ready) or serve's failure.
func waitReady(t *testing.T, dir string, done <-chan error) lab.State {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		if st, err := lab.ReadState(dir); err == nil {
			return st
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended before it was ready: %v", err)
		case <-deadline:
			t.Fatal("no lab.json after two minutes")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// connect logs in as an agent would from lab.json: CA file, username, password file.
func connect(t *testing.T, st lab.State) *vim25.Client {
	t.Helper()
	ctx := t.Context()
	u, err := soap.ParseURL(st.SDKURL)
	if err != nil {
		t.Fatal(err)
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(st.CAFile); err != nil {
		t.Fatal(err)
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := os.ReadFile(st.PasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := session.NewManager(c).Login(ctx, url.UserPassword(st.Username, strings.TrimSpace(string(pw)))); err != nil {
		t.Fatalf("login: %v", err)
	}
	return c
}

func findVM(t *testing.T, c *vim25.Client, name string) *object.VirtualMachine {
	t.Helper()
	ctx := t.Context()
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = v.Destroy(ctx) }()
	refs, err := v.Find(ctx, []string{"VirtualMachine"}, property.Match{"name": name})
	if err != nil || len(refs) != 1 {
		t.Fatalf("find vm %s: %v (%d found)", name, err, len(refs))
	}
	return object.NewVirtualMachine(c, refs[0])
}

func snapshot(t *testing.T, c *vim25.Client, vm *object.VirtualMachine, name string) (types.ManagedObjectReference, map[int32]*types.VirtualDisk) {
	t.Helper()
	ctx := t.Context()
	task, err := vm.CreateSnapshot(ctx, name, "", false, false)
	if err != nil {
		t.Fatal(err)
	}
	res, err := task.WaitForResult(ctx)
	if err != nil {
		t.Fatalf("snapshot %s: %v", name, err)
	}
	ref := res.Result.(types.ManagedObjectReference)
	var s mo.VirtualMachineSnapshot
	if err := vm.Properties(ctx, ref, []string{"config.hardware"}, &s); err != nil {
		t.Fatal(err)
	}
	disks := make(map[int32]*types.VirtualDisk)
	for _, d := range object.VirtualDeviceList(s.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
		disks[d.GetVirtualDevice().Key] = d.(*types.VirtualDisk)
	}
	return ref, disks
}

// changedAreas loops QueryChangedDiskAreas over the disk's windows and merges touching areas.
func changedAreas(t *testing.T, c *vim25.Client, vm, snap types.ManagedObjectReference, disk *types.VirtualDisk, changeID string) []lab.Extent {
	t.Helper()
	var out []lab.Extent
	for off := int64(0); off < disk.CapacityInBytes; {
		res, err := methods.QueryChangedDiskAreas(t.Context(), c, &types.QueryChangedDiskAreas{
			This: vm, Snapshot: &snap, DeviceKey: disk.Key, StartOffset: off, ChangeId: changeID,
		})
		if err != nil {
			t.Fatalf("QueryChangedDiskAreas at %d: %v", off, err)
		}
		for _, a := range res.Returnval.ChangedArea {
			if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == a.Start {
				out[n-1].Length += a.Length
				continue
			}
			out = append(out, lab.Extent{Offset: a.Start, Length: a.Length})
		}
		off = res.Returnval.StartOffset + res.Returnval.Length
	}
	return out
}
