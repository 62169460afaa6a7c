package api_test

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/nfsexport"
	"github.com/sendense/sendense/hub/internal/nfstest"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/hub/internal/verify"
	"github.com/sendense/sendense/shared/api"
)

// The NFS client of these tests is the Go client github.com/willscott/go-nfs-client: this
// machine's kernel has no NFS client to mount with.

// mountIR mounts a session's export as the ESXi host would.
func mountIR(t *testing.T, addr, id string) (*nfsc.Target, error) {
	t.Helper()
	c, err := nfstest.Dial(addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(c.Close)
	m := nfsc.Mount{Client: c}
	return m.Mount(nfsexport.Path(id), rpc.AuthNull)
}

func nfsRead(t *testing.T, tg *nfsc.Target, name string) []byte {
	t.Helper()
	fi, _, err := tg.Lookup(name)
	if err != nil {
		t.Fatalf("lookup %s: %v", name, err)
	}
	f, err := tg.Open(name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

func nfsWrite(t *testing.T, tg *nfsc.Target, name string, off int64, p []byte) error {
	t.Helper()
	f, err := tg.OpenFile(name, 0o644)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(p)
	return err
}

// An instant recovery serves the restore point over NFS to the named host before the agent
// hears of it; the agent mounts, registers and boots it, and a DELETE has it undo all that,
// after which the overlay is gone. The guest's writes never reach the repository, and a hub
// restart serves the running session again with its writes.
func TestInstantRecoveryLifecycle(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		backupID, img := restorableBackup(t, h, a, true)
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		op := h.client(nil)
		req := api.InstantRecoveryRequest{BackupID: backupID, Host: "esx1.lab", Name: "pgtest1-ir", PowerOn: true,
			NetworkMap: map[string]string{"VM Network": "Recovery Net"}}

		if code, _ := h.call(op, http.MethodPost, api.PathInstantRecoveries, viewer, req, nil); code != http.StatusForbidden {
			t.Fatalf("viewer may not start an instant recovery: %d", code)
		}
		for field, bad := range map[string]api.InstantRecoveryRequest{
			"host":        {BackupID: backupID, Name: "x"},
			"backup_id":   {BackupID: "bk-none", Host: "esx1.lab", Name: "x"},
			"network_map": {BackupID: backupID, Host: "esx1.lab", Name: "x", NetworkMap: map[string]string{"Nope": "y"}},
		} {
			if code, e := h.call(op, http.MethodPost, api.PathInstantRecoveries, operator, bad, nil); code != http.StatusBadRequest || e.Field != field {
				t.Fatalf("bad %s: %d %+v", field, code, e)
			}
		}
		if code, e := h.call(op, http.MethodPost, api.PathInstantRecoveries, operator, api.InstantRecoveryRequest{BackupID: backupID, Host: "unknown.invalid", Name: "x"}, nil); code != http.StatusBadRequest || e.Field != "host" {
			t.Fatalf("a host without an address: %d %+v", code, e)
		}
		if entries, _ := os.ReadDir(h.IRRoot); len(entries) != 0 {
			t.Fatalf("refused requests left %d session folders", len(entries))
		}

		start := time.Now()
		var ir api.InstantRecovery
		if code, e := h.call(op, http.MethodPost, api.PathInstantRecoveries, operator, req, &ir); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, e)
		}
		if !strings.HasPrefix(ir.ID, "ir-") || ir.Status != api.IRStarting || ir.NFSExport != "127.0.0.1:/"+ir.ID || ir.Pending != api.IRActionStart {
			t.Fatalf("started session %+v", ir)
		}
		tg, err := mountIR(t, h.NFSAddr, ir.ID)
		if err != nil {
			t.Fatalf("mount %s: %v", ir.NFSExport, err)
		}
		flat := "pgtest1-ir/pgtest1-ir-flat.vmdk"
		f, err := tg.Open(flat)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		t.Logf("request to first byte over NFS: %v", time.Since(start))
		if got := nfsRead(t, tg, flat); !bytes.Equal(got, img) {
			t.Fatal("the flat file differs from the restore point")
		}
		vmx := string(nfsRead(t, tg, "pgtest1-ir/pgtest1-ir.vmx"))
		for _, want := range []string{`displayName = "pgtest1-ir"`, `scsi0.virtualDev = "pvscsi"`, `scsi0:0.fileName = "pgtest1-ir.vmdk"`,
			`ethernet0.networkName = "Recovery Net"`, `guestOS = "otherlinux-64"`, `numvcpus = "2"`, `memSize = "2048"`, `virtualHW.version = "21"`} {
			if !strings.Contains(vmx, want+"\n") {
				t.Fatalf("the .vmx lacks %s:\n%s", want, vmx)
			}
		}
		if desc := string(nfsRead(t, tg, "pgtest1-ir/pgtest1-ir.vmdk")); !strings.Contains(desc, `VMFS "pgtest1-ir-flat.vmdk"`) {
			t.Fatalf("descriptor:\n%s", desc)
		}

		// The agent of the VM's source claims the start; another agent gets nothing.
		b := h.newAgent("a2")
		if code, _ := b.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=0s", nil, nil); code != http.StatusNoContent {
			t.Fatalf("another agent was handed the session: %d", code)
		}
		var job api.InstantRecoveryJob
		if code, e := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job); code != http.StatusOK {
			t.Fatalf("claim: %d %+v", code, e)
		}
		if job.ID != ir.ID || job.Action != api.IRActionStart || job.Host != "esx1.lab" || job.NFSServer != "127.0.0.1" || job.NFSPath != "/"+ir.ID ||
			job.VMX != "pgtest1-ir/pgtest1-ir.vmx" || job.Name != "pgtest1-ir" || !job.PowerOn || job.NetworkMap["VM Network"] != "Recovery Net" {
			t.Fatalf("start job %+v", job)
		}
		if code, _ := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=0s", nil, nil); code != http.StatusNoContent {
			t.Fatalf("a claimed action was handed out again at once: %d", code)
		}
		if code, _ := b.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir.ID), api.InstantRecoveryReport{Action: "start", Status: api.JobSucceeded}, nil); code != http.StatusForbidden {
			t.Fatalf("another agent reported: %d", code)
		}
		if code, _ := a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir.ID), api.InstantRecoveryReport{Action: "start", Status: "maybe"}, nil); code != http.StatusBadRequest {
			t.Fatalf("a bad status: %d", code)
		}
		done := api.InstantRecoveryReport{Action: api.IRActionStart, Status: api.JobSucceeded, VMRef: "vm-77", DatastoreRef: "datastore-9"}
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir.ID), done, &ir); code != http.StatusOK || ir.Status != api.IRRunning || ir.VMRef != "vm-77" {
			t.Fatalf("start done: %d %+v %+v", code, e, ir)
		}

		// The running VM writes; it reads its writes; the repository does not change.
		p := bytes.Repeat([]byte("written by the recovered vm "), 1000)
		if err := nfsWrite(t, tg, flat, 70000, p); err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(img)
		copy(want[70000:], p)
		if got := nfsRead(t, tg, flat); !bytes.Equal(got, want) {
			t.Fatal("reads do not see the writes")
		}
		h.call(op, http.MethodGet, api.Path(api.PathInstantRecovery, ir.ID), viewer, nil, &ir)
		if ir.OverlayBytes != 64<<10 || ir.OverlayLimitBytes != 128<<10 { // one 64 KiB block of two
			t.Fatalf("overlay %d of %d bytes, want %d of %d", ir.OverlayBytes, ir.OverlayLimitBytes, 64<<10, 128<<10)
		}
		// The bound (two blocks here) fails a write past it, naming the quota.
		if err := nfsWrite(t, tg, flat, 200<<10, make([]byte, 100<<10)); err == nil || !strings.Contains(err.Error(), "DQUOT") {
			t.Fatalf("a write past the overlay bound: %v", err)
		}
		if n := metricValue(t, h.Reg, "sendense_instant_recoveries", "status", "running"); n != 1 {
			t.Fatalf("sendense_instant_recoveries{running} = %v", n)
		}
		if n := metricValue(t, h.Reg, "sendense_instant_recovery_overlay_bytes", "session", ir.ID); n != 128<<10 {
			t.Fatalf("sendense_instant_recovery_overlay_bytes = %v, want the full 128 KiB", n)
		}
		rep, err := verify.New(h.Cat, verifyRepos(repository.NewRegistry(h.Cat, nil, nil)), slog.New(slog.DiscardHandler), nil, 2).Run(t.Context(), backupID)
		if err != nil || !rep.OK() {
			t.Fatalf("repo verify after the guest wrote: %+v %v", rep, err)
		}
		var image []byte
		func() {
			rq, _ := http.NewRequest(http.MethodGet, h.URL+api.Path(api.PathBackupImage, backupID, "disk-2000"), nil)
			rq.Header.Set("Authorization", "Bearer "+viewer)
			resp, err := op.Do(rq)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			image, _ = io.ReadAll(resp.Body)
		}()
		if !bytes.Equal(image, img) {
			t.Fatal("the restore point's image changed")
		}

		// A hub restart: a new NFS server on the same folders serves the session again.
		restarted := restartIR(t, h)
		tg2, err := mountIR(t, restarted, ir.ID)
		if err != nil {
			t.Fatalf("mount after a restart: %v", err)
		}
		if got := nfsRead(t, tg2, flat); !bytes.Equal(got[:70000+len(p)], want[:70000+len(p)]) {
			t.Fatal("after a restart reads do not see the writes")
		}

		// DELETE: the agent stops it, then the folder and overlay are gone.
		if code, e := h.call(op, http.MethodDelete, api.Path(api.PathInstantRecovery, ir.ID), operator, nil, &ir); code != http.StatusAccepted || ir.Status != api.IRStopping {
			t.Fatalf("delete: %d %+v %+v", code, e, ir)
		}
		if code, _ := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job); code != http.StatusOK || job.Action != api.IRActionStop || job.ID != ir.ID {
			t.Fatalf("claim stop: %d %+v", code, job)
		}
		// A late start report (the start was overtaken) changes nothing.
		if code, _ := a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir.ID), done, nil); code != http.StatusConflict {
			t.Fatalf("a start report while stopping: %d, want 409", code)
		}
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir.ID), api.InstantRecoveryReport{Action: api.IRActionStop, Status: api.JobSucceeded}, &ir); code != http.StatusOK || ir.Status != api.IRStopped {
			t.Fatalf("stop done: %d %+v %+v", code, e, ir)
		}
		if _, err := os.Stat(filepath.Join(h.IRRoot, ir.ID)); !os.IsNotExist(err) {
			t.Fatalf("the session's folder and overlay are left after the stop: %v", err)
		}
		if err := nfstest.HungUp(h.NFSAddr); err != nil { // no session names this host now
			t.Fatalf("a stopped session's host is still served: %v", err)
		}
		if code, _ := h.call(op, http.MethodDelete, api.Path(api.PathInstantRecovery, ir.ID), operator, nil, &ir); code != http.StatusAccepted || ir.Status != api.IRStopped {
			t.Fatalf("delete again: %d %+v", code, ir)
		}

		// A start that fails is undone by a stop, then the session counts as failed.
		var ir2 api.InstantRecovery
		req.Name = "pgtest1-ir2"
		if code, e := h.call(op, http.MethodPost, api.PathInstantRecoveries, operator, req, &ir2); code != http.StatusAccepted {
			t.Fatalf("second start: %d %+v", code, e)
		}
		a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job)
		a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir2.ID), api.InstantRecoveryReport{Action: api.IRActionStart, Status: api.JobFailed, Error: "host esx1.lab: NFS mount refused"}, &ir2)
		if ir2.Status != api.IRStopping || ir2.Pending != api.IRActionStop {
			t.Fatalf("after a failed start %+v", ir2)
		}
		if code, _ := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job); code != http.StatusOK || job.Action != api.IRActionStop {
			t.Fatalf("cleanup after a failed start: %d %+v", code, job)
		}
		a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir2.ID), api.InstantRecoveryReport{Action: api.IRActionStop, Status: api.JobSucceeded}, &ir2)
		if ir2.Status != api.IRFailed || !strings.Contains(ir2.Error, "NFS mount refused") {
			t.Fatalf("failed session %+v", ir2)
		}
		var list api.InstantRecoveryList
		if code, _ := h.call(op, http.MethodGet, api.PathInstantRecoveries+"?status=stopped", viewer, nil, &list); code != http.StatusOK || list.Page.Total != 1 || list.InstantRecoveries[0].ID != ir.ID {
			t.Fatalf("list stopped: %d %+v", code, list)
		}
		if n := metricValue(t, h.Reg, "sendense_instant_recoveries", "status", "failed"); n != 1 {
			t.Fatalf("sendense_instant_recoveries{failed} = %v", n)
		}
	})
}

// restartIR starts a second instant-recovery service and NFS server on the test hub's folders,
// as a restarted hub does, and returns the new NFS address.
func restartIR(t *testing.T, h *testHub) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	srv, err := nfsexport.New(h.IRRoot, log)
	if err != nil {
		t.Fatal(err)
	}
	repos := repository.NewRegistry(h.Cat, nil, nil)
	t.Cleanup(func() { _ = repos.Close() })
	backups := jobs.New(h.Cat, repos, log, nil, jobs.Options{})
	irs := newIRService(h.Cat, restore.New(h.Cat, restoreRepos(repos), nil), backups, srv, log, prometheus.NewRegistry(), h.Clock.Now)
	if err := irs.Restore(t.Context()); err != nil {
		t.Fatalf("serve the sessions again: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(t.Context(), ln) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// Sequential 1 MiB reads of a restore point over NFS (the Go client) return its bytes; logged,
// not asserted: their rate against the image API's, and the time from the request to the first
// byte over NFS. The restore point has 16 MiB; SENDENSE_TEST_IR_MIB sets another size, for the
// figures (make test runs this package under the race detector, whose rates mean nothing):
// SENDENSE_TEST_IR_MIB=64 go test -run TestInstantRecoveryReadRate -v ./hub/internal/api/
func TestInstantRecoveryReadRate(t *testing.T) {
	size := 16
	if v, err := strconv.Atoi(os.Getenv("SENDENSE_TEST_IR_MIB")); err == nil && v > 0 {
		size = v
	}
	forEachHub(t, func(t *testing.T, h *testHub) {
		if strings.HasSuffix(t.Name(), "mysql") {
			t.Log("measured on sqlite only: the catalog is not on the read path")
			return
		}
		a := h.newAgent("a1")
		backupID, img := backupOf(t, h, a, randomImage(t, size<<20), true)
		op := h.client(nil)
		start := time.Now()
		var ir api.InstantRecovery
		if code, e := h.call(op, http.MethodPost, api.PathInstantRecoveries, h.apiToken(api.RoleOperator), api.InstantRecoveryRequest{BackupID: backupID, Host: "esx1.lab", Name: "big"}, &ir); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, e)
		}
		tg, err := mountIR(t, h.NFSAddr, ir.ID)
		if err != nil {
			t.Fatal(err)
		}
		f, err := tg.Open("big/big-flat.vmdk")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		first := time.Since(start)
		f.Close()

		f, err = tg.Open("big/big-flat.vmdk")
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		got := make([]byte, 0, len(img))
		readStart := time.Now()
		for len(got) < len(img) {
			n, err := f.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		nfsSecs := time.Since(readStart).Seconds()
		f.Close()
		if !bytes.Equal(got, img) {
			t.Fatal("the flat file differs from the restore point")
		}

		imgStart := time.Now()
		rq, _ := http.NewRequest(http.MethodGet, h.URL+api.Path(api.PathBackupImage, backupID, "disk-2000"), nil)
		rq.Header.Set("Authorization", "Bearer "+h.apiToken(api.RoleViewer))
		resp, err := op.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != int64(len(img)) {
			t.Fatalf("image: %d bytes, %v", n, err)
		}
		apiSecs := time.Since(imgStart).Seconds()
		t.Logf("request to first byte over NFS: %v; sequential read of %d MiB: NFS %.1f MB/s, image API %.1f MB/s",
			first, len(img)>>20, float64(len(img))/nfsSecs/1e6, float64(len(img))/apiSecs/1e6)
	})
}

// A running session migrates to a production datastore: the agent is handed the move, a
// failed move leaves the session running, a done one drops the export and its overlay.
func TestInstantRecoveryMigrate(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		backupID, _ := restorableBackup(t, h, a, true)
		operator := h.apiToken(api.RoleOperator)
		op := h.client(nil)
		var ir api.InstantRecovery
		if code, e := h.call(op, http.MethodPost, api.PathInstantRecoveries, operator, api.InstantRecoveryRequest{BackupID: backupID, Host: "esx1.lab", Name: "m1"}, &ir); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, e)
		}
		migrate := api.Path(api.PathInstantRecoveryMigrate, ir.ID)
		if code, _ := h.call(op, http.MethodPost, migrate, operator, api.InstantRecoveryMigrateRequest{Datastore: "LocalDS_0"}, nil); code != http.StatusConflict {
			t.Fatalf("migrating a starting session: %d, want 409", code)
		}
		var job api.InstantRecoveryJob
		a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job)
		a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir.ID), api.InstantRecoveryReport{Action: api.IRActionStart, Status: api.JobSucceeded, VMRef: "vm-5"}, &ir)
		if code, e := h.call(op, http.MethodPost, migrate, operator, api.InstantRecoveryMigrateRequest{}, nil); code != http.StatusBadRequest || e.Field != "datastore" {
			t.Fatalf("migrate without a datastore: %d %+v", code, e)
		}
		if code, e := h.call(op, http.MethodPost, migrate, operator, api.InstantRecoveryMigrateRequest{Datastore: "LocalDS_0"}, &ir); code != http.StatusAccepted || ir.Status != api.IRMigrating || ir.TargetDatastore != "LocalDS_0" {
			t.Fatalf("migrate: %d %+v %+v", code, e, ir)
		}
		if code, _ := h.call(op, http.MethodDelete, api.Path(api.PathInstantRecovery, ir.ID), operator, nil, &ir); code != http.StatusAccepted || ir.Status != api.IRMigrating {
			t.Fatalf("a stop while migrating: %d %+v; want the migration left alone", code, ir)
		}
		if code, _ := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job); code != http.StatusOK || job.Action != api.IRActionMigrate || job.Datastore != "LocalDS_0" {
			t.Fatalf("claim migrate: %d %+v", code, job)
		}
		id := ir.ID
		ir = api.InstantRecovery{} // empty fields are left out of the answer
		a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, id), api.InstantRecoveryReport{Action: api.IRActionMigrate, Status: api.JobFailed, Error: "not enough space"}, &ir)
		if ir.Status != api.IRRunning || ir.Pending != "" || !strings.Contains(ir.Error, "space") {
			t.Fatalf("after a failed migration %+v", ir)
		}
		h.call(op, http.MethodPost, migrate, operator, api.InstantRecoveryMigrateRequest{Datastore: "LocalDS_1"}, &ir)
		if code, _ := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job); code != http.StatusOK || job.Datastore != "LocalDS_1" {
			t.Fatalf("claim the second migrate: %d %+v", code, job)
		}
		a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir.ID), api.InstantRecoveryReport{Action: api.IRActionMigrate, Status: api.JobSucceeded}, &ir)
		if ir.Status != api.IRMigrated || ir.FinishedAt.IsZero() {
			t.Fatalf("after the migration %+v", ir)
		}
		if _, err := os.Stat(filepath.Join(h.IRRoot, ir.ID)); !os.IsNotExist(err) {
			t.Fatalf("the export is left after the migration: %v", err)
		}
		if n := metricValue(t, h.Reg, "sendense_instant_recoveries", "status", "migrated"); n != 1 {
			t.Fatalf("sendense_instant_recoveries{migrated} = %v", n)
		}
	})
}

// A session started with a boot wait (a restore test's boot check) hands the wait to the agent
// with the start only; the agent's observation is checked, recorded and shown with the
// session; a stop carries no wait, and a boot on a stop's report is refused.
func TestInstantRecoveryBootWait(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		backupID, _ := restorableBackup(t, h, a, true)
		req := api.InstantRecoveryRequest{BackupID: backupID, Host: "esx1.lab", Name: "boot1", PowerOn: true}
		if _, err := h.IR.StartBoot(t.Context(), req, api.InstantRecoveryBootWait{TimeoutSeconds: 0}); err == nil || !strings.Contains(err.Error(), "timeout_seconds") {
			t.Fatalf("a wait without a timeout: %v", err)
		}
		ir, err := h.IR.StartBoot(t.Context(), req, api.InstantRecoveryBootWait{TCPPort: 22, TimeoutSeconds: 600})
		if err != nil {
			t.Fatal(err)
		}
		var job api.InstantRecoveryJob
		if code, e := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job); code != http.StatusOK || job.Boot == nil || *job.Boot != (api.InstantRecoveryBootWait{TCPPort: 22, TimeoutSeconds: 600}) {
			t.Fatalf("start job: %d %+v %+v", code, e, job.Boot)
		}
		// The guest takes longer than the claim timeout: the start is not handed out again while
		// the agent says it still carries it out, and is once the agent no longer does (it
		// restarted).
		h.Clock.Add(11 * time.Minute)
		if code, _ := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=0s&running="+ir.ID, nil, nil); code != http.StatusNoContent {
			t.Fatalf("a start the agent still runs was handed out again: %d", code)
		}
		job = api.InstantRecoveryJob{}
		if code, e := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=0s&running=ir-other", nil, &job); code != http.StatusOK || job.ID != ir.ID || job.Action != api.IRActionStart {
			t.Fatalf("a start claimed long ago by an agent that no longer runs it: %d %+v %+v", code, e, job)
		}
		done := api.Path(api.PathAgentInstantRecoveryDone, ir.ID)
		bad := api.InstantRecoveryReport{Action: api.IRActionStart, Status: api.JobSucceeded, VMRef: "vm-9", Boot: &api.InstantRecoveryBoot{Seconds: 3}}
		if code, e := a.call(http.MethodPost, done, bad, nil); code != http.StatusBadRequest || e.Field != "boot.reason" {
			t.Fatalf("a boot with neither signal nor reason: %d %+v", code, e)
		}
		at := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
		rep := api.InstantRecoveryReport{Action: api.IRActionStart, Status: api.JobSucceeded, VMRef: "vm-9",
			Boot: &api.InstantRecoveryBoot{Signal: api.BootSignalTCP, IP: "10.0.0.9", SignalAt: at, Seconds: 41.5}}
		if code, e := a.call(http.MethodPost, done, rep, &ir); code != http.StatusOK || ir.Status != api.IRRunning || ir.Boot == nil || *ir.Boot != *rep.Boot {
			t.Fatalf("start done: %d %+v %+v", code, e, ir.Boot)
		}
		got, err := h.IR.Get(t.Context(), ir.ID)
		if err != nil || got.Boot == nil || got.Boot.Signal != api.BootSignalTCP || got.Boot.Seconds != 41.5 || !got.Boot.SignalAt.Equal(at) {
			t.Fatalf("recorded boot: %+v %v", got.Boot, err)
		}
		if _, err := h.IR.Stop(t.Context(), ir.ID); err != nil {
			t.Fatal(err)
		}
		job = api.InstantRecoveryJob{}
		if code, _ := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job); code != http.StatusOK || job.Action != api.IRActionStop || job.Boot != nil {
			t.Fatalf("stop job: %d %+v", code, job)
		}
		if code, e := a.call(http.MethodPost, done, api.InstantRecoveryReport{Action: api.IRActionStop, Status: api.JobSucceeded, Boot: rep.Boot}, nil); code != http.StatusBadRequest || e.Field != "boot" {
			t.Fatalf("a boot on a stop: %d %+v", code, e)
		}
		if code, _ := a.call(http.MethodPost, done, api.InstantRecoveryReport{Action: api.IRActionStop, Status: api.JobSucceeded}, &ir); code != http.StatusOK || ir.Status != api.IRStopped || ir.Boot == nil {
			t.Fatalf("stop done: %d %+v", code, ir)
		}
	})
}

// An agent whose start waits for the guest asks the hub whether the session's stop is pending:
// only about its own sessions (another agent: 403; an unknown id: 404; the answer changes
// nothing); once an operator asks for the stop, the answer says so, the stop is not handed out
// while the agent still runs the start, and is at once when it no longer does.
func TestInstantRecoveryStopPendingState(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a, b := h.newAgent("a1"), h.newAgent("b1")
		backupID, _ := restorableBackup(t, h, a, true)
		req := api.InstantRecoveryRequest{BackupID: backupID, Host: "esx1.lab", Name: "boot1", PowerOn: true}
		ir, err := h.IR.StartBoot(t.Context(), req, api.InstantRecoveryBootWait{TimeoutSeconds: 300})
		if err != nil {
			t.Fatal(err)
		}
		var job api.InstantRecoveryJob
		if code, e := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job); code != http.StatusOK || job.Action != api.IRActionStart {
			t.Fatalf("start job: %d %+v %+v", code, e, job)
		}
		state := api.Path(api.PathAgentInstantRecovery, ir.ID)
		var st api.JobState
		if code, e := a.call(http.MethodGet, state, nil, &st); code != http.StatusOK || st != (api.JobState{ID: ir.ID, Status: api.IRStarting}) {
			t.Fatalf("state of a starting session: %d %+v %+v", code, e, st)
		}
		if code, e := b.call(http.MethodGet, state, nil, nil); code != http.StatusForbidden || e.Error == "" {
			t.Fatalf("another agent asked about the session: %d %+v", code, e)
		}
		if code, e := a.call(http.MethodGet, api.Path(api.PathAgentInstantRecovery, "ir-20200101-000000-00000000"), nil, nil); code != http.StatusNotFound || e.Error == "" {
			t.Fatalf("an unknown session: %d %+v", code, e)
		}
		if code, e := h.call(h.client(nil), http.MethodGet, state, "", nil, nil); code != http.StatusUnauthorized && code != http.StatusForbidden {
			t.Fatalf("a caller without an agent certificate: %d %+v", code, e)
		}
		if got, err := h.IR.Get(t.Context(), ir.ID); err != nil || got.Status != api.IRStarting {
			t.Fatalf("asking changed the session: %+v %v", got, err)
		}

		if _, err := h.IR.Stop(t.Context(), ir.ID); err != nil {
			t.Fatal(err)
		}
		st = api.JobState{}
		if code, e := a.call(http.MethodGet, state, nil, &st); code != http.StatusOK || st != (api.JobState{ID: ir.ID, Status: api.IRStopping, CancelRequested: true}) {
			t.Fatalf("state with the stop pending: %d %+v %+v", code, e, st)
		}
		if code, _ := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=0s&running="+ir.ID, nil, nil); code != http.StatusNoContent {
			t.Fatalf("the stop was handed out while the agent still runs the start: %d", code)
		}
		// The start ends its wait and reports; the hub refuses the overtaken outcome and hands
		// the stop out.
		rep := api.InstantRecoveryReport{Action: api.IRActionStart, Status: api.JobSucceeded, VMRef: "vm-9",
			Boot: &api.InstantRecoveryBoot{Reason: "stopped while waiting for the guest", Seconds: 4}}
		if code, _ := a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir.ID), rep, nil); code != http.StatusConflict {
			t.Fatalf("the outcome of a start overtaken by a stop: %d", code)
		}
		job = api.InstantRecoveryJob{}
		if code, _ := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=5s", nil, &job); code != http.StatusOK || job.ID != ir.ID || job.Action != api.IRActionStop {
			t.Fatalf("stop job once the start ended: %d %+v", code, job)
		}
		if code, _ := a.call(http.MethodPost, api.Path(api.PathAgentInstantRecoveryDone, ir.ID), api.InstantRecoveryReport{Action: api.IRActionStop, Status: api.JobSucceeded}, nil); code != http.StatusOK {
			t.Fatalf("stop done: %d", code)
		}
		st = api.JobState{}
		if code, _ := a.call(http.MethodGet, state, nil, &st); code != http.StatusOK || st != (api.JobState{ID: ir.ID, Status: api.IRStopped}) {
			t.Fatalf("state of a stopped session: %d %+v", code, st)
		}
	})
}

// TestHubWithoutInstantRecovery: on a hub without NFS the operator routes answer 503 naming
// what is missing, while an agent's long poll for instant-recovery actions is simply answered
// "no work" after its wait, without an error logged each time.
func TestHubWithoutInstantRecovery(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		for range 3 {
			if code, e := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=0s", nil, nil); code != http.StatusNoContent {
				t.Fatalf("agent poll on a hub without instant recovery: %d %+v", code, e)
			}
		}
		if code, e := a.call(http.MethodGet, api.PathAgentInstantRecoveries+"?wait=2m", nil, nil); code != http.StatusBadRequest || e.Field != "wait" {
			t.Fatalf("a bad wait is still refused: %d %+v", code, e)
		}
		req := api.InstantRecoveryRequest{BackupID: "bk-any", Host: "esx1.lab", Name: "x"}
		code, e := h.call(h.client(nil), http.MethodPost, api.PathInstantRecoveries, h.apiToken(api.RoleOperator), req, nil)
		if code != http.StatusServiceUnavailable || !strings.Contains(e.Error, "nfs_listen") {
			t.Fatalf("start on a hub without instant recovery: %d %+v", code, e)
		}
		for _, line := range strings.Split(h.Logs.String(), "\n") {
			if strings.Contains(line, "level=ERROR") && strings.Contains(line, "instant-recoveries") && strings.Contains(line, "/agent/") {
				t.Errorf("agent poll logged as an error: %s", line)
			}
		}
	}, hubOptions{noInstantRecovery: true})
}
