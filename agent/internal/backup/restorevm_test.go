package backup_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/agent/internal/restore"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// The round trip lives with the backup tests: it needs their hub, lab and backup helpers.

// restoreRunner is the agent's restore runner on the env's hub and lab source.
func (e *env) restoreRunner() *restore.Runner {
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return restore.NewRunner(e.hc, func(ctx context.Context, name string) (restore.Target, error) {
		c, err := e.srcs.Get(name)
		if err != nil {
			return nil, err
		}
		return c.Client(ctx)
	}, log, restore.Options{ProgressInterval: 200 * time.Millisecond})
}

// restoreVM queues a restore through the operator API, lets the agent claim and run it, and
// returns the restore as the hub records it.
func (e *env) restoreVM(req api.RestoreRequest) api.Restore {
	e.t.Helper()
	var queued api.Restore
	if code := e.api(http.MethodPost, api.PathRestores, req, &queued); code != http.StatusAccepted {
		e.t.Fatalf("start restore: %d", code)
	}
	job, err := e.hc.NextRestore(e.t.Context(), 10*time.Second, nil)
	if err != nil || job == nil || job.ID != queued.ID {
		e.t.Fatalf("claim restore %s: %+v %v", queued.ID, job, err)
	}
	_ = e.restoreRunner().Run(e.t.Context(), job) // the outcome is on the hub
	var r api.Restore
	if code := e.api(http.MethodGet, api.Path(api.PathRestore, queued.ID), nil, &r); code != http.StatusOK {
		e.t.Fatalf("get restore %s: %d", queued.ID, code)
	}
	return r
}

// sourceVM is a VM as the agent's inventory of the lab sees it (restored VMs included).
func (e *env) sourceVM(name string) (api.VM, bool) {
	e.t.Helper()
	conn, err := e.srcs.Get("lab")
	if err != nil {
		e.t.Fatal(err)
	}
	inv, err := conn.Inventory(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	for _, vm := range inv.VMs {
		if vm.Name == name {
			return vm, true
		}
	}
	return api.VM{}, false
}

// A backup restored as a new VM has the source's disks byte for byte and its hardware; a
// restore to a network that does not exist fails and leaves no VM.
func TestRestoreAsNewVM(t *testing.T) {
	e := newEnv(t, twoDiskSpec("db1"), envOptions{})
	configureVM(t, e.lab, "db1")
	b := e.backup("db1", "")
	if b.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", b, e.logs)
	}
	req := api.RestoreRequest{BackupID: b.ID, Target: api.RestoreTarget{
		Source: "lab", Datacenter: e.lab.Datacenter(), Datastore: e.lab.Datastore(), Name: "db1-restored",
	}}

	start := time.Now()
	r := e.restoreVM(req)
	secs := time.Since(start).Seconds()
	if r.Status != api.JobSucceeded || r.VMRef == "" {
		t.Fatalf("restore: %+v\n%s", r, e.logs)
	}
	src, err := e.lab.VM("db1")
	if err != nil {
		t.Fatal(err)
	}
	got, ok := e.sourceVM("db1-restored")
	if !ok || got.MoRef != r.VMRef {
		t.Fatalf("restored vm %+v not found as %s", got, r.VMRef)
	}
	if got.NumCPU != 4 || got.MemoryMB != 2048 || len(got.Disks) != len(src.Disks) {
		t.Fatalf("restored vm: %d cpus, %d MB, %d disks; want 4, 2048, %d", got.NumCPU, got.MemoryMB, len(got.Disks), len(src.Disks))
	}
	dir := datastoreDir(t, e.lab)
	var total int64
	for i, d := range src.Disks {
		rd := got.Disks[i]
		if rd.CapacityBytes != d.CapacityBytes {
			t.Fatalf("restored disk %d: %d bytes, want %d", i, rd.CapacityBytes, d.CapacityBytes)
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(rd.BackingFile, "["+rd.Datastore+"] "), ".vmdk") + "-flat.vmdk"
		if err := lab.CompareFiles(d.FlatPath, filepath.Join(dir, rel), d.CapacityBytes); err != nil {
			t.Fatalf("restored disk %d (%s) against %s: %v", i, rel, d.DiskID, err)
		}
		total += d.CapacityBytes
	}
	if r.BytesWritten != total {
		t.Fatalf("restore wrote %d bytes, the disks have %d", r.BytesWritten, total)
	}
	t.Logf("restore of %d bytes in %.2fs: %.1f MB/s (VM creation and 2 disks); image GET of disk-2000: %.1f MB/s",
		total, secs, float64(total)/secs/1e6, e.imageRate(b.ID, "disk-2000"))

	req.Target.Name = "db1-wrongnet"
	req.NetworkMap = map[string]string{"VM Network": "no-such-network"}
	r = e.restoreVM(req)
	if r.Status != api.JobFailed || !strings.Contains(r.Error, "no-such-network") || r.VMRef != "" {
		t.Fatalf("restore to a missing network: %+v", r)
	}
	if _, ok := e.sourceVM("db1-wrongnet"); ok {
		t.Fatal("a failed restore left its vm")
	}
}

// imageRate reads a restore point's disk over the operators' image API and returns MB/s.
func (e *env) imageRate(backupID, diskID string) float64 {
	e.t.Helper()
	start := time.Now()
	req, _ := http.NewRequestWithContext(e.t.Context(), http.MethodGet, e.hub.URL+api.Path(api.PathBackupImage, backupID, diskID), nil)
	req.Header.Set("Authorization", "Bearer "+e.operator)
	resp, err := e.op.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		e.t.Fatalf("image %s/%s: %d %v", backupID, diskID, resp.StatusCode, err)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6
}

// A thin restore of a mostly-zero disk sends vSphere only the disk's data (the stream-optimized
// VMDK leaves zero grains out) and the restored flat file allocates no more than the source's.
func TestRestoreThinStaysThin(t *testing.T) {
	const capacity, data = int64(1) << 30, int64(24) << 20
	spec := lab.Spec{VMs: []lab.VMSpec{{Name: "thin1", CBT: true, Disks: []lab.DiskSpec{
		{Key: 2000, Size: "1GiB", Fill: lab.FillSparse, Data: "24MiB", Seed: 11},
	}}}}
	e := newEnv(t, spec, envOptions{})
	b := e.backup("thin1", "")
	if b.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", b, e.logs)
	}
	start := time.Now()
	r := e.restoreVM(api.RestoreRequest{BackupID: b.ID, DiskProvisioning: api.ProvisionThin, Target: api.RestoreTarget{
		Source: "lab", Datacenter: e.lab.Datacenter(), Datastore: e.lab.Datastore(), Name: "thin1-restored",
	}})
	secs := time.Since(start).Seconds()
	if r.Status != api.JobSucceeded {
		t.Fatalf("restore: %+v\n%s", r, e.logs)
	}
	src, err := e.lab.VM("thin1")
	if err != nil {
		t.Fatal(err)
	}
	imports := e.lab.Imports()
	if len(imports) != 1 || imports[0].Err != "" || imports[0].VM != r.VMRef {
		t.Fatalf("imports %+v, want one upload into %s", imports, r.VMRef)
	}
	imp := imports[0]
	if err := lab.CompareFiles(src.Disks[0].FlatPath, imp.FlatPath, capacity); err != nil {
		t.Fatalf("restored disk: %v", err)
	}
	// What travels to vSphere: the data, deflated, plus markers and tables (4 KiB per 32 MiB).
	if imp.StreamBytes > data+(1<<20) || imp.WrittenBytes != data {
		t.Fatalf("import of a disk holding %d bytes: %d bytes sent, %d written", data, imp.StreamBytes, imp.WrittenBytes)
	}
	srcAlloc, gotAlloc := allocated(t, src.Disks[0].FlatPath), allocated(t, imp.FlatPath)
	if srcAlloc > data+(1<<20) {
		t.Fatalf("the source disk allocates %d bytes for %d of data: the file system keeps no holes", srcAlloc, data)
	}
	if gotAlloc > srcAlloc+(1<<20) {
		t.Fatalf("the restored thin disk allocates %d bytes, the source %d", gotAlloc, srcAlloc)
	}
	t.Logf("thin restore of a %d-byte disk holding %d: %d bytes sent to vSphere (%.2f%% of the capacity), %d allocated; %.1f MB/s of capacity, image GET %.1f MB/s",
		capacity, data, imp.StreamBytes, 100*float64(imp.StreamBytes)/float64(capacity), gotAlloc, float64(capacity)/secs/1e6, e.imageRate(b.ID, "disk-2000"))
}

// allocated is the bytes a file occupies on disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// A restore cancelled while its disks are imported aborts the import lease and removes the
// half-made VM.
func TestCancelMidImport(t *testing.T) {
	spec := lab.Spec{VMs: []lab.VMSpec{{Name: "big1", CBT: true, Disks: []lab.DiskSpec{
		{Key: 2000, Size: "2GiB", Fill: lab.FillSparse, Data: "128MiB", Seed: 5},
	}}}}
	e := newEnv(t, spec, envOptions{})
	b := e.backup("big1", "")
	if b.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", b, e.logs)
	}
	var queued api.Restore
	req := api.RestoreRequest{BackupID: b.ID, Target: api.RestoreTarget{Source: "lab", Datacenter: e.lab.Datacenter(), Datastore: e.lab.Datastore(), Name: "big1-restored"}}
	if code := e.api(http.MethodPost, api.PathRestores, req, &queued); code != http.StatusAccepted {
		t.Fatalf("start restore: %d", code)
	}
	job, err := e.hc.NextRestore(t.Context(), 10*time.Second, nil)
	if err != nil || job == nil {
		t.Fatalf("claim restore: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.restoreRunner().Run(t.Context(), job) }()
	var lease string
	testenv.WaitFor(t, time.Minute, "the import lease", func() bool {
		if open := e.lab.OpenLeases(); len(open) == 1 {
			lease = open[0]
			return true
		}
		time.Sleep(2 * time.Millisecond) // paces the polling
		return false
	})
	if code := e.api(http.MethodPost, api.Path(api.PathRestoreCancel, queued.ID), nil, nil); code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("cancel: %d", code)
	}
	if err := <-done; err == nil {
		t.Fatalf("the cancelled restore succeeded\n%s", e.logs)
	}
	var r api.Restore
	if e.api(http.MethodGet, api.Path(api.PathRestore, queued.ID), nil, &r); r.Status != api.JobCancelled || r.VMRef != "" {
		t.Fatalf("cancelled restore: %+v", r)
	}
	if st := e.lab.LeaseState(lease); st != lab.LeaseAborted {
		t.Fatalf("the cancelled restore's lease is %q, want aborted", st)
	}
	if _, ok := e.sourceVM("big1-restored"); ok {
		t.Fatal("the cancelled restore left its vm")
	}
	if r.BytesWritten >= r.BytesTotal {
		t.Fatalf("the restore was not cancelled mid-import: %d of %d bytes", r.BytesWritten, r.BytesTotal)
	}
}
