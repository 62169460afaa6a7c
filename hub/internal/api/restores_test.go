package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	hubapi "github.com/sendense/sendense/hub/internal/api"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// restorableBackup runs a full backup of a one-disk VM through the agent protocol, with its VM
// configuration, and returns the backup id and the disk image.
func restorableBackup(t *testing.T, h *testHub, a *fakeAgent, withConfig bool) (string, []byte) {
	t.Helper()
	return backupOf(t, h, a, randomImage(t, 5*testChunk), withConfig)
}

// backupOf is restorableBackup of the disk image img.
func backupOf(t *testing.T, h *testHub, a *fakeAgent, img []byte, withConfig bool) (string, []byte) {
	t.Helper()
	inv := twoDiskInventory(int64(len(img)), testChunk)
	inv.VMs[0].Disks = inv.VMs[0].Disks[:1]
	a.push(inv)
	var b api.Backup
	if code, e := h.call(h.client(nil), http.MethodPost, api.PathBackups, h.apiToken(api.RoleOperator), api.StartBackupRequest{VM: "pgtest1"}, &b); code != http.StatusAccepted {
		t.Fatalf("start backup: %d %+v", code, e)
	}
	j := a.nextJob("5s")
	if withConfig {
		ctrl := api.DeviceController{Key: 1000, Type: "pvscsi"}
		cfg := api.VMConfig{
			Version: api.VMConfigVersion, InstanceUUID: inv.VMs[0].InstanceUUID, Name: "pgtest1", HardwareVersion: "vmx-21",
			GuestID: "otherLinux64Guest", Firmware: "bios", NumCPU: 2, CoresPerSocket: 1, MemoryMB: 2048,
			Controllers: []api.VMController{{Key: 1000, Type: "pvscsi", Sharing: "noSharing"}},
			Disks:       []api.VMConfigDisk{{DiskID: "disk-2000", Key: 2000, CapacityBytes: int64(len(img)), Controller: ctrl, Provisioning: "thin"}},
			NICs:        []api.VMNIC{{Key: 4000, AdapterType: "vmxnet3", BackingType: "network", Network: "VM Network", Connected: true}},
		}
		if code, e := a.call(http.MethodPut, api.Path(api.PathAgentJobVM, j.ID), cfg, nil); code != http.StatusNoContent {
			t.Fatalf("put vm config: %d %+v", code, e)
		}
	}
	s, code, e := a.openSession(j.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img)), ChunkSize: testChunk})
	if code != http.StatusOK {
		t.Fatalf("open session: %d %+v", code, e)
	}
	a.uploadDisk(s.ID, img, allSlots(slotsOf(len(img))))
	a.commit(s.ID)
	if code, e := a.complete(j.ID, api.JobSucceeded); code != http.StatusOK {
		t.Fatalf("complete backup: %d %+v", code, e)
	}
	return j.ID, img
}

func restoreRequest(backupID string) api.RestoreRequest {
	return api.RestoreRequest{BackupID: backupID, Target: api.RestoreTarget{Source: "vc1", Datacenter: "DC0", Datastore: "LocalDS_0", Name: "pgtest1-restored"},
		NetworkMap: map[string]string{}, DiskProvisioning: "thin"}
}

// A restore is queued for the agent of the target source, claimed once with the backup's VM
// configuration and disks, reads its backup's images (and no other's) with Range, reports
// progress, and its outcome shows to operators and in the metrics.
func TestRestoreLifecycle(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		backupID, img := restorableBackup(t, h, a, true)
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		op := h.client(nil)

		if code, _ := h.call(op, http.MethodPost, api.PathRestores, viewer, restoreRequest(backupID), nil); code != http.StatusForbidden {
			t.Fatalf("viewer may not restore: %d", code)
		}
		var r api.Restore
		if code, e := h.call(op, http.MethodPost, api.PathRestores, operator, restoreRequest(backupID), &r); code != http.StatusAccepted {
			t.Fatalf("start restore: %d %+v", code, e)
		}
		if r.Status != api.JobQueued || r.ID[:3] != "rs-" || r.MACAddresses != api.MACNew || r.VMName != "pgtest1" || r.Target.Name != "pgtest1-restored" {
			t.Fatalf("queued restore %+v", r)
		}
		// A second restore to the same name while the first is active is refused.
		if code, _ := h.call(op, http.MethodPost, api.PathRestores, operator, restoreRequest(backupID), nil); code != http.StatusConflict {
			t.Fatalf("second restore to the same name: %d, want 409", code)
		}

		var rj api.RestoreJob
		if code, e := a.call(http.MethodGet, api.PathAgentRestores+"?wait=5s", nil, &rj); code != http.StatusOK {
			t.Fatalf("claim restore: %d %+v", code, e)
		}
		if rj.ID != r.ID || rj.Source != "vc1" || rj.VM.NumCPU != 2 || len(rj.Disks) != 1 || rj.Disks[0].Datastore != "LocalDS_0" ||
			rj.Disks[0].CapacityBytes != int64(len(img)) || rj.Resumed {
			t.Fatalf("restore job %+v", rj)
		}
		if code, _ := a.call(http.MethodGet, api.PathAgentRestores+"?wait=0s&running="+r.ID, nil, nil); code != http.StatusNoContent {
			t.Fatalf("a claimed restore was handed out again: %d", code)
		}
		// After a restart (nothing running) the restore comes back, marked resumed, with the
		// VM it had created.
		a.call(http.MethodPost, api.Path(api.PathAgentRestoreProg, r.ID), api.RestoreProgress{Phase: api.PhaseCreating, VMRef: "vm-41"}, nil)
		var again api.RestoreJob
		if code, _ := a.call(http.MethodGet, api.PathAgentRestores+"?wait=0s", nil, &again); code != http.StatusOK {
			t.Fatalf("resume: %d", code)
		}
		if !again.Resumed || again.ID != r.ID || again.VMRef != "vm-41" {
			t.Fatalf("resumed restore %+v", again)
		}

		// The image of the job's backup, by range.
		req, _ := http.NewRequest(http.MethodGet, h.URL+api.Path(api.PathAgentRestoreImage, r.ID, "disk-2000"), nil)
		req.Header.Set("Range", "bytes=65536-131071")
		resp, err := a.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, img[65536:131072]) {
			t.Fatalf("image range: %d, %d bytes", resp.StatusCode, len(got))
		}
		// Another agent may neither read it nor report on it.
		b := h.newAgent("a2")
		if code, _ := b.call(http.MethodGet, api.Path(api.PathAgentRestoreImage, r.ID, "disk-2000"), nil, nil); code != http.StatusForbidden && code != http.StatusNotFound {
			t.Fatalf("another agent read the image: %d", code)
		}
		if code, _ := b.call(http.MethodPost, api.Path(api.PathAgentRestoreProg, r.ID), api.RestoreProgress{Phase: api.PhaseWriting}, nil); code != http.StatusForbidden && code != http.StatusNotFound {
			t.Fatalf("another agent reported progress: %d", code)
		}

		for _, bad := range []api.RestoreProgress{{Phase: "dancing"}, {Phase: api.PhaseWriting, BytesWritten: -1}, {Phase: api.PhaseWriting, BytesWritten: 1 << 50}, {Phase: api.PhaseCreating, VMRef: "vm 1"}} {
			if code, _ := a.call(http.MethodPost, api.Path(api.PathAgentRestoreProg, r.ID), bad, nil); code != http.StatusBadRequest {
				t.Fatalf("progress %+v: %d, want 400", bad, code)
			}
		}
		var st api.JobState
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentRestoreProg, r.ID), api.RestoreProgress{Phase: api.PhaseWriting, VMRef: "vm-42", BytesWritten: 4096, BytesTotal: int64(len(img))}, &st); code != http.StatusOK || st.CancelRequested {
			t.Fatalf("progress: %d %+v %+v", code, e, st)
		}
		h.call(op, http.MethodGet, api.Path(api.PathRestore, r.ID), viewer, nil, &r)
		if r.Status != api.JobRunning || r.Phase != api.PhaseWriting || r.VMRef != "vm-42" || r.BytesWritten != 4096 {
			t.Fatalf("running restore %+v", r)
		}
		if code, _ := a.call(http.MethodPost, api.Path(api.PathAgentRestoreDone, r.ID), api.RestoreCompletion{Status: api.JobSucceeded}, nil); code != http.StatusBadRequest {
			t.Fatalf("success without the VM: %d, want 400", code)
		}
		h.Clock.Add(2 * time.Second)
		a.call(http.MethodPost, api.Path(api.PathAgentRestoreProg, r.ID), api.RestoreProgress{Phase: api.PhaseWriting, VMRef: "vm-42", BytesWritten: int64(len(img)), BytesTotal: int64(len(img))}, nil)
		bds, err := h.Cat.BackupDisks(t.Context(), r.BackupID)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, d := range bds {
			total += d.CapacityBytes
		}
		done := api.RestoreCompletion{Status: api.JobSucceeded, VMRef: "vm-42", BytesWritten: total}
		for range 2 { // a retried completion is answered the same
			if code, e := a.call(http.MethodPost, api.Path(api.PathAgentRestoreDone, r.ID), done, &st); code != http.StatusOK || st.Status != api.JobSucceeded {
				t.Fatalf("complete: %d %+v %+v", code, e, st)
			}
		}
		if code, _ := a.call(http.MethodPost, api.Path(api.PathAgentRestoreDone, r.ID), api.RestoreCompletion{Status: api.JobFailed}, nil); code != http.StatusConflict {
			t.Fatalf("another outcome of a finished restore: %d, want 409", code)
		}
		h.call(op, http.MethodGet, api.Path(api.PathRestore, r.ID), viewer, nil, &r)
		if r.Status != api.JobSucceeded || r.DurationSeconds != 2 || r.BytesWritten != int64(len(img)) || r.ThroughputBPS == 0 {
			t.Fatalf("finished restore %+v", r)
		}
		// The finished restore's images are closed to the agent.
		if code, _ := a.call(http.MethodGet, api.Path(api.PathAgentRestoreImage, r.ID, "disk-2000"), nil, nil); code != http.StatusConflict {
			t.Fatalf("image of a finished restore: %d, want 409", code)
		}
		var list api.RestoreList
		if code, _ := h.call(op, http.MethodGet, api.PathRestores+"?status=succeeded", viewer, nil, &list); code != http.StatusOK || list.Page.Total != 1 || list.Restores[0].ID != r.ID {
			t.Fatalf("list %+v", list)
		}
		if n := metricValue(t, h.Reg, "sendense_hub_restores_finished_total", "result", "succeeded"); n != 1 {
			t.Fatalf("restores_finished_total{succeeded} = %v", n)
		}
		if n := metricValue(t, h.Reg, "sendense_hub_restores", "status", "succeeded"); n != 1 {
			t.Fatalf("restores{succeeded} = %v", n)
		}
	})
}

// claimedRestore queues a restore of the backup as an operator and has the agent claim it.
func claimedRestore(t *testing.T, h *testHub, a *fakeAgent, backupID string) api.Restore {
	t.Helper()
	var r api.Restore
	if code, e := h.call(h.client(nil), http.MethodPost, api.PathRestores, h.apiToken(api.RoleOperator), restoreRequest(backupID), &r); code != http.StatusAccepted {
		t.Fatalf("start restore: %d %+v", code, e)
	}
	var rj api.RestoreJob
	if code, e := a.call(http.MethodGet, api.PathAgentRestores+"?wait=5s", nil, &rj); code != http.StatusOK || rj.ID != r.ID {
		t.Fatalf("claim restore: %d %+v %+v", code, e, rj)
	}
	return r
}

// The agent cannot call a restore that did not write every byte of the backup's disks succeeded:
// it is recorded failed, saying so, and not handed back to the agent (which would resume it by
// removing the VM it made).
func TestRestoreShortOfItsDisksIsFailed(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		backupID, img := restorableBackup(t, h, a, true)
		r := claimedRestore(t, h, a, backupID)
		a.call(http.MethodPost, api.Path(api.PathAgentRestoreProg, r.ID), api.RestoreProgress{Phase: api.PhaseWriting, VMRef: "vm-42", BytesWritten: 4096, BytesTotal: int64(len(img))}, nil)
		var st api.JobState
		short := api.RestoreCompletion{Status: api.JobSucceeded, VMRef: "vm-42", BytesWritten: 4096}
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentRestoreDone, r.ID), short, &st); code != http.StatusOK || st.Status != api.JobFailed {
			t.Fatalf("success with 4096 of %d bytes written: %d %+v %+v, want it recorded failed", len(img), code, e, st)
		}
		h.call(h.client(nil), http.MethodGet, api.Path(api.PathRestore, r.ID), h.apiToken(api.RoleViewer), nil, &r)
		if want := fmt.Sprintf("written 4096 of the %d bytes", len(img)); r.Status != api.JobFailed || !strings.Contains(r.Error, want) || r.VMRef != "vm-42" {
			t.Fatalf("restore %+v, want failed naming %q", r, want)
		}
		if code, _ := a.call(http.MethodGet, api.PathAgentRestores+"?wait=0s", nil, nil); code != http.StatusNoContent {
			t.Fatalf("the failed restore was handed out again: %d", code)
		}
		if n := metricValue(t, h.Reg, "sendense_hub_restores_finished_total", "result", "failed"); n != 1 {
			t.Fatalf("restores_finished_total{failed} = %v", n)
		}
	})
}

// Bad requests are refused with the field named and nothing queued; a queued restore cancels at
// once, a running one asks the agent.
func TestRestoreRequestsAreCheckedAndCancel(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		backupID, _ := restorableBackup(t, h, a, true)
		operator := h.apiToken(api.RoleOperator)
		op := h.client(nil)
		for _, tc := range []struct {
			field string
			edit  func(r *api.RestoreRequest)
		}{
			{"backup_id", func(r *api.RestoreRequest) { r.BackupID = "bk-nope" }},
			{"target.source", func(r *api.RestoreRequest) { r.Target.Source = "vc9" }},
			{"target.datastore", func(r *api.RestoreRequest) { r.Target.Datastore = "" }},
			{"target.name", func(r *api.RestoreRequest) { r.Target.Name = "x\x1b[2J" }},
			{"disk_provisioning", func(r *api.RestoreRequest) { r.DiskProvisioning = "fat" }},
			{"mac_addresses", func(r *api.RestoreRequest) { r.MACAddresses = "random" }},
			{"network_map", func(r *api.RestoreRequest) { r.NetworkMap = map[string]string{"Nope": "VM Network"} }},
			{"target.disk_datastores", func(r *api.RestoreRequest) { r.Target.DiskDatastores = map[string]string{"disk-9": "LocalDS_0"} }},
			{"target.host", func(r *api.RestoreRequest) { r.Target.Cluster, r.Target.Host = "C0", "H0" }},
		} {
			req := restoreRequest(backupID)
			tc.edit(&req)
			if code, e := h.call(op, http.MethodPost, api.PathRestores, operator, req, nil); code != http.StatusBadRequest || e.Field != tc.field {
				t.Errorf("%s: %d %+v, want 400 naming the field", tc.field, code, e)
			}
		}
		var list api.RestoreList
		h.call(op, http.MethodGet, api.PathRestores, operator, nil, &list)
		if list.Page.Total != 0 {
			t.Fatalf("refused requests queued %d restores", list.Page.Total)
		}

		var r api.Restore
		if code, e := h.call(op, http.MethodPost, api.PathRestores, operator, restoreRequest(backupID), &r); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, e)
		}
		if code, _ := h.call(op, http.MethodPost, api.Path(api.PathRestoreCancel, r.ID), operator, nil, &r); code != http.StatusAccepted || r.Status != api.JobCancelled {
			t.Fatalf("cancel queued: %+v", r)
		}
		if code, _ := a.call(http.MethodGet, api.PathAgentRestores+"?wait=0s", nil, nil); code != http.StatusNoContent {
			t.Fatalf("a cancelled restore was handed out: %d", code)
		}
		h.call(op, http.MethodPost, api.PathRestores, operator, restoreRequest(backupID), &r)
		var rj api.RestoreJob
		a.call(http.MethodGet, api.PathAgentRestores+"?wait=5s", nil, &rj)
		h.call(op, http.MethodPost, api.Path(api.PathRestoreCancel, r.ID), operator, nil, &r)
		if r.Status != api.JobRunning || !r.CancelRequested {
			t.Fatalf("cancel running: %+v", r)
		}
		var st api.JobState
		a.call(http.MethodPost, api.Path(api.PathAgentRestoreProg, r.ID), api.RestoreProgress{Phase: api.PhaseCleanup}, &st)
		if !st.CancelRequested {
			t.Fatal("the agent was not told to cancel")
		}
		a.call(http.MethodPost, api.Path(api.PathAgentRestoreDone, r.ID), api.RestoreCompletion{Status: api.JobCancelled, Error: "cancelled"}, nil)
		if code, _ := h.call(op, http.MethodPost, api.Path(api.PathRestoreCancel, r.ID), operator, nil, nil); code != http.StatusConflict {
			t.Fatalf("cancel a finished restore: %d, want 409", code)
		}
	})
}

// A backup taken without a VM configuration cannot be restored as a new VM.
func TestRestoreNeedsAVMConfiguration(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		backupID, _ := restorableBackup(t, h, a, false)
		code, e := h.call(h.client(nil), http.MethodPost, api.PathRestores, h.apiToken(api.RoleOperator), restoreRequest(backupID), nil)
		if code != http.StatusNotFound {
			t.Fatalf("restore without a configuration: %d %+v, want 404", code, e)
		}
	})
}

// An agent reads at most MaxAgentImageReads restore images at once: past that it gets 429 with
// Retry-After, and once a read has ended it is served again.
func TestAgentImageReadsAreBounded(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		backupID, img := backupOf(t, h, a, randomImage(t, 24<<20), true) // larger than a connection buffers
		r := claimedRestore(t, h, a, backupID)
		get := func() *http.Response {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, h.URL+api.Path(api.PathAgentRestoreImage, r.ID, "disk-2000"), nil)
			resp, err := a.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		// Each read is held: its body is not read, and the image is larger than what the
		// connection buffers, so the hub's handler waits to write.
		var held []*http.Response
		for range hubapi.MaxAgentImageReads {
			resp := get()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("image read: %d", resp.StatusCode)
			}
			held = append(held, resp)
		}
		over := get()
		body, _ := io.ReadAll(over.Body)
		over.Body.Close()
		if over.StatusCode != http.StatusTooManyRequests || over.Header.Get("Retry-After") == "" || !bytes.Contains(body, []byte("restore images at once")) {
			t.Fatalf("one read over the bound: %d, %d bytes (%.200q), want 429 with Retry-After", over.StatusCode, len(body), body)
		}
		got, err := io.ReadAll(held[0].Body)
		held[0].Body.Close()
		if err != nil || !bytes.Equal(got, img) {
			t.Fatalf("a held read: %v, equal %v", err, bytes.Equal(got, img))
		}
		testenv.WaitFor(t, 10*time.Second, "a read to be served again", func() bool {
			resp := get()
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
			b, err := io.ReadAll(resp.Body)
			return err == nil && bytes.Equal(b, img)
		})
		for _, resp := range held[1:] {
			resp.Body.Close()
		}
	})
}
