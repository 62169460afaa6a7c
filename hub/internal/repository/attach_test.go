package repository_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
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

// A repository of copies attached after the backups' home records, as copies, the known backups
// it holds as the catalog has them: the same index digests, read back from their files. A
// record whose index differs from the catalog's, whose index file does not match its record, or
// whose index names a chunk, or whose record a VM configuration, the repository lacks, is not
// taken for a copy; a copy taken stands in for its backup only once verified; attaching again
// records nothing more.
func TestAttachRecordsCopiesOfKnownBackups(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		const vm = "5012-bbbb"
		open := func(name string) (*repository.Repository, string) {
			dir := filepath.Join(t.TempDir(), name)
			r, err := repository.InitDir(ctx, dir, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			return r, dir
		}
		newIndex := func(size int64) *fidx.Index {
			x, err := fidx.New(size, 4<<20)
			if err != nil {
				t.Fatal(err)
			}
			return x
		}
		writeIndex := func(r *repository.Repository, backupID string, x *fidx.Index) string {
			d, err := r.WriteIndex(ctx, repository.IndexRef{VMUUID: vm, DiskID: "disk-2000", BackupID: backupID}, x)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		record := func(r *repository.Repository, backupID, digest string, size int64, vmConfig ...string) {
			rec := &repository.BackupRecord{Version: repository.BackupRecordVersion, BackupID: backupID,
				Agent: repository.RecordAgent{ID: "agent-1", Name: "appliance"}, Source: repository.RecordSource{Name: "lab"},
				VM:   repository.RecordVM{ContextID: "ctx-web-2", InstanceUUID: vm, Name: "web"},
				Type: api.BackupFull, CreatedAt: time.Now().UTC(),
				Disks: []repository.RecordDisk{{DiskID: "disk-2000", Type: api.BackupFull, CapacityBytes: size, ChunkSize: r.ChunkSize(),
					SlotsTotal: size / r.ChunkSize(), IndexPath: "indexes/" + vm + "/disk-2000/" + backupID + ".fidx", IndexDigest: digest}}}
			if len(vmConfig) > 0 {
				rec.VMConfigDigest = vmConfig[0]
			}
			if err := r.WriteBackupRecord(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		home, homeDir := open("home")
		digests, idxs := map[string]string{}, map[string]*fidx.Index{}
		for _, id := range []string{"bk-1", "bk-2", "bk-3"} {
			idxs[id] = newIndex(8 << 20)
			digests[id] = writeIndex(home, id, idxs[id])
			record(home, id, digests[id], 8<<20)
		}
		// bk-4 names a chunk, which its copy lacks.
		plain := bytes.Repeat([]byte("copied?!"), 1<<10)
		d := chunk.Sum(plain)
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
		if err != nil {
			t.Fatal(err)
		}
		idxs["bk-4"] = newIndex(8 << 20)
		idxs["bk-4"].Digests[1] = d
		if _, err := home.PutChunk(ctx, d, blob); err != nil {
			t.Fatal(err)
		}
		digests["bk-4"] = writeIndex(home, "bk-4", idxs["bk-4"])
		record(home, "bk-4", digests["bk-4"], 8<<20)
		// bk-5 has a VM configuration, which its copy lacks.
		idxs["bk-5"] = newIndex(8 << 20)
		digests["bk-5"] = writeIndex(home, "bk-5", idxs["bk-5"])
		cfgDigest, err := home.WriteVMConfig(ctx, vm, "bk-5", []byte(`{"name":"web"}`))
		if err != nil {
			t.Fatal(err)
		}
		record(home, "bk-5", digests["bk-5"], 8<<20, cfgDigest)
		copies, copiesDir := open("offsite")
		record(copies, "bk-1", writeIndex(copies, "bk-1", idxs["bk-1"]), 8<<20)      // the same restore point
		record(copies, "bk-2", writeIndex(copies, "bk-2", newIndex(12<<20)), 12<<20) // another index
		writeIndex(copies, "bk-3", newIndex(8<<20))                                  // a file unlike its record
		record(copies, "bk-3", digests["bk-3"], 8<<20)
		if _, err := copies.PutChunk(ctx, d, blob); err != nil {
			t.Fatal(err)
		}
		record(copies, "bk-4", writeIndex(copies, "bk-4", idxs["bk-4"]), 8<<20)
		record(copies, "bk-5", writeIndex(copies, "bk-5", idxs["bk-5"]), 8<<20, cfgDigest)
		h := d.String()
		if err := os.Remove(filepath.Join(copiesDir, "chunks", h[:2], h[2:4], h)); err != nil {
			t.Fatal(err)
		}
		for _, r := range []*repository.Repository{home, copies} {
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
		}

		g := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = g.Close() })
		if rep, err := g.Attach(ctx, repository.AttachRequest{Name: "home", Path: homeDir}, c); err != nil || len(rep.Imported) != 5 || len(rep.Copies) != 0 {
			t.Fatalf("attach of the home: %+v, %v", rep, err)
		}
		rep, err := g.Attach(ctx, repository.AttachRequest{Name: "offsite", Path: copiesDir}, c)
		if err != nil || len(rep.Imported) != 0 || len(rep.Known) != 5 || !slices.Equal(rep.Copies, []string{"bk-1"}) {
			t.Fatalf("attach of the copies: %+v, %v; want bk-1 recorded as a copy", rep, err)
		}
		for id, want := range map[string]int{"bk-1": 1, "bk-2": 0, "bk-3": 0, "bk-4": 0, "bk-5": 0} {
			cps, err := c.BackupCopies(ctx, id)
			if err != nil || len(cps) != want {
				t.Fatalf("copies of %s: %+v, %v; want %d", id, cps, err, want)
			}
			if want == 1 && (cps[0].RepositoryName != "offsite" || cps[0].VerifyStatus != api.VerifyPending) {
				t.Fatalf("copy of %s: %+v, want in offsite, pending", id, cps[0])
			}
			if row, err := c.BackupByID(ctx, id); err != nil || row.RepositoryName != "home" {
				t.Fatalf("backup %s: %+v, %v; want its home unchanged", id, row, err)
			}
		}
		if again, err := g.Attach(ctx, repository.AttachRequest{Name: "offsite", Path: copiesDir}, c); err != nil || len(again.Copies) != 0 {
			t.Fatalf("second attach of the copies: %+v, %v", again, err)
		}
		// The home attached again records no copy of its own backups.
		if again, err := g.Attach(ctx, repository.AttachRequest{Name: "home", Path: homeDir}, c); err != nil || len(again.Copies) != 0 {
			t.Fatalf("second attach of the home: %+v, %v", again, err)
		}
		// Until a verification reads it whole, the copy does not stand in for its backup.
		if _, _, err := c.RehomeBackup(ctx, "bk-1", rep.Repository.ID); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("move of bk-1 onto its pending copy: %v, want a conflict", err)
		}
		if err := c.RecordCopyVerify(ctx, "bk-1", rep.Repository.ID, api.VerifyOK, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.RehomeBackup(ctx, "bk-1", rep.Repository.ID); err != nil {
			t.Fatalf("move of bk-1 onto its verified copy: %v", err)
		}
	})
}
