package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/ingest"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
	"github.com/sendense/sendense/shared/testenv"
)

const testChunk = 64 << 10 // the harness repository's slot size

// fakeAgent speaks the agent side of the backup protocol with in-memory disk images.
type fakeAgent struct {
	h    *testHub
	id   string
	cert *tls.Certificate
	c    *http.Client
}

func (h *testHub) newAgent(name string) *fakeAgent {
	id, cert := h.enrollAgent(name)
	return &fakeAgent{h: h, id: id, cert: cert, c: h.client(cert)}
}

func (a *fakeAgent) call(method, path string, in, out any) (int, api.Error) {
	a.h.t.Helper()
	return a.h.call(a.c, method, path, "", in, out)
}

func (a *fakeAgent) push(inv api.Inventory) {
	a.h.t.Helper()
	if code, e := a.call(http.MethodPut, api.PathAgentInventory, inv, nil); code != http.StatusOK {
		a.h.t.Fatalf("push inventory: %d %+v", code, e)
	}
}

func (a *fakeAgent) nextJob(wait string) *api.Job {
	a.h.t.Helper()
	var j api.Job
	code, e := a.call(http.MethodGet, api.PathAgentJobs+"?wait="+wait, nil, &j)
	switch code {
	case http.StatusOK:
		return &j
	case http.StatusNoContent:
		return nil
	}
	a.h.t.Fatalf("next job: %d %+v", code, e)
	return nil
}

// fullSession has a new agent "a1" push two disks of img's size, starts a backup of their VM and
// opens the full upload session of its disk-2000.
func (h *testHub) fullSession(img []byte) (*fakeAgent, *api.Job, api.Session) {
	h.t.Helper()
	a := h.newAgent("a1")
	a.push(twoDiskInventory(int64(len(img)), testChunk))
	var b api.Backup
	h.call(h.client(nil), http.MethodPost, api.PathBackups, h.apiToken(api.RoleOperator), api.StartBackupRequest{VM: "pgtest1"}, &b)
	j := a.nextJob("5s")
	s, code, e := a.openSession(j.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img)), ChunkSize: testChunk})
	if code != http.StatusOK {
		h.t.Fatalf("open: %d %+v", code, e)
	}
	return a, j, s
}

// putChunk uploads plain as a raw chunk blob and records the given slots with it.
func (a *fakeAgent) putChunk(sid string, plain []byte, slots ...int64) int {
	a.h.t.Helper()
	d := chunk.Sum(plain)
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
	if err != nil {
		a.h.t.Fatal(err)
	}
	return a.putBlob(sid, d.String(), blob, slots...)
}

func (a *fakeAgent) putBlob(sid, digest string, blob []byte, slots ...int64) int {
	a.h.t.Helper()
	code, _ := a.sendBlob(http.MethodPut, api.Path(api.PathAgentChunk, sid, digest), blob, slots)
	return code
}

// done returns the slot ranges the session has recorded, as printed ("[]" for none).
func (a *fakeAgent) done(sid string) string {
	a.h.t.Helper()
	var sess api.Session
	if code, e := a.call(http.MethodGet, api.Path(api.PathAgentSession, sid), nil, &sess); code != http.StatusOK {
		a.h.t.Fatalf("session %s: %d %+v", sid, code, e)
	}
	return fmt.Sprint(sess.Done)
}

// postBlob uploads a blob for the hub to name; it returns the status and the hub's answer.
func (a *fakeAgent) postBlob(sid string, blob []byte, slots ...int64) (int, api.ChunkStored) {
	a.h.t.Helper()
	code, body := a.sendBlob(http.MethodPost, api.Path(api.PathAgentChunks, sid), blob, slots)
	var res api.ChunkStored
	if code == http.StatusOK || code == http.StatusCreated {
		if err := json.Unmarshal(body, &res); err != nil {
			a.h.t.Fatalf("answer to a chunk the hub names: %v: %q", err, body)
		}
	}
	return code, res
}

// sendBlob sends a chunk upload with ?slots=; it returns the status and the body of the answer.
func (a *fakeAgent) sendBlob(method, path string, blob []byte, slots []int64) (int, []byte) {
	a.h.t.Helper()
	u := a.h.URL + path
	for i, s := range slots {
		sep := ","
		if i == 0 {
			sep = "?slots="
		}
		u += sep + strconv.FormatInt(s, 10)
	}
	req, _ := http.NewRequest(method, u, bytes.NewReader(blob))
	resp, err := a.c.Do(req)
	if err != nil {
		a.h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		a.h.t.Fatal(err)
	}
	return resp.StatusCode, body
}

// uploadDisk sends the given slots of img through a session as an agent does: record the slots,
// then upload each missing chunk with the slots that hold it; it returns how many chunks were
// uploaded.
func (a *fakeAgent) uploadDisk(sid string, img []byte, slots []int64) int {
	a.h.t.Helper()
	var batch api.SlotBatch
	plain := map[string][]byte{}
	holders := map[string][]int64{}
	for _, s := range slots {
		p := img[s*testChunk : min(int64(len(img)), (s+1)*testChunk)]
		d := chunk.Sum(p).String()
		plain[d] = p
		holders[d] = append(holders[d], s)
		batch.Slots = append(batch.Slots, api.SlotDigest{Slot: s, Digest: d})
	}
	var res api.SlotBatchResult
	if code, e := a.call(http.MethodPost, api.Path(api.PathAgentSlots, sid), batch, &res); code != http.StatusOK {
		a.h.t.Fatalf("record slots: %d %+v", code, e)
	}
	for _, d := range res.Missing {
		if code := a.putChunk(sid, plain[d], holders[d]...); code != http.StatusCreated && code != http.StatusOK {
			a.h.t.Fatalf("put chunk %s: %d", d, code)
		}
	}
	return len(res.Missing)
}

func (a *fakeAgent) openSession(jobID, diskID string, req api.OpenSessionRequest) (api.Session, int, api.Error) {
	var s api.Session
	code, e := a.call(http.MethodPost, "/api/v1/agent/jobs/"+jobID+"/disks/"+diskID+"/session", req, &s)
	return s, code, e
}

func (a *fakeAgent) commit(sid string) api.BackupDisk {
	a.h.t.Helper()
	var bd api.BackupDisk
	if code, e := a.call(http.MethodPost, "/api/v1/agent/sessions/"+sid+"/commit", api.CommitRequest{SlotsChanged: 1}, &bd); code != http.StatusOK {
		a.h.t.Fatalf("commit: %d %+v", code, e)
	}
	return bd
}

func (a *fakeAgent) complete(jobID, status string) (int, api.Error) {
	return a.call(http.MethodPost, "/api/v1/agent/jobs/"+jobID+"/complete", api.JobCompletion{Status: status}, nil)
}

// restore reads a disk of a backup back through the repository code.
func (h *testHub) restore(instanceUUID, diskID, backupID string) []byte {
	h.t.Helper()
	ctx := context.Background()
	idx, err := h.Repo.ReadIndex(ctx, repository.IndexRef{VMUUID: instanceUUID, DiskID: diskID, BackupID: backupID})
	if err != nil {
		h.t.Fatalf("read index: %v", err)
	}
	out := make([]byte, 0, idx.DiskSize)
	for i := range idx.SlotCount() {
		if idx.IsZeroSlot(i) {
			out = append(out, make([]byte, idx.SlotLen(i))...)
			continue
		}
		b, err := h.Repo.ReadChunk(ctx, idx.Digests[i], nil)
		if err != nil {
			h.t.Fatalf("read chunk of slot %d: %v", i, err)
		}
		out = append(out, b...)
	}
	return out
}

func randomImage(t *testing.T, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b)
	// Leave a zero slot so that zero handling is exercised.
	clear(b[testChunk : 2*testChunk])
	return b
}

func twoDiskInventory(cap0, cap1 int64) api.Inventory {
	return api.Inventory{Source: api.Source{Name: "vc1", InstanceUUID: "0ba3d9a4-0000-4000-8000-0000000000aa"}, VMs: []api.VM{{
		InstanceUUID: "50120000-0000-4000-8000-000000000001", Name: "pgtest1", CBTEnabled: true,
		Disks: []api.Disk{
			{Key: 2000, DiskID: "disk-2000", CapacityBytes: cap0, Backupable: true},
			{Key: 2001, DiskID: "disk-2001", CapacityBytes: cap1, Backupable: true},
		},
	}}}
}

func allSlots(n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

func slotsOf(size int) int64 { return int64((size + testChunk - 1) / testChunk) }

func TestBackupProtocolFullThenIncremental(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		img0, img1 := randomImage(t, 10*testChunk+123), randomImage(t, 3*testChunk)
		a.push(twoDiskInventory(int64(len(img0)), int64(len(img1))))
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		if code, _ := h.call(h.client(nil), http.MethodPost, api.PathBackups, viewer, api.StartBackupRequest{VM: "pgtest1"}, nil); code != http.StatusForbidden {
			t.Fatalf("viewer started a backup: %d", code)
		}
		var b api.Backup
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, e)
		}
		if code, _ := h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, nil); code != http.StatusConflict {
			t.Fatalf("second start while one is queued: %d, want 409", code)
		}
		j := a.nextJob("5s")
		if j == nil || j.ID != b.ID || j.SnapshotName != "sendense-"+b.ID || len(j.Disks) != 2 || j.Disks[0].Parent != nil || j.Repository.ChunkSize != testChunk {
			t.Fatalf("job %+v", j)
		}
		vm, _ := h.Cat.VMByContextID(t.Context(), b.VMContextID)
		disks, _ := h.Cat.VMDisks(t.Context(), vm.ContextID)
		for _, d := range disks {
			if d.JobID != j.ID {
				t.Fatalf("claiming did not set vm_disks.job_id: %+v", d)
			}
		}
		imgs := map[string][]byte{"disk-2000": img0, "disk-2001": img1}
		for _, d := range j.Disks {
			s, code, e := a.openSession(j.ID, d.DiskID, api.OpenSessionRequest{Type: "full", Reason: "no parent backup", ChangeID: "uuid-1/1", CapacityBytes: d.CapacityBytes, ChunkSize: testChunk})
			if code != http.StatusOK {
				t.Fatalf("open session: %d %+v", code, e)
			}
			a.uploadDisk(s.ID, imgs[d.DiskID], allSlots(s.SlotCount))
			a.commit(s.ID)
		}
		if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}
		for id, img := range imgs {
			if got := h.restore("50120000-0000-4000-8000-000000000001", id, j.ID); !bytes.Equal(got, img) {
				t.Fatalf("full backup of %s does not restore the same bytes", id)
			}
		}
		vmAfter, _ := h.Cat.VMByContextID(t.Context(), vm.ContextID)
		disks, _ = h.Cat.VMDisks(t.Context(), vm.ContextID)
		if vmAfter.CurrentStatus != api.VMProtected || disks[0].ChangeID != "uuid-1/1" {
			t.Fatalf("after success: vm %s, change id %q", vmAfter.CurrentStatus, disks[0].ChangeID)
		}

		// Incremental: two slots of disk-2000 change, one becomes all zero.
		img0b := bytes.Clone(img0)
		_, _ = rand.Read(img0b[3*testChunk : 4*testChunk])
		clear(img0b[7*testChunk : 8*testChunk])
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: vm.ContextID}, &b); code != http.StatusAccepted {
			t.Fatalf("start incremental: %d %+v", code, e)
		}
		j2 := a.nextJob("5s")
		if j2.Disks[0].Parent == nil || j2.Disks[0].Parent.BackupID != j.ID || j2.Disks[0].Parent.ChangeID != "uuid-1/1" {
			t.Fatalf("incremental job parents %+v", j2.Disks[0].Parent)
		}
		for _, d := range j2.Disks {
			req := api.OpenSessionRequest{Type: "incremental", Reason: "cbt", ParentBackupID: d.Parent.BackupID, BaseChangeID: d.Parent.ChangeID, ChangeID: "uuid-1/2", CapacityBytes: d.CapacityBytes, ChunkSize: testChunk}
			// A wrong base change id is refused: an incremental must continue its parent.
			bad := req
			bad.BaseChangeID = "uuid-9/9"
			if _, code, _ := a.openSession(j2.ID, d.DiskID, bad); code != http.StatusConflict {
				t.Fatalf("incremental with a foreign base change id: %d, want 409", code)
			}
			bad = req
			bad.CapacityBytes += testChunk
			// A session cannot claim a geometry other than the disk's as reported.
			if _, code, e := a.openSession(j2.ID, d.DiskID, bad); code != http.StatusBadRequest || e.Field != "capacity_bytes" {
				t.Fatalf("session with another capacity than the disk's: %d %+v, want 400 naming capacity_bytes", code, e)
			}
			s, code, e := a.openSession(j2.ID, d.DiskID, req)
			if code != http.StatusOK {
				t.Fatalf("open incremental: %d %+v", code, e)
			}
			if d.DiskID == "disk-2000" {
				a.uploadDisk(s.ID, img0b, []int64{3, 7})
			}
			a.commit(s.ID)
		}
		if code, e := a.complete(j2.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete incremental: %d %+v", code, e)
		}
		if got := h.restore("50120000-0000-4000-8000-000000000001", "disk-2000", j2.ID); !bytes.Equal(got, img0b) {
			t.Fatal("incremental does not restore the changed disk")
		}
		if got := h.restore("50120000-0000-4000-8000-000000000001", "disk-2001", j2.ID); !bytes.Equal(got, img1) {
			t.Fatal("incremental does not restore the unchanged disk")
		}
		if got := h.restore("50120000-0000-4000-8000-000000000001", "disk-2000", j.ID); !bytes.Equal(got, img0) {
			t.Fatal("the full backup changed after the incremental")
		}
		var got api.Backup
		h.call(h.client(nil), http.MethodGet, api.PathBackups+"/"+j2.ID, viewer, nil, &got)
		if got.Status != "succeeded" || got.Type != "incremental" || len(got.Disks) != 2 || got.Disks[0].ParentBackupID != j.ID {
			t.Fatalf("incremental backup %+v", got)
		}
		var chain api.Chain
		if code, e := h.call(h.client(nil), http.MethodGet, api.PathBackups+"/pgtest1/chain", viewer, nil, &chain); code != http.StatusOK {
			t.Fatalf("chain: %d %+v", code, e)
		}
		if c := chain.Disks["disk-2000"]; len(c) != 2 || c[0].Type != "full" || c[1].Type != "incremental" || c[1].BaseChangeID != "uuid-1/1" {
			t.Fatalf("chain %+v", chain)
		}
		var list api.BackupList
		h.call(h.client(nil), http.MethodGet, api.PathBackups+"?vm=pgtest1&status=succeeded", viewer, nil, &list)
		if list.Page.Total != 2 {
			t.Fatalf("list %+v", list)
		}
	})
}

func TestBackupRejectsBadUploadsAndStoresNothing(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		img := randomImage(t, 4*testChunk)
		a, j, s := h.fullSession(img)
		chunksBefore, _, _ := h.Repo.Stats(t.Context())

		// A blob whose content does not hash to its name.
		blob, _ := chunk.AppendBlob(nil, chunk.CodecRaw, testChunk, img[:testChunk])
		other := chunk.Sum(img[2*testChunk : 3*testChunk]).String()
		if code := a.putBlob(s.ID, other, blob); code != http.StatusBadRequest {
			t.Fatalf("wrong digest: %d, want 400", code)
		}
		// Garbage instead of a blob.
		if code := a.putBlob(s.ID, chunk.Sum([]byte("x")).String(), []byte("not a blob")); code != http.StatusBadRequest {
			t.Fatalf("garbage blob: %d, want 400", code)
		}
		// A body over the cap.
		if code := a.putBlob(s.ID, other, make([]byte, 65<<20)); code != http.StatusRequestEntityTooLarge {
			t.Fatalf("oversized chunk: %d, want 413", code)
		}
		if n, _, _ := h.Repo.Stats(t.Context()); n != chunksBefore {
			t.Fatalf("refused uploads stored %d chunks", n-chunksBefore)
		}
		// A slot out of range names the field and records nothing.
		code, e := a.call(http.MethodPost, "/api/v1/agent/sessions/"+s.ID+"/slots", api.SlotBatch{Slots: []api.SlotDigest{{Slot: 0, Digest: chunk.ZeroDigest(testChunk).String()}, {Slot: 4, Digest: other}}}, nil)
		if code != http.StatusBadRequest || e.Field != "slots[1].slot" {
			t.Fatalf("slot out of range: %d %+v", code, e)
		}
		var sess api.Session
		a.call(http.MethodGet, "/api/v1/agent/sessions/"+s.ID, nil, &sess)
		if len(sess.Done) != 0 {
			t.Fatalf("a refused batch recorded slots: %+v", sess.Done)
		}

		// Resume: what was recorded is reported, so a restarted agent skips it.
		a.uploadDisk(s.ID, img, []int64{0, 1})
		a.call(http.MethodGet, "/api/v1/agent/sessions/"+s.ID, nil, &sess)
		if fmt.Sprint(sess.Done) != "[[0 2]]" {
			t.Fatalf("done ranges %v, want [[0 2]]", sess.Done)
		}
		a.uploadDisk(s.ID, img, []int64{2, 3})
		// A chunk that vanished before the commit: the index is not written.
		d := chunk.Sum(img[3*testChunk:])
		if err := h.Repo.RemoveChunk(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		code, e = a.call(http.MethodPost, "/api/v1/agent/sessions/"+s.ID+"/commit", api.CommitRequest{}, nil)
		if code != http.StatusBadRequest || !strings.Contains(e.Error, d.String()) {
			t.Fatalf("commit naming a missing chunk: %d %+v", code, e)
		}
		if _, err := h.Repo.ReadIndex(t.Context(), repository.IndexRef{VMUUID: "50120000-0000-4000-8000-000000000001", DiskID: "disk-2000", BackupID: j.ID}); err == nil {
			t.Fatal("an index naming a missing chunk was written")
		}
		// A job cannot succeed without all its disks.
		if code, _ := a.complete(j.ID, "succeeded"); code != http.StatusConflict {
			t.Fatalf("success without committed disks: %d, want 409", code)
		}
		if code, _ := a.complete(j.ID, "failed"); code != http.StatusOK {
			t.Fatalf("fail: %d", code)
		}
		var got api.Backup
		h.call(h.client(nil), http.MethodGet, api.PathBackups+"/"+j.ID, h.apiToken(api.RoleViewer), nil, &got)
		if got.Status != "failed" || len(got.Disks) != 0 {
			t.Fatalf("failed backup %+v", got)
		}
	})
}

func TestAgentCannotTouchAnotherAgentsJob(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a, b := h.newAgent("a"), h.newAgent("b")
		a.push(twoDiskInventory(2*testChunk, testChunk))
		operator := h.apiToken(api.RoleOperator)
		var bk api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &bk)
		if j := b.nextJob("0s"); j != nil {
			t.Fatalf("agent b was handed agent a's job %s", j.ID)
		}
		j := a.nextJob("5s")
		s, _, _ := a.openSession(j.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: 2 * testChunk, ChunkSize: testChunk})
		for _, tc := range []struct{ method, path string }{
			{http.MethodGet, "/api/v1/agent/jobs/" + j.ID},
			{http.MethodPost, "/api/v1/agent/jobs/" + j.ID + "/progress"},
			{http.MethodPost, "/api/v1/agent/jobs/" + j.ID + "/complete"},
			{http.MethodPost, "/api/v1/agent/jobs/" + j.ID + "/disks/disk-2000/session"},
			{http.MethodGet, "/api/v1/agent/sessions/" + s.ID},
			{http.MethodPost, "/api/v1/agent/sessions/" + s.ID + "/slots"},
			{http.MethodPost, "/api/v1/agent/sessions/" + s.ID + "/chunks"},
			{http.MethodPost, "/api/v1/agent/sessions/" + s.ID + "/commit"},
		} {
			var body any
			switch {
			case strings.HasSuffix(tc.path, "/complete"):
				body = api.JobCompletion{Status: "failed"}
			case strings.HasSuffix(tc.path, "/session"):
				body = api.OpenSessionRequest{Type: "full", CapacityBytes: 2 * testChunk, ChunkSize: testChunk}
			case strings.HasSuffix(tc.path, "/slots"):
				body = api.SlotBatch{Slots: []api.SlotDigest{{Slot: 0, Digest: chunk.ZeroDigest(testChunk).String()}}}
			case tc.method == http.MethodPost:
				body = struct{}{}
			}
			// A job that exists answers 403 (another agent's: its snapshot reaper keeps the
			// snapshot); a session is the agent's own business and answers 404.
			want := http.StatusForbidden
			if strings.Contains(tc.path, "/sessions/") {
				want = http.StatusNotFound
			}
			if code, e := b.call(tc.method, tc.path, body, nil); code != want {
				t.Errorf("agent b %s %s: %d %+v, want %d", tc.method, tc.path, code, e, want)
			}
		}
		// A job that no longer exists is gone: 404, and a reaper may remove its snapshot.
		if code, _ := b.call(http.MethodGet, api.Path(api.PathAgentJob, "bk-20200101-000000-00000000"), nil, nil); code != http.StatusNotFound {
			t.Errorf("agent b asked about a job that does not exist: %d, want 404", code)
		}
		if code := b.putChunk(s.ID, []byte("hello")); code != http.StatusNotFound {
			t.Errorf("agent b put chunk into a's session: %d", code)
		}
		st, _ := h.Cat.AgentJob(t.Context(), j.ID, a.id)
		if st.Status != api.JobRunning {
			t.Fatalf("agent b changed agent a's job: %s", st.Status)
		}
		var sess api.Session
		a.call(http.MethodGet, "/api/v1/agent/sessions/"+s.ID, nil, &sess)
		if len(sess.Done) != 0 {
			t.Fatalf("agent b recorded slots in a's session: %v", sess.Done)
		}
	})
}

func TestCancelAndDelete(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		a.push(twoDiskInventory(testChunk, testChunk))
		operator := h.apiToken(api.RoleOperator)
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		// Cancel while queued: done at once, never handed out.
		if code, _ := h.call(h.client(nil), http.MethodPost, api.PathBackups+"/"+b.ID+"/cancel", operator, nil, &b); code != http.StatusAccepted || b.Status != "cancelled" {
			t.Fatalf("cancel queued: %d %+v", code, b)
		}
		if j := a.nextJob("0s"); j != nil {
			t.Fatalf("a cancelled job was handed out: %s", j.ID)
		}
		// Cancel while running: the agent learns it from its next progress report.
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")
		if code, _ := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+j.ID, operator, nil, nil); code != http.StatusConflict {
			t.Fatalf("delete a running backup: %d, want 409", code)
		}
		h.call(h.client(nil), http.MethodPost, api.PathBackups+"/"+j.ID+"/cancel", operator, nil, nil)
		var st api.JobState
		a.call(http.MethodPost, "/api/v1/agent/jobs/"+j.ID+"/progress", api.JobProgress{Phase: "reading"}, &st)
		if !st.CancelRequested {
			t.Fatal("progress did not tell the agent to cancel")
		}
		a.complete(j.ID, "cancelled")
		if code, _ := h.call(h.client(nil), http.MethodPost, api.PathBackups+"/"+j.ID+"/cancel", operator, nil, nil); code != http.StatusConflict {
			t.Fatalf("cancel a finished job: %d, want 409", code)
		}
		// A finished backup can be deleted; the VM's disks then point at another job or NULL.
		if code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+j.ID, operator, nil, nil); code != http.StatusNoContent {
			t.Fatalf("delete: %d %+v", code, e)
		}
		if code, _ := h.call(h.client(nil), http.MethodGet, api.PathBackups+"/"+j.ID, operator, nil, nil); code != http.StatusNotFound {
			t.Fatalf("deleted backup still shown: %d", code)
		}
	})
}

func TestJobIsClaimedOnce(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		a.push(twoDiskInventory(testChunk, testChunk))
		operator := h.apiToken(api.RoleOperator)
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		var mu sync.Mutex
		claims, resumes := 0, 0
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j, resumed, err := h.Cat.ClaimJob(context.Background(), a.id, nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if j != nil && !resumed {
					claims++
				} else if j != nil {
					resumes++
				}
			}()
		}
		wg.Wait()
		if claims != 1 {
			t.Fatalf("%d claims of one job (and %d hand-backs); want exactly 1 claim", claims, resumes)
		}
	})
}

// A job queued by this hub reaches the agent's waiting long poll at once: the hub looks for jobs
// queued elsewhere only every hour here, so only the wake-up can deliver it in time.
func TestLongPollWakesOnNewJob(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		a.push(twoDiskInventory(testChunk, testChunk))
		operator := h.apiToken(api.RoleOperator)
		got := make(chan *api.Job, 1)
		go func() { got <- a.nextJob("30s") }()
		testenv.WaitFor(t, 10*time.Second, "the long poll to wait", func() bool {
			return metricValue(t, h.Reg, "sendense_hub_job_polls_waiting", "", "") == 1
		})
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		select {
		case j := <-got:
			if j == nil || j.ID != b.ID {
				t.Fatalf("poll returned %+v", j)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the long poll was not woken by the new job")
		}
	}, hubOptions{pollInterval: time.Hour})
}

// A chunk upload records the slots that hold it: one catalog read for the session (with its job
// and VM) before the body, and one transaction that reads the session's status again and writes
// the slots; no second slot batch is needed.
func TestChunkUploadRecordsItsSlots(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		img := randomImage(t, 4*testChunk)
		copy(img[3*testChunk:], img[:testChunk]) // slots 0 and 3 hold the same chunk
		a, _, s := h.fullSession(img)
		selects := metricValue(t, h.CatReg, "sendense_hub_catalog_queries_total", "operation", "SELECT")
		inserts := metricValue(t, h.CatReg, "sendense_hub_catalog_queries_total", "operation", "INSERT")
		others := metricValue(t, h.CatReg, "sendense_hub_catalog_queries_total", "operation", "OTHER")
		if code := a.putChunk(s.ID, img[:testChunk], 0, 3); code != http.StatusCreated {
			t.Fatalf("put chunk: %d, want 201", code)
		}
		// The agent's certificate is checked against the catalog on every request: one more read.
		if d := metricValue(t, h.CatReg, "sendense_hub_catalog_queries_total", "operation", "SELECT") - selects; d != 3 {
			t.Errorf("a chunk upload ran %v SELECTs, want 3 (agent, session, its status before the slots)", d)
		}
		if d := metricValue(t, h.CatReg, "sendense_hub_catalog_queries_total", "operation", "INSERT") - inserts; d != 1 {
			t.Errorf("a chunk upload ran %v INSERTs, want 1 (its slots)", d)
		}
		if d := metricValue(t, h.CatReg, "sendense_hub_catalog_queries_total", "operation", "OTHER") - others; d != 2 {
			t.Errorf("a chunk upload ran %v other statements, want 2 (the transaction's begin and commit)", d)
		}
		if got, want := a.done(s.ID), "[[0 1] [3 4]]"; got != want {
			t.Fatalf("slots done = %s, want %s", got, want)
		}
		// A slot outside the disk is refused before anything is stored or recorded.
		if code := a.putChunk(s.ID, img[testChunk:2*testChunk], 4); code != http.StatusBadRequest {
			t.Fatalf("slot outside the disk: %d, want 400", code)
		}
	})
}

// A chunk the agent sends without a name is named by the hub, from the plaintext it decodes
// and hashes itself: the answer is that name, the slots are recorded with it, and a backup made
// of such uploads commits and restores. What the hub would refuse under a name it refuses here.
func TestChunkNamedByTheHub(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		img := randomImage(t, 4*testChunk)
		a, j, s := h.fullSession(img)
		chunksBefore, _, _ := h.Repo.Stats(t.Context())
		// Refused, and nothing stored or recorded: garbage, a zero chunk, a slot outside the disk,
		// a body over the session's cap, another agent's upload into this session.
		raw := func(p []byte) []byte {
			blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(p), p)
			if err != nil {
				t.Fatal(err)
			}
			return blob
		}
		for _, tc := range []struct {
			name  string
			blob  []byte
			slots []int64
			want  int
		}{
			{"garbage", []byte("not a blob"), []int64{0}, http.StatusBadRequest},
			{"zero chunk", raw(make([]byte, testChunk)), []int64{0}, http.StatusBadRequest},
			{"slot outside the disk", raw(img[:testChunk]), []int64{4}, http.StatusBadRequest},
			{"over the cap", make([]byte, 2*testChunk), []int64{0}, http.StatusRequestEntityTooLarge},
		} {
			if code, _ := a.postBlob(s.ID, tc.blob, tc.slots...); code != tc.want {
				t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
			}
		}
		if code, _ := h.newAgent("b").postBlob(s.ID, raw(img[:testChunk]), 0); code != http.StatusNotFound {
			t.Errorf("another agent's upload into the session: %d, want 404", code)
		}
		if n, _, _ := h.Repo.Stats(t.Context()); n != chunksBefore {
			t.Fatalf("refused uploads stored %d chunks", n-chunksBefore)
		}
		if got := a.done(s.ID); got != "[]" {
			t.Fatalf("refused uploads recorded slots: %s", got)
		}

		// Slot 0 raw, slot 1 compressed: each named by the SHA-256 of its plaintext.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			t.Fatal(err)
		}
		text := bytes.Repeat([]byte("sendense names what it was sent "), testChunk/32)
		copy(img[testChunk:2*testChunk], text)
		packed, err := chunk.AppendBlob(nil, chunk.CodecZstd, testChunk, enc.EncodeAll(text, nil))
		if err != nil {
			t.Fatal(err)
		}
		for i, blob := range [][]byte{raw(img[:testChunk]), packed} {
			code, res := a.postBlob(s.ID, blob, int64(i))
			if want := chunk.Sum(img[i*testChunk : (i+1)*testChunk]).String(); code != http.StatusCreated || res.Digest != want || !res.Stored {
				t.Fatalf("slot %d: %d %+v, want 201 named %s and stored", i, code, res, want)
			}
		}
		// Again: held already, the same name.
		if code, res := a.postBlob(s.ID, packed, 1); code != http.StatusOK || res.Stored || res.Digest != chunk.Sum(text).String() {
			t.Fatalf("the same chunk again: %d %+v, want 200, not stored", code, res)
		}
		if got := a.done(s.ID); got != "[[0 2]]" {
			t.Fatalf("done ranges %s, want [[0 2]]", got)
		}
		a.uploadDisk(s.ID, img, []int64{2, 3})
		bd := a.commit(s.ID)
		idx, err := h.Repo.ReadIndex(t.Context(), repository.IndexRef{VMUUID: "50120000-0000-4000-8000-000000000001", DiskID: "disk-2000", BackupID: j.ID})
		if err != nil {
			t.Fatalf("index of %+v: %v", bd, err)
		}
		for slot := range int64(4) {
			if got, want := idx.Digests[slot], chunk.Sum(img[slot*testChunk:(slot+1)*testChunk]); got != want {
				t.Errorf("slot %d is indexed as %s, want %s", slot, got, want)
			}
		}
	})
}

// The session is checked before a byte of the body is read, and the body is capped at the
// session's chunk size, not at the largest chunk any repository may use.
func TestChunkUploadCheckedBeforeItsBody(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		img := randomImage(t, 4*testChunk)
		a, _, s := h.fullSession(img)
		digest := chunk.Sum(img[:testChunk]).String()
		// A made-up session: refused from the headers, the announced body is never read.
		body := &countingReader{n: 64 << 20}
		req, _ := http.NewRequest(http.MethodPut, h.URL+api.Path(api.PathAgentChunk, "us-made-up", digest), body)
		req.ContentLength = body.n
		resp, err := a.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("made-up session: %d, want 404", resp.StatusCode)
		}
		// The client streams into socket buffers until the answer comes; the hub must answer
		// long before taking the whole announced body.
		if sent := body.read.Load(); sent >= body.n/2 {
			t.Errorf("%d of %d bytes were sent before the hub refused a session that does not exist", sent, body.n)
		}
		// A body larger than a blob of this session's 64 KiB chunks, far below the 64 MiB maximum.
		if code := a.putBlob(s.ID, digest, make([]byte, 2*testChunk)); code != http.StatusRequestEntityTooLarge {
			t.Fatalf("body over the session's chunk size: %d, want 413", code)
		}
	})
}

// countingReader yields n zero bytes and counts how many were read. The HTTP transport may still
// be reading it after the response arrived, so the count is atomic.
type countingReader struct {
	n    int64
	read atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	done := r.read.Load()
	if done >= r.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), r.n-done)
	clear(p[:k])
	r.read.Add(k)
	return int(k), nil
}

// Every number an agent reports is checked: a negative or impossible counter is refused with
// 400 naming the field, the job goes on, and its completion still counts in the metrics.
func TestAgentNumbersAreChecked(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		img := randomImage(t, 4*testChunk)
		a.push(twoDiskInventory(int64(len(img)), testChunk))
		operator := h.apiToken(api.RoleOperator)
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")
		for _, tc := range []struct {
			p     api.JobProgress
			field string
		}{
			{api.JobProgress{BytesRead: -999}, "bytes_read"},
			{api.JobProgress{BytesSent: 1 << 62}, "bytes_sent"},
			{api.JobProgress{BytesTotal: -1}, "bytes_total"},
			{api.JobProgress{Phase: "pwned\x1b[2J"}, "phase"},
			{api.JobProgress{SnapshotRef: "snapshot-1\r\nX"}, "snapshot_ref"},
		} {
			code, e := a.call(http.MethodPost, api.Path(api.PathAgentJobProg, j.ID), tc.p, nil)
			if code != http.StatusBadRequest || e.Field != tc.field {
				t.Errorf("progress %+v: %d %+v, want 400 naming %s", tc.p, code, e, tc.field)
			}
		}
		disks := map[string]int64{"disk-2000": int64(len(img)), "disk-2001": testChunk}
		for _, d := range j.Disks {
			s, code, e := a.openSession(j.ID, d.DiskID, api.OpenSessionRequest{Type: "full", CapacityBytes: disks[d.DiskID], ChunkSize: testChunk})
			if code != http.StatusOK {
				t.Fatalf("open: %d %+v", code, e)
			}
			for _, bad := range []api.CommitRequest{{BytesRead: -1}, {BytesZero: disks[d.DiskID] + 1}, {SlotsChanged: 99}} {
				if code, _ := a.call(http.MethodPost, api.Path(api.PathAgentCommitSess, s.ID), bad, nil); code != http.StatusBadRequest {
					t.Errorf("commit %+v: %d, want 400", bad, code)
				}
			}
			a.commit(s.ID)
		}
		if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete after refused reports: %d %+v", code, e)
		}
		if v := metricValue(t, h.Reg, "sendense_hub_backup_jobs_finished_total", "result", "succeeded"); v != 1 {
			t.Fatalf("succeeded jobs counted %v, want 1", v)
		}
	})
}

// A job's totals are the sum of its committed disks plus what the agent reports of the disks
// still in flight: they move while the job runs, and a resumed agent, which counts only its own
// work, cannot make them shrink to that.
func TestJobTotalsAreTheSumOfItsDisks(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		img0, img1 := randomImage(t, 4*testChunk), randomImage(t, 2*testChunk)
		a.push(twoDiskInventory(int64(len(img0)), int64(len(img1))))
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")
		show := func() api.Backup {
			var got api.Backup
			h.call(h.client(nil), http.MethodGet, api.Path(api.PathBackup, j.ID), viewer, nil, &got)
			return got
		}
		s0, _, _ := a.openSession(j.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img0)), ChunkSize: testChunk})
		a.uploadDisk(s0.ID, img0, allSlots(s0.SlotCount))
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentCommitSess, s0.ID), api.CommitRequest{SlotsChanged: 4, BytesRead: 4 * testChunk, BytesSent: 3 * testChunk}, nil); code != http.StatusOK {
			t.Fatalf("commit: %d %+v", code, e)
		}
		// The agent restarted: it reports only what it read of disk-2001 since.
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentJobProg, j.ID), api.JobProgress{Phase: api.PhaseReading, BytesRead: testChunk, BytesTotal: 6 * testChunk}, nil); code != http.StatusOK {
			t.Fatalf("progress: %d %+v", code, e)
		}
		if got := show(); got.BytesRead != 5*testChunk || got.BytesSent != 3*testChunk || got.Phase != api.PhaseReading || got.BytesTotal != 6*testChunk {
			t.Fatalf("running totals read=%d sent=%d phase=%q total=%d; want %d, %d, reading, %d", got.BytesRead, got.BytesSent, got.Phase, got.BytesTotal, 5*testChunk, 3*testChunk, 6*testChunk)
		}
		s1, _, _ := a.openSession(j.ID, "disk-2001", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img1)), ChunkSize: testChunk})
		a.uploadDisk(s1.ID, img1, allSlots(s1.SlotCount))
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentCommitSess, s1.ID), api.CommitRequest{SlotsChanged: 2, BytesRead: 2 * testChunk, BytesSent: 2 * testChunk}, nil); code != http.StatusOK {
			t.Fatalf("commit: %d %+v", code, e)
		}
		if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}
		if got := show(); got.BytesRead != 6*testChunk || got.BytesSent != 5*testChunk {
			t.Fatalf("final totals read=%d sent=%d, want the disks' sum %d and %d", got.BytesRead, got.BytesSent, 6*testChunk, 5*testChunk)
		}
	})
}

// cancelAtEOF is a chunk body whose client goes away the moment its last byte is read.
type cancelAtEOF struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (b *cancelAtEOF) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.cancel()
	}
	return n, err
}

// A chunk whose body arrived whole is stored and its slots recorded even when its agent goes
// away at that moment (killed mid-backup): the agent that resumes finds the slots done instead
// of sending the chunk again.
func TestChunkIsRecordedWhenItsAgentLeavesAfterTheBody(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		img := randomImage(t, 4*testChunk)
		a.push(twoDiskInventory(int64(len(img)), testChunk))
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, h.apiToken(api.RoleOperator), api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")
		s, _, _ := a.openSession(j.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img)), ChunkSize: testChunk})
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, testChunk, img[:testChunk])
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		res, err := h.Ingest.PutChunk(ctx, a.id, s.ID, "", []int64{0, 2}, &cancelAtEOF{r: bytes.NewReader(blob), cancel: cancel}, int64(len(blob)))
		if err != nil || res.Digest != chunk.Sum(img[:testChunk]).String() {
			t.Fatalf("a chunk whose agent left after its body: %+v, %v", res, err)
		}
		if got := a.done(s.ID); got != "[[0 1] [2 3]]" {
			t.Fatalf("slots done after the upload: %s, want 0 and 2", got)
		}
	})
}

// A completion may carry the job's last progress (one round trip instead of two at the end of a
// job): it is checked as a report of its own would be, and a bad one refuses the completion,
// which leaves the job running; a good one is recorded before the outcome.
func TestCompletionCarriesTheLastProgress(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		a.push(twoDiskInventory(4*testChunk, testChunk))
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")
		show := func() api.Backup {
			var got api.Backup
			h.call(h.client(nil), http.MethodGet, api.Path(api.PathBackup, j.ID), viewer, nil, &got)
			return got
		}
		bad := api.JobCompletion{Status: api.JobFailed, Error: "source gone", Progress: &api.JobProgress{Phase: api.PhaseFinished, BytesRead: -1}}
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentJobDone, j.ID), bad, nil); code != http.StatusBadRequest || e.Field != "progress.bytes_read" {
			t.Fatalf("completion with a negative count: %d %+v, want 400 naming progress.bytes_read", code, e)
		}
		if got := show(); got.Status != api.JobRunning {
			t.Fatalf("a refused completion ended the job: %s", got.Status)
		}
		last := &api.JobProgress{Phase: api.PhaseFinished, BytesRead: 3 * testChunk, BytesSent: 2 * testChunk, BytesZero: testChunk}
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentJobDone, j.ID), api.JobCompletion{Status: api.JobFailed, Error: "source gone", Progress: last}, nil); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}
		got := show()
		if got.Status != api.JobFailed || got.Phase != api.PhaseFinished || got.BytesRead != 3*testChunk || got.BytesSent != 2*testChunk || got.BytesZero != testChunk {
			t.Fatalf("after the completion: status %s phase %q read=%d sent=%d zero=%d, want failed, finished, %d, %d, %d",
				got.Status, got.Phase, got.BytesRead, got.BytesSent, got.BytesZero, 3*testChunk, 2*testChunk, testChunk)
		}
		// Sent again (its answer lost), it is answered the same and records nothing more.
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentJobDone, j.ID), api.JobCompletion{Status: api.JobFailed, Error: "source gone",
			Progress: &api.JobProgress{Phase: api.PhaseFinished, BytesRead: testChunk}}, nil); code != http.StatusOK {
			t.Fatalf("completion sent again: %d %+v", code, e)
		}
		if got := show(); got.BytesRead != 3*testChunk {
			t.Fatalf("a completion sent again changed the totals: read=%d", got.BytesRead)
		}
	})
}

// An agent may hold at most ingest.MaxUploadsPerAgent chunk uploads in flight: the next one is
// answered 429 with Retry-After before its body is read.
func TestChunkUploadsPerAgentAreBounded(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		img := randomImage(t, 4*testChunk)
		a, _, s := h.fullSession(img)
		plain := img[:testChunk]
		blob, _ := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
		url := h.URL + api.Path(api.PathAgentChunk, s.ID, chunk.Sum(plain).String())
		// Hold the maximum of uploads open: each has sent part of its body.
		var writers []*io.PipeWriter
		results := make(chan int, ingest.MaxUploadsPerAgent)
		for range ingest.MaxUploadsPerAgent {
			pr, pw := io.Pipe()
			writers = append(writers, pw)
			req, _ := http.NewRequest(http.MethodPut, url, pr)
			req.ContentLength = int64(len(blob))
			go func() {
				resp, err := a.c.Do(req)
				if err != nil {
					results <- 0
					return
				}
				resp.Body.Close()
				results <- resp.StatusCode
			}()
			if _, err := pw.Write(blob[:100]); err != nil {
				t.Fatal(err)
			}
		}
		testenv.WaitFor(t, 20*time.Second, "every held upload to be in flight", func() bool {
			return metricValue(t, h.Reg, "sendense_hub_chunk_uploads_in_flight", "", "") == ingest.MaxUploadsPerAgent
		})
		req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(blob))
		resp, err := a.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("upload over the cap: %d (Retry-After %q), want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		for _, pw := range writers {
			go func() { _, _ = pw.Write(blob[100:]); _ = pw.Close() }()
		}
		for range ingest.MaxUploadsPerAgent {
			if code := <-results; code != http.StatusCreated && code != http.StatusOK {
				t.Fatalf("a held upload ended %d, want 201 or 200", code)
			}
		}
		if code := a.putBlob(s.ID, chunk.Sum(plain).String(), blob); code != http.StatusOK {
			t.Fatalf("upload once the others finished: %d, want 200 (already stored)", code)
		}
	})
}

// A chunk upload still arriving when its session is committed is refused (409) and records
// nothing: acknowledging it would report stored a slot that the committed index does not name.
// The commit sent again returns the same result, and the backup holds exactly what was recorded.
func TestChunkUploadAcrossCommitIsRefused(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		img := randomImage(t, 3*testChunk)
		a, j, s := h.fullSession(img)
		a.uploadDisk(s.ID, img, []int64{0, 1})
		plain := img[2*testChunk:]
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
		if err != nil {
			t.Fatal(err)
		}
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodPut, h.URL+api.Path(api.PathAgentChunk, s.ID, chunk.Sum(plain).String())+"?slots=2", pr)
		req.ContentLength = int64(len(blob))
		type answer struct {
			code int
			body []byte
		}
		done := make(chan answer, 1)
		go func() {
			resp, err := a.c.Do(req)
			if err != nil {
				done <- answer{}
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			done <- answer{resp.StatusCode, body}
		}()
		if _, err := pw.Write(blob[:100]); err != nil {
			t.Fatal(err)
		}
		// The hub has checked the session and waits for the rest of the body.
		testenv.WaitFor(t, 20*time.Second, "the upload to be in flight", func() bool {
			return metricValue(t, h.Reg, "sendense_hub_chunk_uploads_in_flight", "", "") == 1
		})
		first := a.commit(s.ID)
		if _, err := pw.Write(blob[100:]); err != nil {
			t.Fatal(err)
		}
		_ = pw.Close()
		got := <-done
		var e api.Error
		if got.code != http.StatusConflict || json.Unmarshal(got.body, &e) != nil || e.Error == "" {
			t.Fatalf("upload finished after the commit: %d %q, want 409 with a JSON error", got.code, got.body)
		}
		slots, err := h.Cat.SessionSlots(t.Context(), s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(slots) != 2 || slots[0].Slot != 0 || slots[1].Slot != 1 {
			t.Fatalf("slots recorded: %+v, want 0 and 1 only", slots)
		}
		if again := a.commit(s.ID); again.Status != first.Status || !again.StartedAt.Equal(first.StartedAt) || again.SlotsTotal != 3 {
			t.Fatalf("commit sent again: %+v, first %+v", again, first)
		}
		want := append(bytes.Clone(img[:2*testChunk]), make([]byte, testChunk)...)
		if back := h.restore("50120000-0000-4000-8000-000000000001", "disk-2000", j.ID); !bytes.Equal(back, want) {
			t.Fatal("the committed backup is not the two recorded slots and a zero third")
		}
	})
}

// A commit interrupted after it began (a hub stopped while writing the index) leaves the session
// committing: it takes no more slots, an agent resuming sees it so, and the commit sent again
// completes it with every slot recorded before.
func TestCommitInterruptedIsCompletedBySendingItAgain(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		img := randomImage(t, 3*testChunk)
		a, j, s := h.fullSession(img)
		a.uploadDisk(s.ID, img, []int64{0, 1, 2})
		if err := h.Cat.BeginCommit(t.Context(), s.ID); err != nil {
			t.Fatal(err)
		}
		if code := a.putChunk(s.ID, img[:testChunk], 0); code != http.StatusConflict {
			t.Fatalf("upload to a committing session: %d, want 409", code)
		}
		var sess api.Session
		if code, e := a.call(http.MethodGet, api.Path(api.PathAgentSession, s.ID), nil, &sess); code != http.StatusOK || sess.Status != api.SessionCommitting {
			t.Fatalf("session: %d %+v %+v, want 200 and committing", code, e, sess)
		}
		if bd := a.commit(s.ID); bd.Status != "committed" {
			t.Fatalf("commit sent again: %+v", bd)
		}
		if back := h.restore("50120000-0000-4000-8000-000000000001", "disk-2000", j.ID); !bytes.Equal(back, img) {
			t.Fatal("the completed commit does not restore the disk")
		}
		if err := h.Cat.BeginCommit(t.Context(), s.ID); err == nil {
			t.Fatal("a committed session began a commit again")
		}
	})
}

// Drift a check found is the session's, not only the agent's: an agent that stops after the
// answer and resumes the session learns it from the session, and the session commits only once
// every slot is recorded — not with the parent's digests for the slots CBT called unchanged.
func TestDriftFoundHoldsTheSessionToEverySlot(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		operator := h.apiToken(api.RoleOperator)
		img := randomImage(t, 4*testChunk)
		a := h.newAgent("a1")
		a.push(twoDiskInventory(int64(len(img)), testChunk))
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")
		for _, d := range []struct {
			id  string
			img []byte
		}{{"disk-2000", img}, {"disk-2001", img[:testChunk]}} {
			s, code, e := a.openSession(j.ID, d.id, api.OpenSessionRequest{Type: "full", ChangeID: "uuid-1/1", CapacityBytes: int64(len(d.img)), ChunkSize: testChunk})
			if code != http.StatusOK {
				t.Fatalf("open %s: %d %+v", d.id, code, e)
			}
			a.uploadDisk(s.ID, d.img, allSlots(s.SlotCount))
			a.commit(s.ID)
		}
		if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}

		// Slot 1 changes as CBT reports; slot 2 changes behind CBT's back.
		img2 := bytes.Clone(img)
		_, _ = rand.Read(img2[1*testChunk : 2*testChunk])
		_, _ = rand.Read(img2[2*testChunk : 3*testChunk])
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j2 := a.nextJob("5s")
		p := j2.Disks[0].Parent
		s2, code, e := a.openSession(j2.ID, "disk-2000", api.OpenSessionRequest{Type: api.BackupIncremental, ParentBackupID: p.BackupID,
			BaseChangeID: p.ChangeID, ChangeID: "uuid-1/2", CapacityBytes: int64(len(img2)), ChunkSize: testChunk})
		if code != http.StatusOK || s2.CBTDrift {
			t.Fatalf("open incremental: %d %+v %+v", code, e, s2)
		}
		a.uploadDisk(s2.ID, img2, []int64{1})
		var res api.CheckResult
		check := api.CheckRequest{Slots: []api.SlotDigest{{Slot: 2, Digest: chunk.Sum(img2[2*testChunk : 3*testChunk]).String()},
			{Slot: 3, Digest: chunk.Sum(img2[3*testChunk:]).String()}}}
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentCheckSess, s2.ID), check, &res); code != http.StatusOK || !slices.Equal(res.Mismatched, []int64{2}) {
			t.Fatalf("check: %d %+v %+v, want slot 2 mismatched", code, e, res)
		}

		// The agent stops here; the one that resumes asks for the session.
		var sess api.Session
		if code, e := a.call(http.MethodGet, api.Path(api.PathAgentSession, s2.ID), nil, &sess); code != http.StatusOK || !sess.CBTDrift {
			t.Fatalf("resumed session: %d %+v %+v, want cbt_drift", code, e, sess)
		}
		var bd api.BackupDisk
		code, e = a.call(http.MethodPost, api.Path(api.PathAgentCommitSess, s2.ID), api.CommitRequest{SlotsChanged: 1}, &bd)
		if code != http.StatusConflict || !strings.Contains(e.Error, "CBT drift") || !strings.Contains(e.Error, "1 of 4") {
			t.Fatalf("commit with only CBT's slot recorded: %d %+v, want 409 naming the drift and the slots recorded", code, e)
		}
		// The commit's move out of open decides by itself, so a drift recorded after a commit read
		// the session still holds it.
		if err := h.Cat.BeginCommit(t.Context(), s2.ID); !errors.Is(err, catalog.ErrConflict) || !strings.Contains(err.Error(), "1 of 4") {
			t.Fatalf("begin commit of the drifted session short of slots: %v, want ErrConflict", err)
		}
		if code := a.putChunk(s2.ID, img2[2*testChunk:3*testChunk], 2); code != http.StatusCreated {
			t.Fatalf("upload after the refused commit: %d, want 201 (the session is still open)", code)
		}
		var batch api.SlotBatchResult
		unchanged := api.SlotBatch{Slots: []api.SlotDigest{{Slot: 0, Digest: chunk.Sum(img2[:testChunk]).String()}, {Slot: 3, Digest: chunk.Sum(img2[3*testChunk:]).String()}}}
		if code, e := a.call(http.MethodPost, api.Path(api.PathAgentSlots, s2.ID), unchanged, &batch); code != http.StatusOK || batch.Recorded != 2 {
			t.Fatalf("record the unchanged slots: %d %+v %+v", code, e, batch)
		}
		code, e = a.call(http.MethodPost, api.Path(api.PathAgentCommitSess, s2.ID), api.CommitRequest{SlotsChanged: 4}, &bd)
		if code != http.StatusOK || !bd.CBTDrift {
			t.Fatalf("commit with every slot recorded: %d %+v %+v, want 200 with cbt_drift", code, e, bd)
		}
		s3, _, _ := a.openSession(j2.ID, "disk-2001", api.OpenSessionRequest{Type: api.BackupIncremental, ParentBackupID: j2.Disks[1].Parent.BackupID,
			BaseChangeID: j2.Disks[1].Parent.ChangeID, ChangeID: "uuid-1/2", CapacityBytes: testChunk, ChunkSize: testChunk})
		a.commit(s3.ID)
		if code, e := a.complete(j2.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete the incremental: %d %+v", code, e)
		}
		if back := h.restore("50120000-0000-4000-8000-000000000001", "disk-2000", j2.ID); !bytes.Equal(back, img2) {
			t.Fatal("the incremental does not restore the disk")
		}
		var evs api.EventList
		if code, e := h.call(h.client(nil), http.MethodGet, api.PathEvents+"?type="+api.EventCBTDrift, operator, nil, &evs); code != http.StatusOK ||
			len(evs.Events) != 1 || evs.Events[0].Details["drift_count"] != "1" || evs.Events[0].Details["backup_id"] != j2.ID {
			t.Fatalf("cbt_drift events: %d %+v %+v", code, e, evs)
		}
	})
}

// Dedup is never an oracle across agents: an agent may reference without upload only chunks of
// its own disk's last backup or of its own session. Another agent naming a stored chunk is told
// to upload it, and can commit only once it has sent the bytes.
func TestKnownChunksRule(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		operator := h.apiToken(api.RoleOperator)
		img := randomImage(t, 4*testChunk)
		secret := chunk.Sum(img[:testChunk]).String()

		a := h.newAgent("a")
		a.push(twoDiskInventory(int64(len(img)), testChunk))
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")
		s, _, _ := a.openSession(j.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img)), ChunkSize: testChunk})
		if s.KnownBackupID != "" {
			t.Fatalf("the first session of a disk may reference the chunks of %q", s.KnownBackupID)
		}
		a.uploadDisk(s.ID, img, allSlots(s.SlotCount))
		a.commit(s.ID)
		s1, _, _ := a.openSession(j.ID, "disk-2001", api.OpenSessionRequest{Type: "full", CapacityBytes: testChunk, ChunkSize: testChunk})
		// The same agent's other disk never held the chunk: it must upload it too.
		var res api.SlotBatchResult
		a.call(http.MethodPost, api.Path(api.PathAgentSlots, s1.ID), api.SlotBatch{Slots: []api.SlotDigest{{Slot: 0, Digest: secret}}}, &res)
		if len(res.Missing) != 1 || res.Missing[0] != secret {
			t.Fatalf("another disk referenced a chunk it never held: %+v", res)
		}
		a.putChunk(s1.ID, img[:testChunk], 0)
		a.commit(s1.ID)
		if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}
		// A full backup of the disk again may reference the chunks of its last backup, and the
		// session says so.
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1", Type: api.BackupFull}, &b)
		j2 := a.nextJob("5s")
		if s2, code, e := a.openSession(j2.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img)), ChunkSize: testChunk}); code != http.StatusOK || s2.KnownBackupID != j.ID {
			t.Fatalf("a full after %s: %d %+v, session may reference %q", j.ID, code, e, s2.KnownBackupID)
		}
		if code, e := a.complete(j2.ID, "cancelled"); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}

		// Agent b backs up its own VM and names agent a's chunk.
		bAgent := h.newAgent("b")
		inv := twoDiskInventory(int64(len(img)), testChunk)
		inv.Source.Name, inv.Source.InstanceUUID = "vc-b", "0ba3d9a4-0000-4000-8000-0000000000bb"
		inv.VMs[0].InstanceUUID, inv.VMs[0].Name = "50120000-0000-4000-8000-0000000000b1", "other"
		bAgent.push(inv)
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "other"}, &b)
		jb := bAgent.nextJob("5s")
		sb, _, _ := bAgent.openSession(jb.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img)), ChunkSize: testChunk})
		if sb.KnownBackupID != "" {
			t.Fatalf("agent b's first session may reference the chunks of %q", sb.KnownBackupID)
		}
		bAgent.call(http.MethodPost, api.Path(api.PathAgentSlots, sb.ID), api.SlotBatch{Slots: []api.SlotDigest{{Slot: 0, Digest: secret}}}, &res)
		if res.Recorded != 0 || len(res.Missing) != 1 || res.Missing[0] != secret {
			t.Fatalf("agent b referenced agent a's chunk without sending it: %+v", res)
		}
		if got := bAgent.done(sb.ID); got != "[]" {
			t.Fatalf("agent b's slot was recorded: %s", got)
		}
		// Sending the bytes is proof: accepted (already stored, so 200) and recorded.
		if code := bAgent.putChunk(sb.ID, img[:testChunk], 0); code != http.StatusOK {
			t.Fatalf("agent b uploading the chunk: %d, want 200 (stored once)", code)
		}
		if got := bAgent.done(sb.ID); got != "[[0 1]]" {
			t.Fatalf("after its upload, agent b's slots done = %s", got)
		}
	})
}

// A VM's disk that snapshots cannot capture (independent, physical RDM) is not silently left
// out: the succeeded backup lists it with the reason, and counts as succeeded with warnings.
func TestSkippedDisksAreRecorded(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		img := randomImage(t, 2*testChunk)
		inv := twoDiskInventory(int64(len(img)), testChunk)
		inv.VMs[0].Disks[1].Backupable = false
		inv.VMs[0].Disks[1].DiskMode = "independent_persistent"
		inv.VMs[0].Disks[1].NotBackupableReason = "independent disk"
		a.push(inv)
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")
		if len(j.Disks) != 1 || j.Disks[0].DiskID != "disk-2000" {
			t.Fatalf("job disks %+v, want only disk-2000", j.Disks)
		}
		s, _, _ := a.openSession(j.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: int64(len(img)), ChunkSize: testChunk})
		a.uploadDisk(s.ID, img, allSlots(s.SlotCount))
		a.commit(s.ID)
		if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}
		var got api.Backup
		h.call(h.client(nil), http.MethodGet, api.Path(api.PathBackup, j.ID), viewer, nil, &got)
		if got.Status != api.JobSucceeded || len(got.SkippedDisks) != 1 || got.SkippedDisks[0].DiskID != "disk-2001" || !strings.Contains(got.SkippedDisks[0].Reason, "independent") {
			t.Fatalf("backup %s skipped %+v, want disk-2001 with the reason", got.Status, got.SkippedDisks)
		}
		if v := metricValue(t, h.Reg, "sendense_hub_backup_jobs_finished_total", "result", "succeeded_with_warnings"); v != 1 {
			t.Fatalf("jobs succeeded with warnings = %v, want 1", v)
		}
	})
}

// The job reports the VM's disks as its snapshot shows them: a disk added since discovery is
// recorded at once and backed up by this job, a resized disk takes its new size, and sessions
// must use exactly the reported geometry (a 256 MiB disk cannot be committed as a 2 TiB one).
func TestJobReportsItsSnapshotsDisks(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		inv := twoDiskInventory(4*testChunk, testChunk)
		a.push(inv)
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")
		if len(j.Disks) != 2 {
			t.Fatalf("job disks %+v", j.Disks)
		}
		// Since discovery: disk-2000 grew, disk-2002 was added.
		disks := append([]api.Disk(nil), inv.VMs[0].Disks...)
		disks[0].CapacityBytes = 6 * testChunk
		disks = append(disks, api.Disk{Key: 2002, DiskID: "disk-2002", CapacityBytes: 2 * testChunk, Backupable: true})
		var got api.Job
		if code, e := a.call(http.MethodPut, api.Path(api.PathAgentJobDisks, j.ID), api.JobDisksReport{Disks: disks}, &got); code != http.StatusOK {
			t.Fatalf("report disks: %d %+v", code, e)
		}
		caps := map[string]int64{}
		for _, d := range got.Disks {
			caps[d.DiskID] = d.CapacityBytes
		}
		if len(got.Disks) != 3 || caps["disk-2000"] != 6*testChunk || caps["disk-2002"] != 2*testChunk {
			t.Fatalf("job disks after the report: %+v", got.Disks)
		}
		vmDisks, _ := h.Cat.VMDisks(t.Context(), j.VM.ContextID)
		for _, d := range vmDisks {
			if d.DiskID == "disk-2002" && d.JobID != j.ID {
				t.Fatalf("the new disk's job_id is %q, want the job that found it", d.JobID)
			}
		}
		if _, code, e := a.openSession(j.ID, "disk-2000", api.OpenSessionRequest{Type: "full", CapacityBytes: 2 << 40, ChunkSize: testChunk}); code != http.StatusBadRequest || e.Field != "capacity_bytes" {
			t.Fatalf("a 2 TiB claim on a %d-byte disk: %d %+v, want 400", 6*testChunk, code, e)
		}
		if code, e := a.call(http.MethodPut, api.Path(api.PathAgentJobDisks, j.ID), api.JobDisksReport{Disks: []api.Disk{{Key: 2000, DiskID: "../x", CapacityBytes: 1}}}, nil); code != http.StatusBadRequest {
			t.Fatalf("a malformed report: %d %+v, want 400", code, e)
		}
		for _, d := range got.Disks {
			img := make([]byte, d.CapacityBytes)
			_, _ = rand.Read(img)
			s, code, e := a.openSession(j.ID, d.DiskID, api.OpenSessionRequest{Type: "full", CapacityBytes: d.CapacityBytes, ChunkSize: testChunk})
			if code != http.StatusOK {
				t.Fatalf("open %s: %d %+v", d.DiskID, code, e)
			}
			a.uploadDisk(s.ID, img, allSlots(s.SlotCount))
			a.commit(s.ID)
		}
		if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}
		var evs api.EventList
		h.call(h.client(nil), http.MethodGet, api.PathEvents+"?vm=pgtest1", viewer, nil, &evs)
		kinds := map[string]bool{}
		for _, e := range evs.Events {
			kinds[e.Type] = true
		}
		if !kinds[api.EventDiskAdded] || !kinds[api.EventDiskResized] {
			t.Fatalf("events %+v, want disk_added and disk_resized", evs.Events)
		}
		// Another agent cannot report disks for this job.
		other := h.newAgent("a2")
		if code, _ := other.call(http.MethodPut, api.Path(api.PathAgentJobDisks, j.ID), api.JobDisksReport{Disks: disks}, nil); code != http.StatusForbidden {
			t.Fatalf("another agent's report: %d, want 403", code)
		}
	})
}

// A full backup is how a disk recovers from a damaged last index: the known-chunks rule then
// has nothing to go on, and the full uploads every chunk instead of failing.
func TestFullBackupDespiteAnUnreadableLastIndex(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		img := randomImage(t, 4*testChunk)
		a.push(twoDiskInventory(int64(len(img)), testChunk))
		operator := h.apiToken(api.RoleOperator)
		backupAll := func(typ string) string {
			var b api.Backup
			if code, e := h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1", Type: typ}, &b); code != http.StatusAccepted {
				t.Fatalf("start: %d %+v", code, e)
			}
			j := a.nextJob("5s")
			for _, d := range j.Disks {
				s, code, e := a.openSession(j.ID, d.DiskID, api.OpenSessionRequest{Type: "full", CapacityBytes: d.CapacityBytes, ChunkSize: testChunk})
				if code != http.StatusOK {
					t.Fatalf("open: %d %+v", code, e)
				}
				a.uploadDisk(s.ID, img[:d.CapacityBytes], allSlots(s.SlotCount))
				a.commit(s.ID)
			}
			if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
				t.Fatalf("complete: %d %+v", code, e)
			}
			return j.ID
		}
		first := backupAll("")
		idx := filepath.Join(h.RepoDir, "indexes", "50120000-0000-4000-8000-000000000001", "disk-2000", first+".fidx")
		if err := os.Chmod(idx, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(idx, []byte("not an index"), 0o640); err != nil {
			t.Fatal(err)
		}
		second := backupAll("full")
		if got := h.restore("50120000-0000-4000-8000-000000000001", "disk-2000", second); !bytes.Equal(got, img) {
			t.Fatal("the full backup after a damaged index does not restore the disk")
		}
	})
}

// A job's error and notes come from the agent: the hub records them without the characters a
// terminal or a page would act on, cut between characters at its limit.
func TestJobErrorAndNotesAreStoredSafe(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		img := randomImage(t, 3*testChunk)
		a, j, _ := h.fullSession(img)
		long := strings.Repeat("a", 3999) + "é" // 4001 bytes: byte 4000 starts é
		code, e := a.call(http.MethodPost, "/api/v1/agent/jobs/"+j.ID+"/complete",
			api.JobCompletion{Status: api.JobFailed, Error: "x\x1b]0;pwned\x07\x1b[2J\u202e", Notes: long}, nil)
		if code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}
		var b api.Backup
		if code, e := h.call(h.client(nil), http.MethodGet, "/api/v1/backups/"+j.ID, h.apiToken(api.RoleViewer), nil, &b); code != http.StatusOK {
			t.Fatalf("get backup: %d %+v", code, e)
		}
		if want := "x\uFFFD]0;pwned\uFFFD\uFFFD[2J\uFFFD"; b.Error != want {
			t.Errorf("error stored as %q, want %q", b.Error, want)
		}
		if b.Notes != strings.Repeat("a", 3999) {
			t.Errorf("notes of %d bytes stored as %d bytes (valid UTF-8: %v), want the 3999 before the cut character",
				len(long), len(b.Notes), utf8.ValidString(b.Notes))
		}
	})
}

// The parent of an incremental being uploaded cannot be deleted (409 naming the incremental):
// its index is what the incremental's commit builds on. Once that job ends, it can.
func TestParentOfARunningIncrementalIsKept(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		img := randomImage(t, 3*testChunk)
		a := h.newAgent("a1")
		a.push(twoDiskInventory(int64(len(img)), testChunk))
		h.call(h.client(nil), http.MethodPost, api.PathBackups, h.apiToken(api.RoleOperator), api.StartBackupRequest{VM: "pgtest1"}, nil)
		j := a.nextJob("5s")
		for _, d := range j.Disks {
			s, code, e := a.openSession(j.ID, d.DiskID, api.OpenSessionRequest{Type: "full", ChangeID: "uuid-1/1", CapacityBytes: d.CapacityBytes, ChunkSize: testChunk})
			if code != http.StatusOK {
				t.Fatalf("open: %d %+v", code, e)
			}
			a.uploadDisk(s.ID, img[:d.CapacityBytes], allSlots(s.SlotCount))
			a.commit(s.ID)
		}
		if code, e := a.complete(j.ID, api.JobSucceeded); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}
		operator := h.apiToken(api.RoleOperator)
		var b api.Backup
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b); code != http.StatusAccepted {
			t.Fatalf("start incremental: %d %+v", code, e)
		}
		j2 := a.nextJob("5s")
		p := j2.Disks[0].Parent
		if p == nil {
			t.Fatalf("incremental job without a parent: %+v", j2.Disks[0])
		}
		if _, code, e := a.openSession(j2.ID, j2.Disks[0].DiskID, api.OpenSessionRequest{Type: api.BackupIncremental, ParentBackupID: p.BackupID,
			BaseChangeID: p.ChangeID, ChangeID: "uuid-1/2", CapacityBytes: j2.Disks[0].CapacityBytes, ChunkSize: testChunk}); code != http.StatusOK {
			t.Fatalf("open incremental: %d %+v", code, e)
		}
		code, e := h.call(h.client(nil), http.MethodDelete, "/api/v1/backups/"+j.ID, operator, nil, nil)
		if code != http.StatusConflict || !strings.Contains(e.Error, j2.ID) {
			t.Fatalf("delete the parent of a running incremental: %d %+v, want 409 naming %s", code, e, j2.ID)
		}
		if _, err := h.Cat.BackupByID(t.Context(), j.ID); err != nil {
			t.Fatalf("the refused delete removed the parent: %v", err)
		}
		if code, e := a.complete(j2.ID, api.JobFailed); code != http.StatusOK {
			t.Fatalf("fail the incremental: %d %+v", code, e)
		}
		if code, e := h.call(h.client(nil), http.MethodDelete, "/api/v1/backups/"+j.ID, operator, nil, nil); code != http.StatusNoContent && code != http.StatusOK {
			t.Fatalf("delete once the incremental ended: %d %+v", code, e)
		}
	})
}
