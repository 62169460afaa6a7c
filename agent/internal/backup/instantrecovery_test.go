package backup_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/instant"
	"github.com/sendense/sendense/shared/api"
)

// irAction lets the agent claim the next instant-recovery action and carry it out against the
// lab, and returns the session as the hub records it afterwards.
func (e *env) irAction(id, action string) api.InstantRecovery {
	e.t.Helper()
	job, err := e.hc.NextInstantRecovery(e.t.Context(), 10*time.Second, nil)
	if err != nil || job == nil || job.ID != id || job.Action != action {
		e.t.Fatalf("claim %s of %s: %+v %v", action, id, job, err)
	}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := instant.NewRunner(e.hc, func(ctx context.Context, name string) (instant.Target, error) {
		c, err := e.srcs.Get(name)
		if err != nil {
			return nil, err
		}
		return c.Client(ctx)
	}, log)
	if err := r.Run(e.t.Context(), job); err != nil {
		e.t.Fatalf("%s of %s: %v\n%s", action, id, err, e.logs)
	}
	var ir api.InstantRecovery
	if code := e.api(http.MethodGet, api.Path(api.PathInstantRecovery, id), nil, &ir); code != http.StatusOK {
		e.t.Fatalf("get %s: %d", id, code)
	}
	return ir
}

// Instant recovery end to end on the lab: the hub (a real sendense-hub process) serves the
// backup, the agent mounts the export on the host as a datastore, registers the VM from the
// .vmx the hub wrote and powers it on; DELETE has it power off, unregister and unmount, and
// the hub drops the session's folder and overlay.
func TestInstantRecoveryOnTheLab(t *testing.T) {
	e := newEnv(t, twoDiskSpec("db1"), envOptions{instantRecovery: true})
	configureVM(t, e.lab, "db1")
	b := e.backup("db1", "")
	if b.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", b, e.logs)
	}
	// Hosts added to vCenter by name: the hub lets that name's addresses mount.
	host := e.lab.Hosts()[0]
	if err := e.lab.RenameHost(t.Context(), host, "localhost"); err != nil {
		t.Fatal(err)
	}
	req := api.InstantRecoveryRequest{BackupID: b.ID, Host: "localhost", Name: "db1-instant", PowerOn: true}
	start := time.Now()
	var ir api.InstantRecovery
	if code := e.api(http.MethodPost, api.PathInstantRecoveries, req, &ir); code != http.StatusAccepted {
		t.Fatalf("start: %d\n%s", code, e.hub.Logs())
	}
	ir = e.irAction(ir.ID, api.IRActionStart)
	t.Logf("instant recovery registered and powered on %.2fs after the request", time.Since(start).Seconds())
	if ir.Status != api.IRRunning || ir.VMRef == "" || ir.DatastoreRef == "" || ir.Error != "" {
		t.Fatalf("after start: %+v\n%s", ir, e.logs)
	}
	vm, ok := e.lab.FindVMByName("db1-instant")
	if !ok || vm.MoRef != ir.VMRef || vm.PowerState != "poweredOn" || vm.VMPathName != "[sendense-"+ir.ID+"] db1-instant/db1-instant.vmx" {
		t.Fatalf("registered vm %+v (found %v), session %+v", vm, ok, ir)
	}
	nas := e.lab.NASDatastores()
	if len(nas) != 1 || nas[0].RemoteHost != "127.0.0.1" || nas[0].RemotePath != "/"+ir.ID || nas[0].Name != "sendense-"+ir.ID {
		t.Fatalf("nfs datastores %+v", nas)
	}
	folder := filepath.Join(e.hub.DataDir, "instant-recovery", ir.ID)
	for _, f := range []string{"db1-instant.vmx", "db1-instant.vmdk", "db1-instant_1.vmdk"} {
		if _, err := os.Stat(filepath.Join(folder, "export", "db1-instant", f)); err != nil {
			t.Fatalf("the export lacks %s: %v", f, err)
		}
	}

	if code := e.api(http.MethodDelete, api.Path(api.PathInstantRecovery, ir.ID), nil, &ir); code != http.StatusAccepted || ir.Status != api.IRStopping {
		t.Fatalf("delete: %d %+v", code, ir)
	}
	ir = e.irAction(ir.ID, api.IRActionStop)
	if ir.Status != api.IRStopped {
		t.Fatalf("after stop: %+v\n%s", ir, e.logs)
	}
	if _, ok := e.lab.FindVMByName("db1-instant"); ok {
		t.Fatal("the vm is still registered after the stop")
	}
	if nas := e.lab.NASDatastores(); len(nas) != 0 {
		t.Fatalf("the datastore is still mounted after the stop: %+v", nas)
	}
	if _, err := os.Stat(folder); !os.IsNotExist(err) {
		t.Fatalf("the session's folder and overlay are left: %v", err)
	}
	if n, _ := e.lab.VMs(); len(n) != 1 {
		t.Fatalf("the lab has %d VMs after the stop, want the source only", len(n))
	}

	// A second session migrates to the lab's datastore: the VM stays, the export goes.
	req.Name = "db1-moved"
	if code := e.api(http.MethodPost, api.PathInstantRecoveries, req, &ir); code != http.StatusAccepted {
		t.Fatalf("second start: %d", code)
	}
	ir = e.irAction(ir.ID, api.IRActionStart)
	if ir.Status != api.IRRunning {
		t.Fatalf("second start: %+v", ir)
	}
	if code := e.api(http.MethodPost, api.Path(api.PathInstantRecoveryMigrate, ir.ID), api.InstantRecoveryMigrateRequest{Datastore: e.lab.Datastore()}, &ir); code != http.StatusAccepted || ir.Status != api.IRMigrating {
		t.Fatalf("migrate: %d %+v", code, ir)
	}
	ir = e.irAction(ir.ID, api.IRActionMigrate)
	if ir.Status != api.IRMigrated {
		t.Fatalf("after the migration: %+v\n%s", ir, e.logs)
	}
	vm, ok = e.lab.FindVMByName("db1-moved")
	if !ok || vm.PowerState != "poweredOn" || vm.VMPathName != "["+e.lab.Datastore()+"] db1-moved/db1-moved.vmx" {
		t.Fatalf("migrated vm %+v (found %v)", vm, ok)
	}
	if nas := e.lab.NASDatastores(); len(nas) != 0 {
		t.Fatalf("the export is still mounted after the migration: %+v", nas)
	}
	if _, err := os.Stat(filepath.Join(e.hub.DataDir, "instant-recovery", ir.ID)); !os.IsNotExist(err) {
		t.Fatalf("the migrated session's folder and overlay are left: %v", err)
	}
}
