package catalog_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"
)

func importedRows(repoID, jobID, parent string, created time.Time) *catalog.BackupRows {
	typ := api.BackupFull
	if parent != "" {
		typ = api.BackupIncremental
	}
	return &catalog.BackupRows{
		Agent:   catalog.Agent{ID: "agent-old", Name: "old-agent", Hostname: "appliance"},
		Source:  catalog.Source{Name: "lab", URL: "https://vc/sdk", InstanceUUID: "vc-uuid-1"},
		VM:      catalog.VMContext{ContextID: "ctx-web-1", InstanceUUID: "5012-web", VMName: "web", NumCPU: 2, MemoryMB: 2048},
		VMDisks: []catalog.VMDisk{{DiskID: "disk-2000", DeviceKey: 2000, Label: "Hard disk 1", CapacityBytes: 8 << 20, Backupable: true, ChangeID: "cbt/1"}},
		Job: catalog.BackupJob{ID: jobID, RepositoryID: repoID, RequestedType: "auto", Type: typ, Status: api.JobSucceeded,
			CreatedAt: created, StartedAt: created, FinishedAt: created.Add(time.Minute), Protected: parent != ""},
		Disks: []catalog.BackupDisk{{DiskID: "disk-2000", Type: typ, ParentJobID: parent, CapacityBytes: 8 << 20, ChunkSize: 4 << 20,
			SlotsTotal: 2, IndexPath: "indexes/5012-web/disk-2000/" + jobID + ".fidx", IndexDigest: "ab", ChangeID: "cbt/1"}},
	}
}

// ImportBackup rebuilds a backup with the agent, source and VM it names into an empty catalog,
// under its own id; importing it again changes nothing; a VM the catalog knows under another
// context id (the same source and instance UUID) takes the backup under its own context id.
func TestImportBackup(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		repo := &catalog.Repository{ID: "repo-1", Name: "vault", Kind: api.RepositoryLocal, Path: "/srv/vault", ChunkSize: 4 << 20}
		if err := c.CreateRepository(ctx, repo); err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
		for _, b := range []*catalog.BackupRows{importedRows("repo-1", "bk-full", "", t0), importedRows("repo-1", "bk-inc", "bk-full", t0.Add(time.Hour))} {
			if ok, err := c.ImportBackup(ctx, b); err != nil || !ok {
				t.Fatalf("import %s: %v, %v", b.Job.ID, ok, err)
			}
		}
		row, err := c.BackupByID(ctx, "bk-inc")
		if err != nil || row.VMName != "web" || row.RepositoryName != "vault" || !row.Protected || row.Type != api.BackupIncremental || !row.CreatedAt.Equal(t0.Add(time.Hour)) {
			t.Fatalf("BackupByID = %+v, %v", row, err)
		}
		chain, err := c.Chain(ctx, "ctx-web-1")
		if err != nil || len(chain) != 2 || chain[1].ParentJobID != "bk-full" || chain[0].Status != api.JobSucceeded {
			t.Fatalf("Chain = %+v, %v", chain, err)
		}
		a, err := c.AgentByID(ctx, "agent-old")
		if err != nil || a.Status != api.AgentRevoked {
			t.Fatalf("agent = %+v, %v", a, err)
		}
		vm, err := c.VMByContextID(ctx, "ctx-web-1")
		if err != nil || vm.CurrentStatus != api.VMGone || vm.SourceName != "lab" {
			t.Fatalf("vm = %+v, %v", vm, err)
		}
		disks, err := c.VMDisks(ctx, "ctx-web-1")
		if err != nil || len(disks) != 1 || disks[0].ChangeID != "" || disks[0].Status != api.DiskGone {
			t.Fatalf("disks = %+v, %v", disks, err)
		}

		again := importedRows("repo-1", "bk-full", "", t0)
		again.Job.Notes = "changed"
		if ok, err := c.ImportBackup(ctx, again); err != nil || ok {
			t.Fatalf("import again: %v, %v", ok, err)
		}
		if row, _ := c.BackupByID(ctx, "bk-full"); row.Notes != "" {
			t.Fatalf("importing again changed the backup: %+v", row)
		}
		if _, n, err := c.Backups(ctx, catalog.BackupFilter{}); err != nil || n != 2 {
			t.Fatalf("backups after importing again: %d, %v", n, err)
		}

		// The same VM seen under another context id: the backup joins that VM.
		other := importedRows("repo-1", "bk-other", "", t0.Add(2*time.Hour))
		other.VM.ContextID = "ctx-web-2"
		if ok, err := c.ImportBackup(ctx, other); err != nil || !ok {
			t.Fatalf("import under another context id: %v, %v", ok, err)
		}
		if row, err := c.BackupByID(ctx, "bk-other"); err != nil || row.VMContextID != "ctx-web-1" {
			t.Fatalf("bk-other = %+v, %v", row, err)
		}
	})
}

// vaultAndOffsite records two local repositories: repo-1 "vault" and repo-2 "offsite".
func vaultAndOffsite(t *testing.T, c *catalog.Catalog) {
	t.Helper()
	for _, r := range []*catalog.Repository{
		{ID: "repo-1", Name: "vault", Kind: api.RepositoryLocal, Path: "/srv/vault", ChunkSize: 4 << 20},
		{ID: "repo-2", Name: "offsite", Kind: api.RepositoryLocal, Path: "/srv/offsite", ChunkSize: 4 << 20},
	} {
		if err := c.CreateRepository(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
}

// A recorded copy is listed with its repository's name, recorded again without error, counted
// by the consistency check's query for the copy's repository, and goes with its backup.
func TestBackupCopies(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		vaultAndOffsite(t, c)
		if _, err := c.ImportBackup(ctx, importedRows("repo-1", "bk-full", "", time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC))); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := c.RecordCopy(ctx, &catalog.BackupCopy{BackupID: "bk-full", RepositoryID: "repo-2", ChunksCopied: 3}); err != nil {
				t.Fatal(err)
			}
		}
		cps, err := c.BackupCopies(ctx, "bk-full")
		if err != nil || len(cps) != 1 || cps[0].RepositoryName != "offsite" || cps[0].CopiedAt.IsZero() {
			t.Fatalf("BackupCopies = %+v, %v", cps, err)
		}
		for _, repo := range []string{"repo-1", "repo-2"} {
			if ds, err := c.IndexedDisks(ctx, repo); err != nil || len(ds) != 1 || ds[0].JobID != "bk-full" {
				t.Fatalf("IndexedDisks(%s) = %+v, %v", repo, ds, err)
			}
		}
		if _, _, err := c.DeleteBackup(ctx, "bk-full"); err != nil {
			t.Fatal(err)
		}
		if cps, err := c.BackupCopies(ctx, "bk-full"); err != nil || len(cps) != 0 {
			t.Fatalf("copies of a deleted backup: %+v, %v", cps, err)
		}
	})
}

// A backup moves to its copy: its repository becomes the copy's, its origin the repository it
// left, the copy's record goes, and the consistency check expects its indexes in the copy's
// repository only. A protected backup, one without a copy there, one running, or one unknown is
// refused and left as it was.
func TestRehomeBackup(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		for _, r := range []*catalog.Repository{
			{ID: "repo-1", Name: "vault", Kind: api.RepositoryLocal, Path: "/srv/vault", ChunkSize: 4 << 20},
			{ID: "repo-2", Name: "offsite", Kind: api.RepositoryLocal, Path: "/srv/offsite", ChunkSize: 4 << 20},
			{ID: "repo-3", Name: "tape", Kind: api.RepositoryLocal, Path: "/srv/tape", ChunkSize: 4 << 20},
		} {
			if err := c.CreateRepository(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
		// bk-inc is imported protected (importedRows protects the incremental).
		for _, b := range []*catalog.BackupRows{importedRows("repo-1", "bk-full", "", t0), importedRows("repo-1", "bk-inc", "bk-full", t0.Add(time.Hour))} {
			if _, err := c.ImportBackup(ctx, b); err != nil {
				t.Fatal(err)
			}
			for _, to := range []string{"repo-2", "repo-3"} {
				if err := c.RecordCopy(ctx, &catalog.BackupCopy{BackupID: b.Job.ID, RepositoryID: to}); err != nil {
					t.Fatal(err)
				}
			}
		}

		for _, tc := range []struct {
			name, id, to string
			want         error
		}{
			{"protected", "bk-inc", "repo-2", catalog.ErrProtected},
			{"no copy there", "bk-full", "repo-1", catalog.ErrNotFound},
			{"unknown backup", "bk-none", "repo-2", catalog.ErrNotFound},
		} {
			if _, _, err := c.RehomeBackup(ctx, tc.id, tc.to); !errors.Is(err, tc.want) {
				t.Fatalf("%s: RehomeBackup(%s, %s) = %v, want %v", tc.name, tc.id, tc.to, err, tc.want)
			}
		}
		if row, err := c.BackupByID(ctx, "bk-inc"); err != nil || row.RepositoryID != "repo-1" || row.OriginRepositoryID != "" {
			t.Fatalf("a refused move changed the backup: %+v, %v", row, err)
		}
		if cps, err := c.BackupCopies(ctx, "bk-inc"); err != nil || len(cps) != 2 {
			t.Fatalf("a refused move changed the copies: %+v, %v", cps, err)
		}

		j, disks, err := c.RehomeBackup(ctx, "bk-full", "repo-2")
		if err != nil || j.RepositoryID != "repo-1" || len(disks) != 1 || disks[0].DiskID != "disk-2000" {
			t.Fatalf("RehomeBackup = %+v, %+v, %v", j, disks, err)
		}
		row, err := c.BackupByID(ctx, "bk-full")
		if err != nil || row.RepositoryID != "repo-2" || row.RepositoryName != "offsite" || row.OriginRepositoryID != "repo-1" {
			t.Fatalf("after the move: %+v, %v", row, err)
		}
		if cps, err := c.BackupCopies(ctx, "bk-full"); err != nil || len(cps) != 1 || cps[0].RepositoryID != "repo-3" {
			t.Fatalf("copies after the move: %+v, %v", cps, err)
		}
		for repo, want := range map[string]int{"repo-1": 1, "repo-2": 2, "repo-3": 2} {
			if ds, err := c.IndexedDisks(ctx, repo); err != nil || len(ds) != want {
				t.Fatalf("IndexedDisks(%s) = %+v, %v; want %d", repo, ds, err, want)
			}
		}
		// Moving again keeps the repository it was first taken into as its origin.
		if _, _, err := c.RehomeBackup(ctx, "bk-full", "repo-3"); err != nil {
			t.Fatal(err)
		}
		if row, err := c.BackupByID(ctx, "bk-full"); err != nil || row.RepositoryID != "repo-3" || row.OriginRepositoryID != "repo-1" {
			t.Fatalf("after the second move: %+v, %v", row, err)
		}
		if _, _, err := c.RehomeBackup(ctx, "bk-full", "repo-2"); !errors.Is(err, catalog.ErrNotFound) {
			t.Fatalf("moving to a copy that went with the first move: %v", err)
		}

		// A running backup is refused.
		ctxID := catalog.SeedVMForTest(t, c)
		running := catalog.SeedJobForTest(t, c, ctxID)
		if _, _, err := c.RehomeBackup(ctx, running, "repo-2"); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("moving a queued or running backup: %v", err)
		}
	})
}

// A backup that a restore, an instant recovery or a restore test still reads cannot be deleted (ErrConflict,
// nothing removed); once they have finished, the backup goes with their records.
func TestDeleteBackupWithRestores(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		if err := c.CreateRepository(ctx, &catalog.Repository{ID: "repo-1", Name: "vault", Kind: api.RepositoryLocal, Path: "/srv/vault", ChunkSize: 4 << 20}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ImportBackup(ctx, importedRows("repo-1", "bk-full", "", time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC))); err != nil {
			t.Fatal(err)
		}
		rj := &catalog.RestoreJob{ID: "rs-1", BackupID: "bk-full", AgentID: "agent-old", SourceName: "lab", TargetName: "web-restored", Spec: "{}"}
		if err := c.CreateRestoreJob(ctx, rj); err != nil {
			t.Fatal(err)
		}
		ir := &catalog.InstantRecovery{ID: "ir-1", BackupID: "bk-full", AgentID: "agent-old", SourceName: "lab", Host: "esx1", Name: "web-ir", Spec: "{}"}
		if err := c.CreateInstantRecovery(ctx, ir); err != nil {
			t.Fatal(err)
		}
		refused := func(what string) {
			t.Helper()
			_, _, err := c.DeleteBackup(ctx, "bk-full")
			if !errors.Is(err, catalog.ErrConflict) || !strings.Contains(err.Error(), what) {
				t.Fatalf("delete while %s is active: %v, want a conflict naming it", what, err)
			}
			if _, err := c.BackupByID(ctx, "bk-full"); err != nil {
				t.Fatalf("the refused delete removed the backup: %v", err)
			}
		}
		refused("rs-1")
		if _, err := c.CancelRestore(ctx, "rs-1"); err != nil {
			t.Fatal(err)
		}
		refused("ir-1")
		if _, err := c.FinishInstantRecoveryAction(ctx, "ir-1", "agent-old", api.IRActionStart, catalog.InstantRecoveryUpdate{Status: api.IRFailed, Error: "no host"}); err != nil {
			t.Fatal(err)
		}
		bk, err := c.BackupByID(ctx, "bk-full")
		if err != nil {
			t.Fatal(err)
		}
		rt := &catalog.RestoreTest{ID: "rt-1", VMContextID: bk.VMContextID, VMName: "web", BackupID: "bk-full", BackupCreatedAt: time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC),
			RepositoryID: "repo-1", RepositoryName: "vault", Actor: "test", RequestedChecks: []string{api.CheckRead}, Status: api.RestoreTestQueued}
		if err := c.CreateRestoreTest(ctx, rt); err != nil {
			t.Fatal(err)
		}
		refused("rt-1") // queued
		if got, err := c.ClaimRestoreTest(ctx); err != nil || got == nil || got.ID != "rt-1" {
			t.Fatalf("claim the restore test: %+v %v", got, err)
		}
		refused("rt-1") // running
		rt.Status = api.RestoreTestPassed
		if err := c.FinishRestoreTest(ctx, rt); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.DeleteBackup(ctx, "bk-full"); err != nil {
			t.Fatalf("delete once the restore, the instant recovery and the restore test ended: %v", err)
		}
		if _, err := c.RestoreJobByID(ctx, "rs-1"); !errors.Is(err, catalog.ErrNotFound) {
			t.Fatalf("the restore's record after the delete: %v, want gone", err)
		}
		if _, err := c.InstantRecoveryByID(ctx, "ir-1"); !errors.Is(err, catalog.ErrNotFound) {
			t.Fatalf("the instant recovery's record after the delete: %v, want gone", err)
		}
	})
}

// A copy cannot be forgotten while the backup is protected or something reads it, which may
// be reading the copy: a restore here.
func TestDeleteCopyWithRestores(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		vaultAndOffsite(t, c)
		if _, err := c.ImportBackup(ctx, importedRows("repo-1", "bk-full", "", time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC))); err != nil {
			t.Fatal(err)
		}
		if err := c.RecordCopy(ctx, &catalog.BackupCopy{BackupID: "bk-full", RepositoryID: "repo-2"}); err != nil {
			t.Fatal(err)
		}
		rj := &catalog.RestoreJob{ID: "rs-1", BackupID: "bk-full", AgentID: "agent-old", SourceName: "lab", TargetName: "web-restored", Spec: `{"repository":"offsite"}`}
		if err := c.CreateRestoreJob(ctx, rj); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteCopy(ctx, "bk-full", "repo-2"); !errors.Is(err, catalog.ErrConflict) || !strings.Contains(err.Error(), "rs-1") {
			t.Fatalf("forget the copy a restore may read: %v, want a conflict naming it", err)
		}
		if _, err := c.CancelRestore(ctx, "rs-1"); err != nil {
			t.Fatal(err)
		}
		if err := c.SetProtected(ctx, "bk-full", true); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteCopy(ctx, "bk-full", "repo-2"); !errors.Is(err, catalog.ErrProtected) {
			t.Fatalf("forget the copy of a protected backup: %v, want ErrProtected", err)
		}
		if err := c.SetProtected(ctx, "bk-full", false); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteCopy(ctx, "bk-full", "repo-2"); err != nil {
			t.Fatalf("forget the copy once nothing reads it: %v", err)
		}
		if cps, err := c.BackupCopies(ctx, "bk-full"); err != nil || len(cps) != 0 {
			t.Fatalf("copies after the delete: %+v %v", cps, err)
		}
	})
}

// A copy being written holds back garbage collection of its target (OldestWrite) and keeps its
// backup's indexes from being taken for orphans (WritingBackupIDs) while it is renewed; once it
// has expired it does neither, cannot be renewed, and its copy cannot be recorded.
func TestCopyWrites(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		vaultAndOffsite(t, c)
		t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
		if _, err := c.ImportBackup(ctx, importedRows("repo-1", "bk-full", "", t0)); err != nil {
			t.Fatal(err)
		}
		now := t0.Add(24 * time.Hour)
		c.SetClock(func() time.Time { return now })
		expect := func(repo string, oldest time.Time, writing bool) {
			t.Helper()
			if got, err := c.OldestWrite(ctx, repo); err != nil || !got.Equal(oldest) {
				t.Fatalf("OldestWrite(%s) = %v, %v; want %v", repo, got, err, oldest)
			}
			if ids, err := c.WritingBackupIDs(ctx); err != nil || ids["bk-full"] != writing {
				t.Fatalf("WritingBackupIDs = %v, %v; want bk-full %v", ids, err, writing)
			}
		}
		w, err := c.BeginCopyWrite(ctx, "bk-full", "repo-2", 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		start := now
		expect("repo-2", start, true)
		expect("repo-1", time.Time{}, true)
		now = now.Add(time.Minute)
		if err := c.RenewCopyWrite(ctx, w.ID, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		now = now.Add(110 * time.Second) // within the renewed two minutes
		expect("repo-2", start, true)
		now = now.Add(time.Minute) // past them
		expect("repo-2", time.Time{}, false)
		if err := c.RenewCopyWrite(ctx, w.ID, 2*time.Minute); !errors.Is(err, catalog.ErrCopyWriteExpired) {
			t.Fatalf("renewal of an expired copy write: %v", err)
		}
		if err := c.FinishCopyWrite(ctx, w.ID, &catalog.BackupCopy{BackupID: "bk-full", RepositoryID: "repo-2"}); !errors.Is(err, catalog.ErrCopyWriteExpired) {
			t.Fatalf("finish of an expired copy write: %v", err)
		}
		if cps, err := c.BackupCopies(ctx, "bk-full"); err != nil || len(cps) != 0 {
			t.Fatalf("copies after an expired write: %+v, %v", cps, err)
		}
		if err := c.EndCopyWrite(ctx, w.ID); err != nil {
			t.Fatal(err)
		}

		w, err = c.BeginCopyWrite(ctx, "bk-full", "repo-2", 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		// The backup being copied cannot be deleted meanwhile.
		if _, _, err := c.DeleteBackup(ctx, "bk-full"); !errors.Is(err, catalog.ErrConflict) || !strings.Contains(err.Error(), "being copied") {
			t.Fatalf("delete of a backup being copied: %v", err)
		}
		if err := c.FinishCopyWrite(ctx, w.ID, &catalog.BackupCopy{BackupID: "bk-full", RepositoryID: "repo-2", ChunksCopied: 3}); err != nil {
			t.Fatal(err)
		}
		if cps, err := c.BackupCopies(ctx, "bk-full"); err != nil || len(cps) != 1 || cps[0].ChunksCopied != 3 {
			t.Fatalf("copies after a finished write: %+v, %v", cps, err)
		}
		expect("repo-2", time.Time{}, false)
		if err := c.EndCopyWrite(ctx, w.ID); err != nil {
			t.Fatalf("end of a finished copy write: %v", err)
		}
		if _, _, err := c.DeleteBackup(ctx, "bk-full"); err != nil {
			t.Fatalf("delete after the copy: %v", err)
		}
	})
}

// The backup after an in-place restore that an agent ran is full, whether the restore succeeded
// or failed (it may have written part of the disks); one cancelled before an agent took it does
// not count.
func TestInPlaceRestoredAfter(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		if err := c.CreateRepository(ctx, &catalog.Repository{ID: "repo-1", Name: "vault", Kind: api.RepositoryLocal, Path: "/srv/vault", ChunkSize: 4 << 20}); err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
		if _, err := c.ImportBackup(ctx, importedRows("repo-1", "bk-full", "", t0)); err != nil {
			t.Fatal(err)
		}
		now := t0.Add(time.Hour)
		c.SetClock(func() time.Time { return now })
		restore := func(id string) {
			t.Helper()
			if err := c.CreateRestoreJob(ctx, &catalog.RestoreJob{ID: id, BackupID: "bk-full", AgentID: "agent-old", SourceName: "lab",
				TargetName: "web", VMContextID: "ctx-web-1", Spec: "{}"}); err != nil {
				t.Fatal(err)
			}
		}
		after := func(want string) {
			t.Helper()
			if got, err := c.InPlaceRestoredAfter(ctx, "ctx-web-1", "bk-full"); err != nil || got != want {
				t.Fatalf("InPlaceRestoredAfter = %q, %v; want %q", got, err, want)
			}
		}
		restore("rs-cancelled")
		if _, err := c.CancelRestore(ctx, "rs-cancelled"); err != nil {
			t.Fatal(err)
		}
		after("")
		restore("rs-failed")
		if j, _, err := c.ClaimRestoreJob(ctx, "agent-old", nil); err != nil || j == nil || j.ID != "rs-failed" {
			t.Fatalf("claim: %+v, %v", j, err)
		}
		now = now.Add(time.Minute)
		if _, err := c.FinishRestore(ctx, "rs-failed", "agent-old", api.JobFailed, "datastore write failed half-way", ""); err != nil {
			t.Fatal(err)
		}
		after("rs-failed")
	})
}

// An incremental's session holds its parent: a parent deleted after ingest chose it (and before
// the session was recorded) refuses the session, and once the session is recorded the parent can
// be neither deleted nor moved to a copy (either would remove the index the incremental derives
// from) until the session ends.
func TestIncrementalSessionHoldsItsParent(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		vaultAndOffsite(t, c)
		t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
		for _, b := range []*catalog.BackupRows{importedRows("repo-1", "bk-q", "", t0), importedRows("repo-1", "bk-p", "", t0.Add(time.Hour))} {
			if ok, err := c.ImportBackup(ctx, b); err != nil || !ok {
				t.Fatalf("import %s: %v %v", b.Job.ID, ok, err)
			}
		}
		if err := c.RecordCopy(ctx, &catalog.BackupCopy{BackupID: "bk-q", RepositoryID: "repo-2"}); err != nil {
			t.Fatal(err)
		}
		job := catalog.SeedJobForTest(t, c, catalog.SeedVMForTest(t, c))
		session := func(id, parent string) *catalog.UploadSession {
			return &catalog.UploadSession{ID: id, JobID: job, DiskID: "disk-2000", AgentID: "agent-seed", RepositoryID: "repo-1",
				Type: api.BackupIncremental, ParentJobID: parent, CapacityBytes: 8 << 20, ChunkSize: 4 << 20, SlotCount: 2}
		}

		parent, err := c.LatestBackupDisk(ctx, "ctx-web-1", "disk-2000", "repo-1")
		if err != nil || parent.JobID != "bk-p" {
			t.Fatalf("latest = %+v, %v", parent, err)
		}
		if _, _, err := c.DeleteBackup(ctx, "bk-p"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if _, err := c.OpenSession(ctx, session("us-1", parent.JobID)); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("a session on a parent deleted after it was chosen: %v, want ErrConflict", err)
		}

		if _, err := c.OpenSession(ctx, session("us-2", "bk-q")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.DeleteBackup(ctx, "bk-q"); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("deleting the parent of an open session: %v, want ErrConflict", err)
		}
		if _, _, err := c.RehomeBackup(ctx, "bk-q", "repo-2"); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("moving the parent of an open session to its copy: %v, want ErrConflict", err)
		}
		if got, err := c.OpenSession(ctx, session("us-3", "bk-q")); err != nil || got.ID != "us-2" {
			t.Fatalf("reopening the session: %+v, %v; want us-2", got, err)
		}
	})
}
