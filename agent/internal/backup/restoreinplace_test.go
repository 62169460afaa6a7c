package backup_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// refused sends an operator request expected to fail and returns its status and body.
func (e *env) refused(method, path string, in any) (int, string) {
	e.t.Helper()
	b, _ := json.Marshal(in)
	req, _ := http.NewRequestWithContext(e.t.Context(), method, e.hub.URL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+e.operator)
	resp, err := e.op.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// An in-place restore brings changed blocks back, keeps the VM's identity and makes the next
// backup a full one; a wrong or missing confirmation and a queued or running backup refuse it,
// and a queued in-place restore refuses a backup.
func TestRestoreInPlace(t *testing.T) {
	e := newEnv(t, twoDiskSpec("db1"), envOptions{})
	b := e.backup("db1", "")
	if b.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", b, e.logs)
	}
	disks := []string{"disk-2000", "disk-2001"}
	want := map[string][32]byte{}
	for _, id := range disks {
		want[id] = e.diskSum("db1", id)
	}
	before, ok := e.sourceVM("db1")
	if !ok {
		t.Fatal("db1 not in the inventory")
	}
	if _, err := e.lab.WritePercent("db1", "disk-2000", 10, 42); err != nil {
		t.Fatal(err)
	}
	if e.diskSum("db1", "disk-2000") == want["disk-2000"] {
		t.Fatal("writing 10% of the disk changed nothing")
	}

	req := api.RestoreRequest{BackupID: b.ID, InPlace: true, Confirm: "db1"}
	for _, tc := range []struct {
		name    string
		confirm string
	}{{"missing confirmation", ""}, {"wrong confirmation", "db2"}} {
		bad := req
		bad.Confirm = tc.confirm
		if code, body := e.refused(http.MethodPost, api.PathRestores, bad); code != http.StatusBadRequest || !strings.Contains(body, "confirm") {
			t.Fatalf("%s: %d %s", tc.name, code, body)
		}
	}
	// A queued backup refuses the restore; the backup (an incremental with the writes) runs.
	e.startBackup("db1", "")
	if code, body := e.refused(http.MethodPost, api.PathRestores, req); code != http.StatusConflict {
		t.Fatalf("in-place restore while a backup is queued: %d %s", code, body)
	}
	job, err := e.hc.NextJob(t.Context(), 10*time.Second, nil)
	if err != nil || job == nil {
		t.Fatalf("claim backup: %v", err)
	}
	// Running (claimed by the agent) refuses it too.
	if code, body := e.refused(http.MethodPost, api.PathRestores, req); code != http.StatusConflict || !strings.Contains(body, "backup") {
		t.Fatalf("in-place restore while a backup runs: %d %s", code, body)
	}
	if err := e.runner.Run(t.Context(), job); err != nil {
		t.Fatal(err)
	}
	if inc := e.get(job.ID); inc.Type != api.BackupIncremental {
		t.Fatalf("backup after the writes: %+v", inc)
	}
	var l api.RestoreList
	if e.api(http.MethodGet, api.PathRestores, nil, &l); len(l.Restores) != 0 {
		t.Fatalf("refused requests queued restores: %+v", l.Restores)
	}

	// A queued in-place restore refuses a backup.
	var queued api.Restore
	if code := e.api(http.MethodPost, api.PathRestores, req, &queued); code != http.StatusAccepted || !queued.InPlace {
		t.Fatalf("start in-place restore: %d %+v", code, queued)
	}
	if code, body := e.refused(http.MethodPost, api.PathBackups, api.StartBackupRequest{VM: "db1"}); code != http.StatusConflict {
		t.Fatalf("backup while an in-place restore is queued: %d %s", code, body)
	}
	rj, err := e.hc.NextRestore(t.Context(), 10*time.Second, nil)
	if err != nil || rj == nil || rj.ID != queued.ID || !rj.InPlace {
		t.Fatalf("claim restore: %+v %v", rj, err)
	}
	_ = e.restoreRunner().Run(t.Context(), rj)
	var r api.Restore
	if code := e.api(http.MethodGet, api.Path(api.PathRestore, queued.ID), nil, &r); code != http.StatusOK {
		t.Fatalf("get restore: %d", code)
	}
	if r.Status != api.JobSucceeded || r.VMRef != before.MoRef {
		t.Fatalf("in-place restore: %+v (vm %s)\n%s", r, before.MoRef, e.logs)
	}
	for _, id := range disks {
		if e.diskSum("db1", id) != want[id] {
			t.Fatalf("%s after the in-place restore differs from the backup", id)
		}
	}
	after, ok := e.sourceVM("db1")
	if !ok || after.MoRef != before.MoRef || after.InstanceUUID != before.InstanceUUID || after.PowerState != before.PowerState {
		t.Fatalf("vm after the in-place restore: %+v, before: %+v", after, before)
	}

	next := e.backup("db1", "")
	if next.Status != api.JobSucceeded || next.Type != api.BackupFull {
		t.Fatalf("backup after the in-place restore: %+v\n%s", next, e.logs)
	}
	for _, id := range disks {
		d := diskOf(t, next, id)
		if d.Type != api.BackupFull || !strings.Contains(d.Reason, "restored in place") {
			t.Fatalf("disk %s after the in-place restore: %s (%s)", id, d.Type, d.Reason)
		}
		if e.imageSum(next.ID, id) != want[id] {
			t.Fatalf("full backup of %s after the restore does not hold the restored bytes", id)
		}
	}
}

// An in-place restore resumed after its agent was lost, with the VM powered off by the lost
// run, powers the VM on again: the hub kept the power state the first run found (and only
// that one), not the one the resumed run finds.
func TestResumedInPlaceRestoreRemembersPowerState(t *testing.T) {
	e := newEnv(t, twoDiskSpec("db1"), envOptions{})
	b := e.backup("db1", "")
	if b.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", b, e.logs)
	}
	before, ok := e.sourceVM("db1")
	if !ok || before.PowerState != "poweredOn" {
		t.Fatalf("db1 before: %+v", before)
	}
	var queued api.Restore
	if code := e.api(http.MethodPost, api.PathRestores, api.RestoreRequest{BackupID: b.ID, InPlace: true, Confirm: "db1"}, &queued); code != http.StatusAccepted {
		t.Fatalf("start in-place restore: %d", code)
	}
	first, err := e.hc.NextRestore(t.Context(), 10*time.Second, nil)
	if err != nil || first == nil || first.ID != queued.ID || first.VMWasOn != nil {
		t.Fatalf("claim restore: %+v %v", first, err)
	}
	// The first run records what it found and powers the VM off, then its agent is lost; a
	// later report of "off" (what a resumed run would find) does not replace the first.
	on, off := true, false
	for _, p := range []api.RestoreProgress{{Phase: api.PhaseChecking, VMWasOn: &on}, {Phase: api.PhaseWriting, VMWasOn: &off}} {
		if _, err := e.hc.RestoreProgress(t.Context(), queued.ID, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.lab.PowerOff(t.Context(), "db1"); err != nil {
		t.Fatal(err)
	}
	resumed, err := e.hc.NextRestore(t.Context(), 10*time.Second, nil)
	if err != nil || resumed == nil || resumed.ID != queued.ID || !resumed.Resumed || resumed.VMWasOn == nil || !*resumed.VMWasOn {
		t.Fatalf("resumed restore: %+v %v", resumed, err)
	}
	_ = e.restoreRunner().Run(t.Context(), resumed)
	var r api.Restore
	if code := e.api(http.MethodGet, api.Path(api.PathRestore, queued.ID), nil, &r); code != http.StatusOK || r.Status != api.JobSucceeded {
		t.Fatalf("resumed in-place restore: %d %+v\n%s", code, r, e.logs)
	}
	if after, ok := e.sourceVM("db1"); !ok || after.PowerState != "poweredOn" {
		t.Fatalf("db1 after the resumed restore: %+v, want powered on", after)
	}
}

// An in-place restore onto a VM whose disk data is not in the descriptor's flat file (here it
// is gone) writes nothing: it fails before powering the VM off, creates no file, and leaves the
// other disk as it was.
func TestRestoreInPlaceRefusesAMissingDataFile(t *testing.T) {
	e := newEnv(t, twoDiskSpec("db1"), envOptions{})
	b := e.backup("db1", "")
	if b.Status != api.JobSucceeded {
		t.Fatalf("backup: %+v\n%s", b, e.logs)
	}
	if _, err := e.lab.WritePercent("db1", "disk-2000", 10, 42); err != nil {
		t.Fatal(err)
	}
	changed := e.diskSum("db1", "disk-2000")
	info, err := e.lab.VM("db1")
	if err != nil {
		t.Fatal(err)
	}
	var flat string
	for _, d := range info.Disks {
		if d.DiskID == "disk-2001" {
			flat = d.FlatPath
		}
	}
	if err := os.Rename(flat, flat+".elsewhere"); err != nil {
		t.Fatal(err)
	}
	var queued api.Restore
	if code := e.api(http.MethodPost, api.PathRestores, api.RestoreRequest{BackupID: b.ID, InPlace: true, Confirm: "db1"}, &queued); code != http.StatusAccepted {
		t.Fatalf("start in-place restore: %d", code)
	}
	rj, err := e.hc.NextRestore(t.Context(), 10*time.Second, nil)
	if err != nil || rj == nil {
		t.Fatalf("claim restore: %+v %v", rj, err)
	}
	_ = e.restoreRunner().Run(t.Context(), rj)
	var r api.Restore
	if code := e.api(http.MethodGet, api.Path(api.PathRestore, queued.ID), nil, &r); code != http.StatusOK ||
		r.Status != api.JobFailed || !strings.Contains(r.Error, "disk-2001") || !strings.Contains(r.Error, "nothing was written") ||
		!strings.Contains(r.Error, "powered on again") {
		t.Fatalf("restore onto a disk without its data file: %d %+v\n%s", code, r, e.logs)
	}
	if _, err := os.Stat(flat); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the restore created %s: %v", flat, err)
	}
	if e.diskSum("db1", "disk-2000") != changed {
		t.Fatal("the restore wrote disk-2000")
	}
	if after, ok := e.sourceVM("db1"); !ok || after.PowerState != "poweredOn" {
		t.Fatalf("db1 after the refused restore: %+v, want still powered on", after)
	}
}
