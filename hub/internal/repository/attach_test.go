package repository_test

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// Attach records an existing repository and imports the backups its records describe; it lists
// indexes no record describes (backups from before records) and refuses records whose index is
// gone; attaching again imports nothing; the same repository under another name, a name in
// use, or a directory without a repository are refused.
func TestAttach(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		dir := filepath.Join(t.TempDir(), "vault")
		r, err := repository.InitDir(ctx, dir, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		const vm = "5012-aaaa"
		writeIndex := func(backupID string) string {
			x, err := fidx.New(8<<20, r.ChunkSize())
			if err != nil {
				t.Fatal(err)
			}
			d, err := r.WriteIndex(ctx, repository.IndexRef{VMUUID: vm, DiskID: "disk-2000", BackupID: backupID}, x)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		record := func(backupID, digest string) {
			rec := &repository.BackupRecord{Version: repository.BackupRecordVersion, BackupID: backupID,
				Agent: repository.RecordAgent{ID: "agent-1", Name: "appliance"}, Source: repository.RecordSource{Name: "lab"},
				VM:   repository.RecordVM{ContextID: "ctx-web-1", InstanceUUID: vm, Name: "web"},
				Type: api.BackupFull, CreatedAt: time.Now().UTC(),
				Disks: []repository.RecordDisk{{DiskID: "disk-2000", Type: api.BackupFull, CapacityBytes: 8 << 20, ChunkSize: r.ChunkSize(),
					SlotsTotal: 2, IndexPath: "indexes/" + vm + "/disk-2000/" + backupID + ".fidx", IndexDigest: digest}}}
			if err := r.WriteBackupRecord(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		record("bk-new", writeIndex("bk-new"))
		writeIndex("bk-before-records")
		record("bk-index-lost", "00")
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}

		g := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = g.Close() })
		rep, err := g.Attach(ctx, repository.AttachRequest{Name: "vault", Path: dir}, c)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Recorded || !slices.Equal(rep.Imported, []string{"bk-new"}) || len(rep.Known) != 0 || len(rep.Damaged) != 1 ||
			len(rep.Unrecorded) != 1 || rep.Unrecorded[0].BackupID != "bk-before-records" {
			t.Fatalf("first attach: %+v", rep)
		}
		if row, err := c.BackupByID(ctx, "bk-new"); err != nil || row.RepositoryName != "vault" || row.RepositoryID != rep.Repository.ID {
			t.Fatalf("imported backup: %+v, %v", row, err)
		}
		if _, err := c.BackupByID(ctx, "bk-index-lost"); !errors.Is(err, catalog.ErrNotFound) {
			t.Fatalf("a backup without its index was imported: %v", err)
		}

		again, err := g.Attach(ctx, repository.AttachRequest{Name: "vault", Path: dir}, c)
		if err != nil || again.Recorded || len(again.Imported) != 0 || !slices.Equal(again.Known, []string{"bk-new"}) {
			t.Fatalf("second attach: %+v, %v", again, err)
		}
		if _, err := g.Attach(ctx, repository.AttachRequest{Name: "other", Path: dir}, c); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("attach under another name: %v", err)
		}
		if _, err := g.Create(ctx, "taken", t.TempDir(), 0); err != nil {
			t.Fatal(err)
		}
		// Another repository under a name in use.
		fresh := filepath.Join(t.TempDir(), "fresh")
		if fr, err := repository.InitDir(ctx, fresh, 0, nil); err != nil {
			t.Fatal(err)
		} else {
			_ = fr.Close()
		}
		if _, err := g.Attach(ctx, repository.AttachRequest{Name: "taken", Path: fresh}, c); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("attach under a name in use: %v", err)
		}
		if _, err := g.Attach(ctx, repository.AttachRequest{Name: "empty", Path: t.TempDir()}, c); !errors.Is(err, repository.ErrNotRepository) {
			t.Fatalf("attach an empty directory: %v", err)
		}
		rs, err := c.Repositories(ctx)
		if err != nil || len(rs) != 2 {
			t.Fatalf("repositories after the refused attaches: %+v, %v", rs, err)
		}
	})
}
