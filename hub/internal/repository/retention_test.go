package repository_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"

	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/hub/internal/repository/store/s3/s3test"
	"github.com/sendense/sendense/shared/chunk"
)

// RetainBackup on an Object Lock repository: every object of a backup gets the date, a chunk
// shared with a newer backup keeps the later date, the backup's date is that of its index, and
// an unreferenced chunk cannot be removed (by garbage collection) before its date, only after.
func TestRetainBackupExtendsSharedChunks(t *testing.T) {
	ctx := t.Context()
	st, err := s3.Open(ctx, s3test.LockedConfig(t, s3.LockCompliance), nil)
	if err != nil {
		t.Fatal(err)
	}
	const cs = 256 << 10
	r, err := repository.Init(ctx, st, cs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if r.ObjectLock() != s3.LockCompliance {
		t.Fatalf("ObjectLock() = %q", r.ObjectLock())
	}
	var ds [3]chunk.Digest
	for i := range ds {
		plain := bytes.Repeat([]byte{byte('a' + i), 1, 2, 3}, cs/4)
		ds[i] = chunk.Sum(plain)
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.PutChunk(ctx, ds[i], blob); err != nil {
			t.Fatal(err)
		}
	}
	const vm = "4213f1a2-0000-0000-0000-000000000001"
	write := func(backup string, a, b chunk.Digest) {
		idx, err := fidx.New(2*cs, cs)
		if err != nil {
			t.Fatal(err)
		}
		idx.Digests[0], idx.Digests[1] = a, b
		if _, err := r.WriteIndex(ctx, repository.IndexRef{VMUUID: vm, DiskID: "disk-2000", BackupID: backup}, idx); err != nil {
			t.Fatal(err)
		}
	}
	write("bk-old", ds[0], ds[1])
	write("bk-new", ds[1], ds[2])
	// Dates in real time, which the S3 server goes by: the checks before each date
	// must land before it, on a loaded machine too.
	now := time.Now()
	oldUntil, newUntil := now.Add(8*time.Second), now.Add(16*time.Second)
	// The newer backup first: the older one's earlier date must not shorten the shared chunk's.
	got, err := r.RetainBackup(ctx, vm, "bk-new", []string{"disk-2000"}, newUntil)
	if err != nil || got.Chunks != 2 || got.Objects != 4 {
		t.Fatalf("RetainBackup(bk-new) = %+v, %v; want 2 chunks, 4 objects (with the descriptor)", got, err)
	}
	if _, err := r.RetainBackup(ctx, vm, "bk-old", []string{"disk-2000"}, oldUntil); err != nil {
		t.Fatal(err)
	}
	dateOf := func(d chunk.Digest) time.Time {
		h := d.String()
		u, err := st.RetainedUntil(ctx, "chunks/"+h[0:2]+"/"+h[2:4]+"/"+h)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	second := func(t time.Time) time.Time { return t.Add(time.Second - 1).Truncate(time.Second) }
	for i, want := range []time.Time{oldUntil, newUntil, newUntil} {
		if got := dateOf(ds[i]); !got.Equal(second(want)) {
			t.Errorf("chunk %d retained until %v, want %v", i, got, second(want))
		}
	}
	// A backup is retained whole only when every disk's index is: one without a date (a
	// retention cut short, here a disk never retained) makes it not.
	if u, err := r.BackupRetainedAllUntil(ctx, vm, "bk-new", []string{"disk-2000"}); err != nil || !u.Equal(second(newUntil)) {
		t.Errorf("BackupRetainedAllUntil(bk-new) = %v, %v; want %v", u, err, second(newUntil))
	}
	if u, err := r.BackupRetainedAllUntil(ctx, vm, "bk-new", []string{"disk-2000", "disk-2001"}); err != nil || !u.IsZero() {
		t.Errorf("BackupRetainedAllUntil(bk-new with a disk not retained) = %v, %v; want zero", u, err)
	}
	// The descriptor, which reading any of them needs, is retained with them.
	if u, err := st.RetainedUntil(ctx, "repo.json"); err != nil || !u.Equal(second(newUntil)) {
		t.Errorf("repo.json retained until %v, %v; want %v", u, err, second(newUntil))
	}
	if u, err := r.BackupRetainedUntil(ctx, vm, "bk-old", []string{"disk-2000"}); err != nil || !u.Equal(second(oldUntil)) {
		t.Errorf("BackupRetainedUntil(bk-old) = %v, %v; want %v", u, err, second(oldUntil))
	}

	// bk-old is gone from the catalog; its index and its own chunk stay until the date.
	if err := r.RemoveIndex(ctx, repository.IndexRef{VMUUID: vm, DiskID: "disk-2000", BackupID: "bk-old"}); !errors.Is(err, repository.ErrRetained) {
		t.Fatalf("RemoveIndex before the date: %v, want ErrRetained", err)
	}
	cutoff := time.Now().Add(time.Hour)
	if _, _, err := r.RemoveChunkIfOlder(ctx, r.ChunkName(ds[0]), cutoff); !errors.Is(err, repository.ErrRetained) {
		t.Fatalf("RemoveChunkIfOlder before the date: %v, want ErrRetained", err)
	}
	time.Sleep(time.Until(second(oldUntil)) + 1100*time.Millisecond)
	if removed, _, err := r.RemoveChunkIfOlder(ctx, r.ChunkName(ds[0]), cutoff); err != nil || !removed {
		t.Fatalf("RemoveChunkIfOlder after the date: %v, %v", removed, err)
	}
	// The shared chunk keeps the newer backup's date.
	if _, _, err := r.RemoveChunkIfOlder(ctx, r.ChunkName(ds[1]), cutoff); !errors.Is(err, store.ErrRetained) {
		t.Fatalf("RemoveChunkIfOlder of the shared chunk: %v, want ErrRetained", err)
	}
	if err := r.RemoveIndex(ctx, repository.IndexRef{VMUUID: vm, DiskID: "disk-2000", BackupID: "bk-old"}); err != nil {
		t.Fatalf("RemoveIndex after the date: %v", err)
	}
}

// repo create's object lock settings: checked field by field, recorded, and in force when
// another registry opens the repository from the catalog.
func TestRegistryS3ObjectLockSettings(t *testing.T) {
	locked := s3test.LockedConfig(t, s3.LockGovernance)
	plain := s3test.Config(t)
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		g := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = g.Close() })
		creds := filepath.Join(t.TempDir(), "creds")
		if err := os.WriteFile(creds, []byte(locked.AccessKey+"\n"+locked.SecretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		set := func(cfg s3.Config, mode string, days int) api.S3Settings {
			return api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: cfg.Bucket, S3Prefix: cfg.Prefix + "/" + filepath.Base(t.Name()),
				S3CredentialsFile: creds, S3ObjectLock: mode, S3LockDays: days}
		}
		for _, tc := range []struct {
			field string
			set   api.S3Settings
		}{
			{"s3_object_lock", set(locked, "forever", 7)},
			{"s3_lock_days", set(locked, s3.LockGovernance, 0)},
			{"s3_lock_days", set(locked, s3.LockGovernance, 4000)},
			{"s3_lock_days", set(locked, "", 7)},
			{"s3_object_lock", set(plain, s3.LockCompliance, 7)}, // a bucket without Object Lock
		} {
			_, err := g.CreateS3(ctx, "bad", tc.set, 0, "")
			var fe *api.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("CreateS3(%s %d in %s): %v, want a field error on %s", tc.set.S3ObjectLock, tc.set.S3LockDays, tc.set.S3Bucket, err, tc.field)
			}
		}
		rec, err := g.CreateS3(ctx, "vault", set(locked, s3.LockGovernance, 7), 256<<10, "")
		if err != nil {
			t.Fatal(err)
		}
		if rec.S3ObjectLock != s3.LockGovernance || rec.S3LockDays != 7 {
			t.Fatalf("recorded %q %d", rec.S3ObjectLock, rec.S3LockDays)
		}
		other := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = other.Close() })
		r, err := other.Open(ctx, rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.ObjectLock() != s3.LockGovernance || r.LockPeriod() != 7*24*time.Hour {
			t.Fatalf("opened: lock %q period %v", r.ObjectLock(), r.LockPeriod())
		}
	})
}

// In an encrypted repository with Object Lock the key slots are retained with the backups:
// removed, they would leave every retained chunk unreadable.
func TestRetainBackupKeepsTheKeySlots(t *testing.T) {
	ctx := t.Context()
	st, err := s3.Open(ctx, s3test.LockedConfig(t, s3.LockCompliance), nil)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("a password for the slot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const cs = 64 << 10
	r, err := repository.Init(ctx, st, cs, repository.Encrypt(), repository.WithPasswordFile(pw),
		repository.WithKDFCost(repository.KDF{Name: "argon2id", Time: 1, MemoryKiB: 64, Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	plain := bytes.Repeat([]byte("k"), cs)
	d := chunk.Sum(plain)
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutChunk(ctx, d, blob); err != nil {
		t.Fatal(err)
	}
	idx, err := fidx.New(cs, cs)
	if err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = d
	const vm = "4213f1a2-0000-0000-0000-000000000002"
	if _, err := r.WriteIndex(ctx, repository.IndexRef{VMUUID: vm, DiskID: "disk-2000", BackupID: "bk-1"}, idx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RetainBackup(ctx, vm, "bk-1", []string{"disk-2000"}, time.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	var slots []string
	if err := st.List(ctx, "keys/", func(info store.Info) error { slots = append(slots, info.Key); return nil }); err != nil || len(slots) == 0 {
		t.Fatalf("key slots %v, %v", slots, err)
	}
	for _, k := range slots {
		if err := st.Remove(ctx, k); !errors.Is(err, store.ErrRetained) {
			t.Fatalf("removal of key slot %s: %v, want ErrRetained", k, err)
		}
	}
}
