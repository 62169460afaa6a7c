package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/copies"
	"github.com/sendense/sendense/hub/internal/harden"
	"github.com/sendense/sendense/hub/internal/immutable"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/hub/internal/repository/store/s3/s3test"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// An S3 repository with Object Lock (compliance): a backup inside its retention cannot be
// deleted (409 naming the lock, and every object of it is still in the bucket); a chunk it
// shares with a newer backup carries the newer backup's later date; once its date has passed,
// prune removes it (retention no longer keeps it) and garbage collection frees its own chunks
// and nothing the newer backup uses.
func TestObjectLockDeleteRetainedPruneExpired(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		ctx := t.Context()
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		st, err := s3.Open(ctx, h.S3, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		dateOf := func(hex string) time.Time {
			u, err := st.RetainedUntil(ctx, "chunks/"+hex[0:2]+"/"+hex[2:4]+"/"+hex)
			if err != nil {
				t.Fatalf("chunk %s: %v", hex, err)
			}
			return u
		}
		shared := bytes.Repeat([]byte{7}, testChunk)
		image := func() []byte {
			img := make([]byte, 3*testChunk)
			_, _ = rand.Read(img[:2*testChunk])
			copy(img[2*testChunk:], shared)
			return img
		}

		// The old backup was taken a day ago, less some seconds, by the hub's clock: its lock
		// (one day) ends that many seconds from now, real time, which is what the S3 server
		// and the store go by. Everything up to the sleep below must happen before then, on
		// a loaded machine too. The new one is taken now.
		const margin = 15 * time.Second
		realNow := time.Now()
		h.Clock.t = realNow.Add(-24*time.Hour + margin)
		oldImg := image()
		oldID := h.backupImage(a, operator, oldImg)
		h.Clock.t = realNow
		newImg := image()
		newID := h.backupImage(a, operator, newImg)
		// A touch holds a chunk for two days from when it ran, some seconds after realNow on
		// a loaded machine.
		touchedBy := time.Now()

		oldUntil := realNow.Add(margin)
		newUntil := realNow.Add(24 * time.Hour)
		for d := range chunksOf(oldImg) {
			got := dateOf(d)
			want, latest := oldUntil, oldUntil
			if d == sharedDigest(shared) {
				// The newer backup's date, or later: a backup that reuses a chunk also holds it
				// for two days from then (a touch under Object Lock).
				want, latest = newUntil, touchedBy.Add(48*time.Hour)
			}
			if got.Before(want.Add(-time.Second)) || got.After(latest.Add(2*time.Second)) {
				t.Errorf("chunk %s of the old backup retained until %v, want %v (at most %v)", d[:12], got, want, latest)
			}
		}

		code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+oldID, operator, nil, nil)
		if code != http.StatusConflict || !strings.Contains(e.Error, "object lock") || !strings.Contains(e.Error, "compliance") {
			t.Fatalf("DELETE of a retained backup: %d %+v, want 409 naming the object lock", code, e)
		}
		if _, err := h.Repo.ReadIndex(ctx, repository.IndexRef{VMUUID: vmUUIDOf(t, h, oldID), DiskID: "disk-2000", BackupID: oldID}); err != nil {
			t.Fatalf("index of the refused deletion: %v", err)
		}
		for d := range chunksOf(oldImg) {
			if _, err := st.Stat(ctx, "chunks/"+d[0:2]+"/"+d[2:4]+"/"+d); err != nil {
				t.Fatalf("chunk of the refused deletion: %v", err)
			}
		}
		// Nobody with the hub's credentials removes it behind the hub's back either.
		for d := range chunksOf(oldImg) {
			key := "chunks/" + d[0:2] + "/" + d[2:4] + "/" + d
			if err := st.Remove(ctx, key); !errors.Is(err, store.ErrRetained) {
				t.Fatalf("direct removal of retained chunk %s: %v", d[:12], err)
			}
			if _, err := st.Stat(ctx, key); err != nil {
				t.Fatalf("chunk %s after a refused removal: %v", d[:12], err)
			}
		}

		ps := h.policies()
		if _, err := ps.Create(ctx, api.Policy{Name: "last", Enabled: true, Schedule: "@daily", Retention: api.Retention{KeepLast: 1}}); err != nil {
			t.Fatal(err)
		}
		rep, err := ps.Prune(ctx, policy.PruneOptions{})
		if err != nil || rep.Removed != 0 {
			t.Fatalf("prune inside the lock: removed %d, %v", rep.Removed, err)
		}
		var said bool
		for _, d := range rep.Decisions {
			if d.BackupID == oldID && d.Keep && strings.Contains(strings.Join(d.Reasons, " "), "object lock") {
				said = true
			}
		}
		if !said {
			t.Fatalf("prune inside the lock does not say why it kept %s: %+v", oldID, rep.Decisions)
		}

		time.Sleep(time.Until(oldUntil) + 1500*time.Millisecond)
		h.Clock.t = time.Now()
		rep, err = ps.Prune(ctx, policy.PruneOptions{})
		if err != nil || rep.Removed != 1 || len(rep.Errors) != 0 {
			t.Fatalf("prune after the lock: removed %d, errors %v, %v", rep.Removed, rep.Errors, err)
		}
		reps, err := h.collector().Run(ctx, "", 0, false)
		if err != nil || len(reps) != 1 {
			t.Fatalf("gc: %+v, %v", reps, err)
		}
		// The old backup's own two chunks are freed; the shared one and the new ones stay.
		if reps[0].FreedChunks != 2 || reps[0].Retained != 0 {
			t.Fatalf("gc freed %d chunks (retained %d), want 2", reps[0].FreedChunks, reps[0].Retained)
		}
		for d := range chunksOf(oldImg) {
			_, err := st.Stat(ctx, "chunks/"+d[0:2]+"/"+d[2:4]+"/"+d)
			if d == sharedDigest(shared) {
				if err != nil {
					t.Fatalf("the shared chunk: %v", err)
				}
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("chunk %s of the pruned backup after gc: %v", d[:12], err)
			}
		}
		for d := range chunksOf(newImg) {
			if _, err := st.Stat(ctx, "chunks/"+d[0:2]+"/"+d[2:4]+"/"+d); err != nil {
				t.Fatalf("chunk of the kept backup after gc: %v", err)
			}
		}
		// Protected: 409 naming the protection, and protecting extended the lock from now (13
		// hours later, when less than half the day's lock is left).
		h.Clock.t = time.Now().Add(13 * time.Hour)
		if code, e := h.call(h.client(nil), http.MethodPost, api.Path(api.PathBackupProtect, newID), operator, nil, nil); code != http.StatusOK {
			t.Fatalf("protect: %d %+v", code, e)
		}
		newRef := repository.IndexRef{VMUUID: vmUUIDOf(t, h, newID), DiskID: "disk-2000", BackupID: newID}
		if u, err := h.Repo.BackupRetainedUntil(ctx, newRef.VMUUID, newID, []string{"disk-2000"}); err != nil || u.Before(h.Clock.t.Add(24*time.Hour)) {
			t.Fatalf("protected backup retained until %v (%v), want at least %v", u, err, h.Clock.t.Add(24*time.Hour))
		}
		code, e = h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+newID, operator, nil, nil)
		if code != http.StatusConflict || !strings.Contains(e.Error, "protected") {
			t.Fatalf("DELETE of a protected backup: %d %+v, want 409 naming the protection", code, e)
		}
		if _, err := h.Repo.ReadIndex(ctx, newRef); err != nil {
			t.Fatalf("index of the protected backup: %v", err)
		}
		resp, img, err := h.getImage(operator, newID, "")
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(img, newImg) {
			t.Fatalf("restore of the kept backup: %v %v, identical %v", resp.Status, err, bytes.Equal(img, newImg))
		}
	}, hubOptions{s3Lock: s3.LockCompliance})
}

func sharedDigest(p []byte) string {
	for d := range chunksOf(p) {
		return d
	}
	return ""
}

func vmUUIDOf(t *testing.T, h *testHub, backupID string) string {
	t.Helper()
	row, err := h.Cat.BackupByID(t.Context(), backupID)
	if err != nil {
		t.Fatal(err)
	}
	return row.InstanceUUID
}

// A hardened local repository: once the root helper made a backup immutable, DELETE answers
// 409 naming it and the index stays; after the lock period the helper releases it and DELETE
// succeeds.
func TestHardenedBackupDeleteRefusedUntilReleased(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		ctx := t.Context()
		probe := filepath.Join(h.RepoDir, "probe")
		_ = os.WriteFile(probe, nil, 0o600)
		if err := immutable.Set(filepath.Dir(probe), probe, true); err != nil {
			testenv.Skip(t, "immutable files: %v (run as root on ext4, XFS or btrfs)", err)
		}
		_ = immutable.Set(filepath.Dir(probe), probe, false)
		_ = os.Remove(probe)
		t.Cleanup(func() {
			_ = filepath.WalkDir(h.RepoDir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					_ = immutable.Set(filepath.Dir(p), p, false)
				}
				return nil
			})
		})
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		img := make([]byte, 2*testChunk)
		_, _ = rand.Read(img)
		id := h.backupImage(a, operator, img)
		opts := harden.Options{RepositoryID: mustRepoID(t, h.Cat), LockPeriod: 30 * 24 * time.Hour}
		if rep, err := harden.Run(ctx, h.Repo, h.Cat, opts, slog.New(slog.DiscardHandler)); err != nil || rep.HardenedIndexes == 0 {
			t.Fatalf("harden: %+v, %v", rep, err)
		}
		code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+id, operator, nil, nil)
		if code != http.StatusConflict || !strings.Contains(e.Error, "immutable") {
			t.Fatalf("DELETE of a hardened backup: %d %+v, want 409 naming the immutability", code, e)
		}
		ref := repository.IndexRef{VMUUID: vmUUIDOf(t, h, id), DiskID: "disk-2000", BackupID: id}
		if _, err := h.Repo.ReadIndex(ctx, ref); err != nil {
			t.Fatalf("index after the refused DELETE: %v", err)
		}
		opts.Now = time.Now().Add(31 * 24 * time.Hour)
		if rep, err := harden.Run(ctx, h.Repo, h.Cat, opts, slog.New(slog.DiscardHandler)); err != nil || rep.ReleasedIndexes == 0 {
			t.Fatalf("release: %+v, %v", rep, err)
		}
		if code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+id, operator, nil, nil); code != http.StatusNoContent {
			t.Fatalf("DELETE after the release: %d %+v", code, e)
		}
		if _, err := h.Repo.ReadIndex(ctx, ref); !errors.Is(err, repository.ErrIndexNotFound) {
			t.Fatalf("index after DELETE: %v", err)
		}
	})
}

// A copy in an Object Lock repository is retained there as the backup is at home: the copy
// policy's run that keeps it dates its objects, after which neither the copy nor the backup
// (whose deletion takes its copies) can be deleted before that date.
func TestObjectLockRetainsCopies(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		ctx := t.Context()
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		id := h.backupImage(a, operator, randomImage(t, 3*testChunk))

		repos := repository.NewRegistry(h.Cat, nil, nil)
		t.Cleanup(func() { _ = repos.Close() })
		cfg := s3test.LockedConfig(t, s3.LockCompliance)
		creds := filepath.Join(t.TempDir(), "s3.creds")
		if err := os.WriteFile(creds, []byte(cfg.AccessKey+"\n"+cfg.SecretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		set := api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: cfg.Bucket, S3Prefix: cfg.Prefix, S3CredentialsFile: creds, S3ObjectLock: s3.LockCompliance, S3LockDays: 1}
		off, err := repos.CreateS3(ctx, "offsite", set, 64<<10, "")
		if err != nil {
			t.Fatal(err)
		}
		b := jobs.New(h.Cat, repos, slog.New(slog.DiscardHandler), nil, jobs.Options{Now: time.Now})
		ps := policy.New(h.Cat, b, nil, slog.New(slog.DiscardHandler), nil, time.Now)
		open := func(ctx context.Context, id string) (copies.Repository, error) { return repos.Open(ctx, id) }
		ps.SetCopies(copies.New(h.Cat, open, slog.New(slog.DiscardHandler), 2), b)
		if _, err := ps.Create(ctx, api.Policy{Name: "off", Kind: api.PolicyCopy, From: repository.DefaultName, To: "offsite", Enabled: true,
			Schedule: "@daily", Retention: api.Retention{KeepLast: 5}}); err != nil {
			t.Fatal(err)
		}
		if run, err := ps.RunCopy(ctx, "off"); err != nil || run.BackupsCopied != 1 || run.Error != "" {
			t.Fatalf("copy run: %+v %v", run, err)
		}
		target, err := repos.Open(ctx, off.ID)
		if err != nil {
			t.Fatal(err)
		}
		until, err := target.BackupRetainedUntil(ctx, vmUUIDOf(t, h, id), id, []string{"disk-2000"})
		if err != nil || until.Before(time.Now().Add(23*time.Hour)) {
			t.Fatalf("the copy is retained until %v (%v), want a day from now", until, err)
		}
		if err := b.DeleteCopy(ctx, id, off.ID); !errors.Is(err, jobs.ErrRetained) {
			t.Fatalf("delete of the retained copy: %v, want ErrRetained", err)
		}
		if code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+id, operator, nil, nil); code != http.StatusConflict || !strings.Contains(e.Error, "object lock") {
			t.Fatalf("DELETE of a backup whose copy is retained: %d %+v, want 409 naming the object lock", code, e)
		}
	})
}
