package repository

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
)

func testRecord(backupID string) *BackupRecord {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	return &BackupRecord{
		Version: BackupRecordVersion, BackupID: backupID,
		Agent:  RecordAgent{ID: "agent-1", Name: "appliance"},
		Source: RecordSource{Name: "lab", URL: "https://vc/sdk", InstanceUUID: "vc-1"},
		VM:     RecordVM{ContextID: "ctx-secretvm-1", InstanceUUID: "5012-aaaa", Name: "secretvm", NumCPU: 2},
		Type:   api.BackupFull, RequestedType: "auto", CreatedAt: t0, FinishedAt: t0.Add(time.Minute), VMConfigDigest: "abcd",
		Disks: []RecordDisk{{DiskID: "disk-2000", Type: api.BackupFull, CapacityBytes: 8 << 20, ChunkSize: 4 << 20, SlotsTotal: 2,
			IndexPath: "indexes/5012-aaaa/disk-2000/" + backupID + ".fidx", IndexDigest: "ef01", DeviceKey: 2000, Label: "Hard disk 1"}},
	}
}

// A backup record is stored durably under its key, sealed in an encrypted repository (the VM's
// name is not readable in the file), read back as written, replaced when rewritten, and
// removed; a damaged record, or one copied under another backup's key, is reported by the walk
// without hiding the others; indexes walks do not see records.
func TestBackupRecords(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[encrypted], func(t *testing.T) {
			ctx := t.Context()
			var r *Repository
			if encrypted {
				r, _ = newEncryptedRepo(t, 0, "pw")
			} else {
				r = newRepo(t, 0)
			}
			rec := testRecord("bk-1")
			if err := r.WriteBackupRecord(ctx, rec); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(root(r), filepath.FromSlash(backupRecordKey("5012-aaaa", "bk-1")))
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("record file: %v", err)
			}
			if got := bytes.Contains(raw, []byte("secretvm")); got == encrypted {
				t.Fatalf("the VM name readable in the file: %v (encrypted %v)", got, encrypted)
			}
			got, err := r.ReadBackupRecord(ctx, "5012-aaaa", "bk-1")
			if err != nil || !reflect.DeepEqual(got, rec) {
				t.Fatalf("ReadBackupRecord = %+v, %v", got, err)
			}
			rec.Protected = true
			if err := r.WriteBackupRecord(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if got, err := r.ReadBackupRecord(ctx, "5012-aaaa", "bk-1"); err != nil || !got.Protected {
				t.Fatalf("after rewriting: %+v, %v", got, err)
			}
			bad := testRecord("bk-bad")
			bad.Disks = nil
			if err := r.WriteBackupRecord(ctx, bad); err == nil {
				t.Fatal("a record without disks was written")
			}

			if err := r.WriteBackupRecord(ctx, testRecord("bk-2")); err != nil {
				t.Fatal(err)
			}
			// bk-2's record copied over bk-3's key; garbage under bk-4's.
			b2, _ := os.ReadFile(filepath.Join(root(r), filepath.FromSlash(backupRecordKey("5012-aaaa", "bk-2"))))
			for k, b := range map[string][]byte{"bk-3": b2, "bk-4": []byte("{not json")} {
				if err := os.WriteFile(filepath.Join(root(r), filepath.FromSlash(backupRecordKey("5012-aaaa", k))), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var good, damaged []string
			err = r.WalkBackupRecords(ctx, func(b *BackupRecord) error {
				good = append(good, b.BackupID)
				return nil
			}, func(key string, err error) error {
				damaged = append(damaged, key)
				return nil
			})
			if err != nil || strings.Join(good, ",") != "bk-1,bk-2" || len(damaged) != 2 {
				t.Fatalf("walk: good %v, damaged %v, %v", good, damaged, err)
			}
			n := 0
			if err := r.WalkIndexes(ctx, func(IndexRef) error { n++; return nil }); err != nil || n != 0 {
				t.Fatalf("the index walk saw %d entries (%v)", n, err)
			}
			for range 2 {
				if err := r.RemoveBackupRecord(ctx, "5012-aaaa", "bk-1"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := r.ReadBackupRecord(ctx, "5012-aaaa", "bk-1"); !errors.Is(err, ErrBackupRecordNotFound) {
				t.Fatalf("after remove: %v", err)
			}
			if err := r.RemoveBackupRecord(ctx, "../x", "bk-1"); !errors.Is(err, ErrInvalidRef) {
				t.Fatalf("bad uuid: %v", err)
			}
		})
	}
}
