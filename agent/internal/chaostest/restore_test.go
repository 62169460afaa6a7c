package chaostest

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// An agent killed (SIGKILL) while it imports a restored VM leaves a VM and an open import
// lease; once it runs again, the restore ends (resumed from the start, or failed), the VM of
// the killed run is gone, and no lease stays open (the killed run's lease expires unrenewed,
// as vSphere's does: no other session can end it).
func TestKillAgentMidRestore(t *testing.T) {
	const leaseTimeout = 10 * time.Second // the agent renews every 2 s
	w := newWorldWith(t, "sqlite", nil, 42, lab.Options{LeaseTimeout: leaseTimeout})
	t.Cleanup(w.close)
	b := w.startBackup("", w.diskSums())
	if got, ok := w.waitFinal(b.ID, jobDeadline); !ok || got.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", got, tail(w.alogs.String(), 40))
	}

	var rs api.Restore
	req := api.RestoreRequest{BackupID: b.ID, Target: api.RestoreTarget{Source: "lab", Datacenter: w.lab.Datacenter(), Datastore: w.lab.Datastore(), Name: chaosVM + "-restored"}}
	if code := w.api(http.MethodPost, api.PathRestores, req, &rs); code != http.StatusAccepted {
		t.Fatalf("start restore: %d", code)
	}
	// The moment the hub knows the new VM, its disks are being imported: kill the agent then.
	var killedVM string
	testenv.WaitFor(t, jobDeadline, "the restore to create its vm", func() bool {
		var r api.Restore
		if w.api(http.MethodGet, api.Path(api.PathRestore, rs.ID), nil, &r) == http.StatusOK && r.VMRef != "" {
			killedVM = r.VMRef
			return true
		}
		if final(r.Status) {
			t.Fatalf("restore ended before the kill: %+v\n%s", r, tail(w.alogs.String(), 40))
		}
		time.Sleep(2 * time.Millisecond) // paces the polling
		return false
	})
	w.agent.kill()
	open := w.lab.OpenLeases()
	if len(open) != 1 {
		t.Fatalf("open import leases at the kill: %v, want the restore's one (the restore was not mid-import)\n%s", open, tail(w.alogs.String(), 40))
	}
	killedAt := time.Now()
	if !w.vmExists(killedVM) {
		t.Fatalf("the half-made vm %s is not there at the kill", killedVM)
	}

	w.startAgent()
	var r api.Restore
	testenv.WaitFor(t, jobDeadline, "the restore to end after the restart", func() bool {
		ok := w.api(http.MethodGet, api.Path(api.PathRestore, rs.ID), nil, &r) == http.StatusOK && final(r.Status)
		time.Sleep(50 * time.Millisecond) // paces the polling
		return ok
	})
	t.Logf("restore after the restart: %s %q (vm %s; killed run's vm %s)", r.Status, r.Error, r.VMRef, killedVM)
	if w.vmExists(killedVM) {
		t.Fatalf("the killed run's vm %s is still there after the restart (restore %s)", killedVM, r.Status)
	}
	switch r.Status {
	case api.JobSucceeded:
		// Resumed from the start: a new VM, complete.
		if r.VMRef == killedVM || !w.vmExists(r.VMRef) {
			t.Fatalf("resumed restore names vm %s (killed run's %s)", r.VMRef, killedVM)
		}
		w.compareRestored(r.VMRef)
	case api.JobFailed:
		if r.VMRef != "" && w.vmExists(r.VMRef) {
			t.Fatalf("failed restore left vm %s", r.VMRef)
		}
	default:
		t.Fatalf("restore after the restart: %+v", r)
	}
	testenv.WaitFor(t, leaseTimeout+time.Minute, "no import lease left open", func() bool {
		time.Sleep(100 * time.Millisecond) // paces the polling
		return len(w.lab.OpenLeases()) == 0
	})
	if st := w.lab.LeaseState(open[0]); st != lab.LeaseExpired && st != lab.LeaseAborted {
		t.Fatalf("the killed run's lease is %q", st)
	}
	t.Logf("the killed run's lease %s: %s %.1fs after the kill", open[0], w.lab.LeaseState(open[0]), time.Since(killedAt).Seconds())
}

// Cutting the agent's connections to the hub while it imports a restored VM's disks does not
// fail the restore: the image is reopened at the byte reached, and the disks arrive whole.
func TestRestoreSurvivesCutConnections(t *testing.T) {
	w := newWorld(t, "sqlite", nil, 43)
	t.Cleanup(w.close)
	b := w.startBackup("", w.diskSums())
	if got, ok := w.waitFinal(b.ID, jobDeadline); !ok || got.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", got, tail(w.alogs.String(), 40))
	}
	var rs api.Restore
	req := api.RestoreRequest{BackupID: b.ID, Target: api.RestoreTarget{Source: "lab", Datacenter: w.lab.Datacenter(), Datastore: w.lab.Datastore(), Name: chaosVM + "-cut"}}
	if code := w.api(http.MethodPost, api.PathRestores, req, &rs); code != http.StatusAccepted {
		t.Fatalf("start restore: %d", code)
	}
	// The agent logs this once the hub knows the VM, right before it opens the first image.
	testenv.WaitFor(t, jobDeadline, "the import to start", func() bool {
		time.Sleep(time.Millisecond) // paces the polling
		return strings.Contains(w.alogs.String(), "import lease ready")
	})
	// Three times: once the hub has sent 4 MiB more (the image is streaming), cut every
	// connection between agent and hub.
	cuts := 0
	var r api.Restore
	mark := w.proxy.fromHub.Load()
	testenv.WaitFor(t, jobDeadline, "the restore to end", func() bool {
		if cuts < 3 && w.proxy.fromHub.Load() > mark+4<<20 {
			w.proxy.cut()
			cuts++
			mark = w.proxy.fromHub.Load()
			return false
		}
		time.Sleep(time.Millisecond) // paces the polling
		return w.api(http.MethodGet, api.Path(api.PathRestore, rs.ID), nil, &r) == http.StatusOK && final(r.Status)
	})
	if r.Status != api.JobSucceeded {
		t.Fatalf("restore with %d cut connections: %+v\n%s", cuts, r, tail(w.alogs.String(), 40))
	}
	if !strings.Contains(w.alogs.String(), "image read broke off") {
		t.Fatalf("no image read was cut (%d cuts)\n%s", cuts, tail(w.alogs.String(), 60))
	}
	w.compareRestored(r.VMRef)
	t.Logf("restore succeeded through %d cuts", cuts)
}

// vmExists says whether the lab's vCenter has a VM of this moref.
func (w *world) vmExists(moref string) bool {
	w.t.Helper()
	for _, vm := range w.inventory() {
		if vm.MoRef == moref {
			return true
		}
	}
	return false
}

func (w *world) inventory() []api.VM {
	w.t.Helper()
	conn, err := w.srcs.Get("lab")
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	inv, err := conn.Inventory(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	return inv.VMs
}

// compareRestored checks a restored VM's disks byte for byte against the lab VM's.
func (w *world) compareRestored(moref string) {
	w.t.Helper()
	i := slices.IndexFunc(w.inventory(), func(vm api.VM) bool { return vm.MoRef == moref })
	got := w.inventory()[i]
	if len(got.Disks) != len(w.disks) {
		w.t.Fatalf("restored vm has %d disks, want %d", len(got.Disks), len(w.disks))
	}
	root := filepath.Join(w.lab.Dir(), "datastore")
	for j, d := range w.disks {
		rd := got.Disks[j]
		rel := strings.TrimSuffix(strings.TrimPrefix(rd.BackingFile, "["+rd.Datastore+"] "), ".vmdk") + "-flat.vmdk"
		if err := lab.CompareFiles(d.FlatPath, filepath.Join(root, rel), d.CapacityBytes); err != nil {
			w.t.Fatalf("restored disk %s: %v", d.DiskID, err)
		}
	}
}
