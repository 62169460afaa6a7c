package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/client"
	"github.com/sendense/sendense/shared/api"
)

// heldImages serves a backup of two disks and records the holds taken on it. Its first
// renewal answers 404, as for a hold that expired while the hub was out of reach.
type heldImages struct {
	mu       sync.Mutex
	n        int
	live     map[string]bool
	renewals int
	// during is called inside each download with the holds live at that moment.
	during func(diskID string, live int)
	// refuse, when set, is the answer to every hold (a hub without holds).
	refuse error
}

func (f *heldImages) Backup(_ context.Context, id string) (api.Backup, error) {
	return api.Backup{ID: id, Status: api.JobSucceeded, Disks: []api.BackupDisk{
		{DiskID: "disk-2000", CapacityBytes: 4096}, {DiskID: "disk-2001", CapacityBytes: 4096}}}, nil
}

func (f *heldImages) DownloadImage(_ context.Context, _, diskID, _ string, dst io.WriterAt, _ func(int64)) (int64, error) {
	f.mu.Lock()
	live := len(f.live)
	f.mu.Unlock()
	f.during(diskID, live)
	_, err := dst.WriteAt(bytes.Repeat([]byte(diskID[len(diskID)-1:]), 4096), 0)
	return 4096, err
}

func (f *heldImages) HoldBackup(_ context.Context, backupID string) (api.BackupHold, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		return api.BackupHold{}, f.refuse
	}
	f.n++
	id := fmt.Sprintf("br-%d", f.n)
	f.live[id] = true
	// A short life: renewed every second (minHoldRenewal).
	return api.BackupHold{ID: id, BackupID: backupID, ExpiresAt: time.Now().Add(2 * time.Second), TTLSeconds: 2}, nil
}

func (f *heldImages) RenewHold(_ context.Context, backupID, id string) (api.BackupHold, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewals++
	if f.renewals == 1 {
		delete(f.live, id)
		return api.BackupHold{}, &client.Error{Status: http.StatusNotFound, Body: api.Error{Code: "not_found", Error: "expired"}}
	}
	if !f.live[id] {
		return api.BackupHold{}, &client.Error{Status: http.StatusNotFound, Body: api.Error{Code: "not_found", Error: "unknown"}}
	}
	return api.BackupHold{ID: id, BackupID: backupID, ExpiresAt: time.Now().Add(2 * time.Second), TTLSeconds: 2}, nil
}

func (f *heldImages) EndHold(_ context.Context, _, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.live, id)
	return nil
}

func (f *heldImages) state() (taken, renewals, live int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.renewals, len(f.live)
}

// A remote restore holds its backup from before the first disk's download to after the last
// one's, renews the hold while it runs, takes it again when it expired, and ends it.
func TestRemoteRestoreHoldsItsBackup(t *testing.T) {
	f := &heldImages{live: map[string]bool{}}
	f.during = func(diskID string, live int) {
		if live != 1 {
			t.Errorf("download of %s with %d holds live, want 1", diskID, live)
		}
		if diskID != "disk-2000" {
			return
		}
		// The first download outlasts two renewals: the first finds the hold expired.
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, renewals, _ := f.state(); renewals >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Error("the hold was not renewed during a long download")
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		f.mu.Lock()
		live = len(f.live)
		f.mu.Unlock()
		if live != 1 {
			t.Errorf("after the hold expired and was renewed: %d holds live, want 1", live)
		}
	}
	var stdout, stderr bytes.Buffer
	out := filepath.Join(t.TempDir(), "out")
	if err := restoreRemote(t.Context(), &env{stdout: &stdout, stderr: &stderr}, f, "bk-1", "", "", out, ""); err != nil {
		t.Fatal(err)
	}
	taken, renewals, live := f.state()
	if taken != 2 || renewals < 2 || live != 0 {
		t.Fatalf("holds taken %d, renewals %d, live at the end %d; want 2 (one after the expiry), at least 2, 0", taken, renewals, live)
	}
	for _, d := range []string{"disk-2000", "disk-2001"} {
		b, err := os.ReadFile(filepath.Join(out, d+".raw"))
		if err != nil || !bytes.Equal(b, bytes.Repeat([]byte(d[len(d)-1:]), 4096)) {
			t.Fatalf("restored %s: %v, %d bytes", d, err, len(b))
		}
	}
}

// Against a hub that has no holds (older than the client), the remote restore goes on without
// one and says so.
func TestRemoteRestoreWithoutHolds(t *testing.T) {
	f := &heldImages{live: map[string]bool{}, during: func(string, int) {},
		refuse: &client.Error{Status: http.StatusNotFound, Body: api.Error{Code: "not_found", Error: "no such route"}}}
	var stdout, stderr bytes.Buffer
	out := filepath.Join(t.TempDir(), "out")
	if err := restoreRemote(t.Context(), &env{stdout: &stdout, stderr: &stderr}, f, "bk-1", "", "", out, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "restoring without a hold") {
		t.Fatalf("stderr %q does not say the restore runs without a hold", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(out, "disk-2001.raw")); err != nil {
		t.Fatal(err)
	}
}
