package vsphere_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/agent/internal/vsphere"
)

func TestInstantRecoveryOnTheLab(t *testing.T) {
	// The export's folder as the NFS server shows it: the .vmx and a disk.
	export := t.TempDir()
	if err := os.Mkdir(filepath.Join(export, "web01"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(export, "web01", "web01.vmx"), []byte("displayName = \"web01\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var mounted []string
	l, err := lab.Start(t.Context(), lab.Spec{}, lab.Options{Dir: t.TempDir(), NASDir: func(host, path string) (string, error) {
		mounted = append(mounted, host+":"+path)
		return export, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	c := connectLab(t, l)
	host := l.Hosts()[0]
	spec := vsphere.InstantSpec{
		ID: "ir-20261130-1", Host: host, NFSServer: "192.0.2.5", NFSPath: "/ir-20261130-1",
		VMX: "web01/web01.vmx", Name: "web01-instant", PowerOn: true,
	}
	got, err := c.StartInstant(t.Context(), spec)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	nas := l.NASDatastores()
	if len(nas) != 1 || nas[0].Name != "sendense-ir-20261130-1" || nas[0].RemoteHost != "192.0.2.5" || nas[0].RemotePath != "/ir-20261130-1" || nas[0].VMs != 1 {
		t.Fatalf("nfs datastores after start: %+v", nas)
	}
	vm, ok := l.FindVMByName("web01-instant")
	if !ok || vm.MoRef != got.VMRef || vm.PowerState != "poweredOn" || vm.VMPathName != "[sendense-ir-20261130-1] web01/web01.vmx" {
		t.Fatalf("registered vm: %+v (found %v), start returned %+v", vm, ok, got)
	}
	// Run again (an agent restart): the datastore and VM are reused, nothing doubles.
	again, err := c.StartInstant(t.Context(), spec)
	if err != nil || again != got {
		t.Fatalf("start again: %+v, %v; first %+v", again, err, got)
	}
	if n := len(l.NASDatastores()); n != 1 || len(mounted) != 1 {
		t.Fatalf("start again: %d datastores, %d mounts", n, len(mounted))
	}

	if err := c.StopInstant(t.Context(), spec.ID, host); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, ok := l.FindVMByName("web01-instant"); ok {
		t.Fatal("vm still registered after stop")
	}
	if nas := l.NASDatastores(); len(nas) != 0 {
		t.Fatalf("datastore still mounted after stop: %+v", nas)
	}
	if _, err := os.Stat(filepath.Join(export, "web01", "web01.vmx")); err != nil {
		t.Fatalf("stop touched the export's files: %v", err)
	}
	if err := c.StopInstant(t.Context(), spec.ID, host); err != nil {
		t.Fatalf("stop again: %v", err)
	}
	if _, err := c.StartInstant(t.Context(), vsphere.InstantSpec{ID: "x", Host: "no-such-host"}); !errors.Is(err, vsphere.ErrTargetNotFound) {
		t.Fatalf("start on an unknown host: %v, want ErrTargetNotFound", err)
	}

	// Migrate: the VM moves to the lab's datastore and keeps running; the export is unmounted.
	spec.ID = "ir-20261130-2"
	got, err = c.StartInstant(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.MigrateInstant(t.Context(), spec.ID, host, "NoSuchDS"); !errors.Is(err, vsphere.ErrTargetNotFound) {
		t.Fatalf("migrate to an unknown datastore: %v, want ErrTargetNotFound", err)
	}
	moved, err := c.MigrateInstant(t.Context(), spec.ID, host, l.Datastore())
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	vm, ok = l.FindVMByName("web01-instant")
	if !ok || vm.MoRef != got.VMRef || moved.VMRef != got.VMRef || vm.PowerState != "poweredOn" || vm.VMPathName != "["+l.Datastore()+"] web01/web01.vmx" {
		t.Fatalf("migrated vm %+v (found %v), migrate returned %+v", vm, ok, moved)
	}
	if nas := l.NASDatastores(); len(nas) != 0 {
		t.Fatalf("the export is still mounted after the migration: %+v", nas)
	}
	if again, err := c.MigrateInstant(t.Context(), spec.ID, host, l.Datastore()); err != nil || again.VMRef != "" {
		t.Fatalf("migrate again: %+v %v", again, err)
	}
	// A stop after the migration leaves the migrated VM alone.
	if err := c.StopInstant(t.Context(), spec.ID, host); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.FindVMByName("web01-instant"); !ok {
		t.Fatal("a stop after the migration removed the migrated vm")
	}
}
