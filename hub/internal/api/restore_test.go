package api_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hubapi "github.com/sendense/sendense/hub/internal/api"
	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// backupImage runs a full backup of one disk holding img through the fake agent and returns
// the backup id.
func (h *testHub) backupImage(a *fakeAgent, operator string, img []byte) string {
	h.t.Helper()
	a.push(twoDiskInventory(int64(len(img)), testChunk))
	var b api.Backup
	if code, e := h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b); code != http.StatusAccepted {
		h.t.Fatalf("start: %d %+v", code, e)
	}
	j := a.nextJob("5s")
	for _, d := range j.Disks {
		s, code, e := a.openSession(j.ID, d.DiskID, api.OpenSessionRequest{Type: "full", CapacityBytes: d.CapacityBytes, ChunkSize: testChunk})
		if code != http.StatusOK {
			h.t.Fatalf("open: %d %+v", code, e)
		}
		data := img
		if d.DiskID != "disk-2000" {
			data = make([]byte, testChunk)
		}
		a.uploadDisk(s.ID, data, allSlots(s.SlotCount))
		a.commit(s.ID)
	}
	if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
		h.t.Fatalf("complete: %d %+v", code, e)
	}
	return j.ID
}

// startDownload starts a download of the image of disk-2000 of backup id (query: "" or
// "?repository=NAME") and returns the response once it answered 200, its body unread; the body
// is closed when the test ends.
func (h *testHub) startDownload(token, id, query string) *http.Response {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.URL+api.PathBackups+"/"+id+"/disks/disk-2000/image"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := h.client(nil).Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		h.t.Fatalf("download: %v %v", resp, err)
	}
	h.t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func (h *testHub) getImage(token, backupID, rangeHdr string) (*http.Response, []byte, error) {
	req, _ := http.NewRequest(http.MethodGet, h.URL+api.PathBackups+"/"+backupID+"/disks/disk-2000/image", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if rangeHdr != "" {
		req.Header.Set("Range", rangeHdr)
	}
	resp, err := h.client(nil).Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestRestoreImageOverHTTP(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		img := randomImage(t, 7*testChunk+4321)
		id := h.backupImage(a, operator, img)

		resp, got, err := h.getImage(viewer, id, "")
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, img) {
			t.Fatalf("full image: status %v err %v equal %v", resp.StatusCode, err, bytes.Equal(got, img))
		}
		if resp.Header.Get("ETag") == "" || resp.ContentLength != int64(len(img)) {
			t.Fatalf("headers %v", resp.Header)
		}
		for _, tc := range []struct {
			hdr       string
			off, n    int
			wantRange string
		}{
			{"bytes=0-0", 0, 1, fmt.Sprintf("bytes 0-0/%d", len(img))},
			{"bytes=100-70000", 100, 69901, fmt.Sprintf("bytes 100-70000/%d", len(img))},
			{fmt.Sprintf("bytes=%d-", testChunk-5), testChunk - 5, len(img) - (testChunk - 5), fmt.Sprintf("bytes %d-%d/%d", testChunk-5, len(img)-1, len(img))},
			{"bytes=-10", len(img) - 10, 10, fmt.Sprintf("bytes %d-%d/%d", len(img)-10, len(img)-1, len(img))},
			{fmt.Sprintf("bytes=%d-%d", testChunk, 2*testChunk-1), testChunk, testChunk, fmt.Sprintf("bytes %d-%d/%d", testChunk, 2*testChunk-1, len(img))}, // the zero slot
		} {
			resp, got, err := h.getImage(viewer, id, tc.hdr)
			if err != nil || resp.StatusCode != http.StatusPartialContent {
				t.Fatalf("%s: status %v err %v", tc.hdr, resp.StatusCode, err)
			}
			if resp.Header.Get("Content-Range") != tc.wantRange || !bytes.Equal(got, img[tc.off:tc.off+tc.n]) {
				t.Fatalf("%s: content-range %q, equal %v", tc.hdr, resp.Header.Get("Content-Range"), bytes.Equal(got, img[tc.off:tc.off+tc.n]))
			}
		}
		if resp, _, _ := h.getImage(viewer, id, fmt.Sprintf("bytes=%d-", len(img)+5)); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("range past the end: %d, want 416", resp.StatusCode)
		}
		if resp, _, _ := h.getImage("", id, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("no token: %d", resp.StatusCode)
		}
	})
}

// Reads of restore points served at once are bounded, however many a viewer asks for: over the
// bound an image download and a file listing wait, then get 429 with Retry-After and a JSON
// body, and are served once a read has ended.
func TestRestorePointReadsAreBounded(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		img := randomImage(t, 3*testChunk)
		id := h.backupImage(a, operator, img)
		h.Restores.SetServeWaitForTest(100 * time.Millisecond)
		var held []func()
		for range restore.MaxServed {
			release, err := h.Restores.Serve(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, release)
		}
		resp, body, err := h.getImage(viewer, id, "")
		var e api.Error
		if err != nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
			json.Unmarshal(body, &e) != nil || e.Code != api.CodeTooManyRequests || !strings.Contains(e.Error, "restore-point reads") {
			t.Fatalf("image over the bound: %v %v %q, want 429 with Retry-After and a JSON error", resp.StatusCode, err, body)
		}
		if code, e := h.call(h.client(nil), http.MethodGet, api.Path(api.PathBackupFiles, id, "disk-2000")+"?path=/", viewer, nil, nil); code != http.StatusTooManyRequests {
			t.Fatalf("file listing over the bound: %d %+v, want 429", code, e)
		}
		if n := metricValue(t, h.Reg, "sendense_hub_restore_reads_refused_total", "", ""); n != 2 {
			t.Fatalf("refused reads counted %v, want 2", n)
		}
		held[0]()
		held[0]() // a release called twice frees one read only
		resp, got, err := h.getImage(viewer, id, "")
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, img) {
			t.Fatalf("image once a read ended: %v %v, equal %v", resp.StatusCode, err, bytes.Equal(got, img))
		}
		if _, err := h.Restores.Serve(t.Context(), id); err != nil {
			t.Fatalf("the read freed: %v", err)
		}
		if _, err := h.Restores.Serve(t.Context(), id); !errors.Is(err, restore.ErrBusy) {
			t.Fatalf("a second read after one release: %v, want ErrBusy", err)
		}
		for _, r := range held[1:] {
			r()
		}
	})
}

// Downloads whose client stops reading are cut after Limits.ReadStall and give their places
// back: a viewer cannot hold every restore-point read the hub serves for ever.
func TestStalledReadsGiveTheirPlaceBack(t *testing.T) {
	// The stall is long enough for all the downloads to start before the first is cut, also
	// under the race detector on a loaded machine.
	h := sqliteHub(t, hubapi.Limits{ReadStall: 3 * time.Second})
	a := h.newAgent("a1")
	operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
	img := randomImage(t, 32<<20) // far more than the sockets buffer
	id := h.backupImage(a, operator, img)
	h.Restores.SetServeWaitForTest(50 * time.Millisecond)
	var stalled []*http.Response
	for range restore.MaxServed {
		stalled = append(stalled, h.startDownload(viewer, id, "")) // its body is not read
	}
	if resp, _, err := h.getImage(viewer, id, "bytes=0-99"); err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a read while %d stall: %v %v, want 429", restore.MaxServed, resp.StatusCode, err)
	}
	// Every stalled download gives its place back: all of them can be taken again.
	allFree := func() bool {
		var held []func()
		defer func() {
			for _, release := range held {
				release()
			}
		}()
		for range restore.MaxServed {
			release, err := h.Restores.Serve(t.Context(), id)
			if err != nil {
				return false
			}
			held = append(held, release)
		}
		return true
	}
	for deadline := time.Now().Add(20 * time.Second); !allFree(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled downloads still hold their places")
		}
	}
	if resp, got, err := h.getImage(viewer, id, "bytes=0-99"); err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, img[:100]) {
		t.Fatalf("a read once the stalled ones were cut: %v %v", resp.StatusCode, err)
	}
	for _, resp := range stalled { // cut short, never mistaken for a whole image
		if got, err := io.ReadAll(resp.Body); err == nil || len(got) == len(img) {
			t.Fatalf("a stalled download read %d bytes, %v; want it cut", len(got), err)
		}
	}
}

func TestRestoreOfDamagedChunkFailsLoudly(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		img := make([]byte, 6*testChunk)
		_, _ = rand.Read(img)
		id := h.backupImage(a, operator, img)
		// Flip one byte in the chunk of slot 4.
		d := chunk.Sum(img[4*testChunk : 5*testChunk]).String()
		p := filepath.Join(h.RepoDir, "chunks", d[:2], d[2:4], d)
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		_, _ = f.ReadAt(b[:], 100)
		b[0] ^= 0xff
		_, _ = f.WriteAt(b[:], 100)
		f.Close()

		resp, got, err := h.getImage(operator, id, "")
		if err == nil {
			t.Fatalf("a damaged image was served whole: status %d, %d bytes", resp.StatusCode, len(got))
		}
		if len(got) > 4*testChunk || !bytes.Equal(got, img[:len(got)]) {
			t.Fatalf("wrong bytes before the damage: %d bytes", len(got))
		}
		// A range that avoids the damaged slot still restores.
		resp, got, err = h.getImage(operator, id, fmt.Sprintf("bytes=0-%d", 4*testChunk-1))
		if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, img[:4*testChunk]) {
			t.Fatalf("undamaged range: %v %v", resp.StatusCode, err)
		}
		if v := metricValue(t, h.Reg, "sendense_hub_restore_failures_total", "", ""); v < 1 {
			t.Fatalf("restore failures metric %v", v)
		}
		// The damaged chunk is quarantined and recorded: no backup reuses it any more.
		if has, err := h.Repo.HasChunk(t.Context(), chunk.Sum(img[4*testChunk:5*testChunk])); has || err != nil {
			t.Fatalf("the damaged chunk still counts as present: %v %v", has, err)
		}
		evs := h.events(operator, "?type=chunk_quarantined")
		if len(evs.Events) != 1 || evs.Events[0].Details["digest"] != d || evs.Events[0].Details["found_by"] != "restore" ||
			evs.Events[0].Details["backup_id"] != id || evs.Events[0].Details["disk_id"] != "disk-2000" || evs.Events[0].VM != "pgtest1" {
			t.Fatalf("quarantine events: %+v", evs.Events)
		}
		// A read of the quarantined chunk fails as missing, and records nothing more.
		if _, _, err := h.getImage(operator, id, ""); err == nil {
			t.Fatal("an image with a quarantined chunk was served whole")
		}
		if n := len(h.events(operator, "?type=chunk_quarantined").Events); n != 1 {
			t.Fatalf("%d quarantine events after a second read, want 1", n)
		}
		// The next backup of the same data uploads the chunk again, and the first restores whole.
		h.backupImage(a, operator, img)
		if resp, got, err := h.getImage(operator, id, ""); err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, img) {
			t.Fatalf("restore after the chunk was uploaded again: %v", err)
		}
	})
}

// A download holds its backup: while the image is being read, deleting the backup is refused
// with 409 naming the read, and the download completes byte for byte; once it ended the
// backup can be deleted, after which a download is 404. A reader that died holds the backup
// only until its record expires.
func TestDownloadHoldsItsBackup(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		img := randomImage(t, 512*testChunk) // 32 MiB: more than loopback buffers hold
		id := h.backupImage(a, operator, img)

		resp := h.startDownload(viewer, id, "")
		got := make([]byte, len(img))
		if _, err := io.ReadFull(resp.Body, got[:1<<20]); err != nil {
			t.Fatal(err)
		}
		code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+id, operator, nil, nil)
		if code != http.StatusConflict || !strings.Contains(e.Error, "being read") {
			t.Fatalf("DELETE during the download: %d %+v, want 409 naming the read", code, e)
		}
		if _, err := io.ReadFull(resp.Body, got[1<<20:]); err != nil || !bytes.Equal(got, img) {
			t.Fatalf("the download after the refused DELETE: %v, equal %v", err, bytes.Equal(got, img))
		}
		_ = resp.Body.Close()
		deadline := time.Now().Add(10 * time.Second) // the handler releases its hold once it returned
		for {
			code, e = h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+id, operator, nil, nil)
			if code == http.StatusNoContent {
				break
			}
			if code != http.StatusConflict || time.Now().After(deadline) {
				t.Fatalf("DELETE after the download: %d %+v", code, e)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if resp, _, err := h.getImage(viewer, id, ""); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("download of the deleted backup: %v %v, want 404", resp.StatusCode, err)
		}

		// A reader that died stops renewing: its record holds the backup until it expires.
		id = h.backupImage(a, operator, randomImage(t, 3*testChunk))
		// Reads begun at once on backups nobody reads yet, the same one or two neighbours, each
		// get their record (on MariaDB, shared row locks and the gap locks of the removal of
		// expired reads made them deadlock).
		other := h.backupImage(a, operator, randomImage(t, 2*testChunk))
		begun := make(chan error, 12)
		for i := range cap(begun) {
			go func() {
				_, err := h.Cat.BeginBackupRead(t.Context(), []string{id, other}[i%3/2], time.Minute)
				begun <- err
			}()
		}
		for range cap(begun) {
			if err := <-begun; err != nil {
				t.Fatalf("reads begun at once: %v", err)
			}
		}
		if _, err := h.Cat.BeginBackupRead(t.Context(), id, time.Minute); err != nil {
			t.Fatal(err)
		}
		if code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+id, operator, nil, nil); code != http.StatusConflict {
			t.Fatalf("DELETE while a read is recorded: %d %+v, want 409", code, e)
		}
		h.Clock.Add(2 * time.Minute)
		if code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+id, operator, nil, nil); code != http.StatusNoContent {
			t.Fatalf("DELETE once the read expired: %d %+v, want 204", code, e)
		}
	})
}

// A client reading a backup in several requests (a restore of each of its disks) holds it in
// between: deletion is refused while the hold is renewed, and allowed once it ends or expires.
func TestHoldKeepsABackupBetweenRequests(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)
		id := h.backupImage(a, operator, randomImage(t, 2*testChunk))
		other := h.backupImage(a, operator, randomImage(t, 3*testChunk))
		cl := h.client(nil)
		deleteBackup := func(b string) int {
			code, _ := h.call(cl, http.MethodDelete, api.Path(api.PathBackup, b), operator, nil, nil)
			return code
		}

		if code, _ := h.call(cl, http.MethodPost, api.Path(api.PathBackupHolds, id), "", nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("hold without a token: %d, want 401", code)
		}
		if code, e := h.call(cl, http.MethodPost, api.Path(api.PathBackupHolds, "bk-nope"), viewer, nil, nil); code != http.StatusNotFound {
			t.Fatalf("hold of an unknown backup: %d %+v, want 404", code, e)
		}
		var hold api.BackupHold
		if code, e := h.call(cl, http.MethodPost, api.Path(api.PathBackupHolds, id), viewer, nil, &hold); code != http.StatusCreated {
			t.Fatalf("hold: %d %+v, want 201", code, e)
		}
		if hold.ID == "" || hold.BackupID != id || !hold.ExpiresAt.After(h.Clock.Now()) || hold.TTLSeconds != 120 {
			t.Fatalf("hold = %+v: want an id, backup %s, an expiry after %v and 120 s", hold, id, h.Clock.Now())
		}
		// The refusal names the hold without its id, which is what renews and ends it.
		if code, e := h.call(cl, http.MethodDelete, api.Path(api.PathBackup, id), operator, nil, nil); code != http.StatusConflict ||
			!strings.Contains(e.Error, "a client hold") || strings.Contains(e.Error, hold.ID) {
			t.Fatalf("DELETE of a held backup: %d %q, want 409 naming a client hold without its id", code, e.Error)
		}
		// The hub's own records of reads are not holds: no client renews or ends them.
		readID, err := h.Cat.BeginBackupRead(t.Context(), other, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{http.MethodPut, http.MethodDelete} {
			if code, _ := h.call(cl, m, api.Path(api.PathBackupHold, other, readID), operator, nil, nil); code != http.StatusNotFound {
				t.Fatalf("%s of the hub's read %s as a hold: %d, want 404", m, readID, code)
			}
		}
		if code := deleteBackup(other); code != http.StatusConflict {
			t.Fatalf("DELETE of a backup the hub reads, after the refused calls: %d, want 409", code)
		}
		if err := h.Cat.EndBackupRead(t.Context(), readID); err != nil {
			t.Fatal(err)
		}
		// A hold is its holder's: another client, an operator included, knowing its id neither
		// renews nor ends it.
		for _, tok := range []string{h.apiToken(api.RoleViewer), operator} {
			for _, m := range []string{http.MethodPut, http.MethodDelete} {
				if code, _ := h.call(cl, m, api.Path(api.PathBackupHold, id, hold.ID), tok, nil, nil); code != http.StatusNotFound {
					t.Fatalf("%s of the hold by another token: %d, want 404", m, code)
				}
			}
		}

		// Renewed before it expires, the hold outlives its first expiry.
		h.Clock.Add(90 * time.Second)
		var renewed api.BackupHold
		if code, e := h.call(cl, http.MethodPut, api.Path(api.PathBackupHold, id, hold.ID), viewer, nil, &renewed); code != http.StatusOK {
			t.Fatalf("renew: %d %+v, want 200", code, e)
		}
		if !renewed.ExpiresAt.After(hold.ExpiresAt) {
			t.Fatalf("renewed expiry %v, not after the first %v", renewed.ExpiresAt, hold.ExpiresAt)
		}
		h.Clock.Add(90 * time.Second)
		if code := deleteBackup(id); code != http.StatusConflict {
			t.Fatalf("DELETE of a backup held by a renewed hold past its first expiry: %d, want 409", code)
		}

		// A hold is named under its own backup only; a bad id is refused before any lookup.
		if code, _ := h.call(cl, http.MethodPut, api.Path(api.PathBackupHold, other, hold.ID), viewer, nil, nil); code != http.StatusNotFound {
			t.Fatalf("renew under another backup: %d, want 404", code)
		}
		if code, _ := h.call(cl, http.MethodDelete, api.Path(api.PathBackupHold, other, hold.ID), viewer, nil, nil); code != http.StatusNotFound {
			t.Fatalf("end under another backup: %d, want 404", code)
		}
		if code, _ := h.call(cl, http.MethodPut, api.Path(api.PathBackupHold, id, strings.Repeat("x", 65)), viewer, nil, nil); code != http.StatusBadRequest {
			t.Fatalf("renew of a 65-character hold id: %d, want 400", code)
		}
		if code := deleteBackup(id); code != http.StatusConflict {
			t.Fatalf("DELETE after the refused calls: %d, want 409 (the hold stands)", code)
		}

		// The audit names each call on the hold without its id.
		var events json.RawMessage
		if code, e := h.call(cl, http.MethodGet, api.PathEvents+"?type=audit&limit=1000", operator, nil, &events); code != http.StatusOK {
			t.Fatalf("audit events: %d %+v", code, e)
		}
		if !strings.Contains(string(events), hold.ID[:11]+"…") || strings.Contains(string(events), hold.ID) {
			t.Fatalf("the audit of the hold's renewal names it by %q, or by its whole id", hold.ID[:11]+"…")
		}

		// Ended, it frees the backup at once.
		if code, e := h.call(cl, http.MethodDelete, api.Path(api.PathBackupHold, id, hold.ID), viewer, nil, nil); code != http.StatusNoContent {
			t.Fatalf("end: %d %+v, want 204", code, e)
		}
		if code, _ := h.call(cl, http.MethodDelete, api.Path(api.PathBackupHold, id, hold.ID), viewer, nil, nil); code != http.StatusNotFound {
			t.Fatalf("end again: %d, want 404", code)
		}
		if code := deleteBackup(id); code != http.StatusNoContent {
			t.Fatalf("DELETE once the hold ended: %d, want 204", code)
		}
		if code, _ := h.call(cl, http.MethodPost, api.Path(api.PathBackupHolds, id), viewer, nil, nil); code != http.StatusNotFound {
			t.Fatalf("hold of the deleted backup: %d, want 404", code)
		}

		// However often renewed, a hold ends MaxHoldLife after it began.
		var long api.BackupHold
		if code, e := h.call(cl, http.MethodPost, api.Path(api.PathBackupHolds, other), viewer, nil, &long); code != http.StatusCreated {
			t.Fatalf("hold: %d %+v", code, e)
		}
		for start := h.Clock.Now(); ; {
			h.Clock.Add(110 * time.Second)
			code, _ := h.call(cl, http.MethodPut, api.Path(api.PathBackupHold, other, long.ID), viewer, nil, nil)
			if code == http.StatusOK {
				if h.Clock.Now().Sub(start) > catalog.MaxHoldLife {
					t.Fatalf("hold renewed %v after it began", h.Clock.Now().Sub(start))
				}
				continue
			}
			if code != http.StatusNotFound || h.Clock.Now().Sub(start) < catalog.MaxHoldLife {
				t.Fatalf("renewal %v after the hold began: %d, want 200 until %v, then 404", h.Clock.Now().Sub(start), code, catalog.MaxHoldLife)
			}
			break
		}
		h.Clock.Add(2 * time.Minute) // its last renewal's lifetime
		// A backup takes so many holds at once from one client, and from all, no more.
		holders := []string{viewer}
		for len(holders) < catalog.MaxHoldsPerBackup/catalog.MaxHoldsPerHolder {
			holders = append(holders, h.apiToken(api.RoleViewer))
		}
		for _, tok := range holders {
			for i := range catalog.MaxHoldsPerHolder + 1 {
				code, e := h.call(cl, http.MethodPost, api.Path(api.PathBackupHolds, other), tok, nil, nil)
				if want := map[bool]int{true: http.StatusConflict, false: http.StatusCreated}[i == catalog.MaxHoldsPerHolder]; code != want {
					t.Fatalf("hold %d of one client: %d %+v, want %d", i+1, code, e, want)
				}
			}
		}
		if code, e := h.call(cl, http.MethodPost, api.Path(api.PathBackupHolds, other), h.apiToken(api.RoleViewer), nil, nil); code != http.StatusConflict {
			t.Fatalf("hold %d of the backup: %d %+v, want 409", catalog.MaxHoldsPerBackup+1, code, e)
		}
		h.Clock.Add(2*time.Minute + time.Second)

		// Not renewed, it expires: its client died.
		if code, e := h.call(cl, http.MethodPost, api.Path(api.PathBackupHolds, other), viewer, nil, &hold); code != http.StatusCreated {
			t.Fatalf("hold: %d %+v", code, e)
		}
		h.Clock.Add(2*time.Minute + time.Second)
		if code, _ := h.call(cl, http.MethodPut, api.Path(api.PathBackupHold, other, hold.ID), viewer, nil, nil); code != http.StatusNotFound {
			t.Fatalf("renew of an expired hold: %d, want 404", code)
		}
		if code := deleteBackup(other); code != http.StatusNoContent {
			t.Fatalf("DELETE once the hold expired: %d, want 204", code)
		}
	})
}
