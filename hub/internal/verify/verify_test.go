package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// backupsIn is a catalog of one-disk backups, each in the repository its RepositoryID names.
type backupsIn struct {
	rows     []catalog.BackupRow
	copies   map[string][]catalog.BackupCopy // by backup id
	recorded map[string]string               // backup id, or backup id@repository id for a copy → status
}

func (c *backupsIn) Backups(context.Context, catalog.BackupFilter) ([]catalog.BackupRow, int, error) {
	return c.rows, len(c.rows), nil
}

func (c *backupsIn) BackupByID(_ context.Context, id string) (*catalog.BackupRow, error) {
	for i := range c.rows {
		if c.rows[i].ID == id {
			return &c.rows[i], nil
		}
	}
	return nil, catalog.ErrNotFound
}

func (c *backupsIn) BackupDisks(_ context.Context, id string) ([]catalog.BackupDisk, error) {
	return []catalog.BackupDisk{{JobID: id, DiskID: "disk-2000"}}, nil
}

func (c *backupsIn) RecordVerify(_ context.Context, id, status string, _ time.Time) error {
	c.recorded[id] = status
	return nil
}

func (c *backupsIn) BackupCopies(_ context.Context, id string) ([]catalog.BackupCopy, error) {
	return c.copies[id], nil
}

func (c *backupsIn) RecordCopyVerify(_ context.Context, id, repositoryID, status string, _ time.Time) error {
	c.recorded[id+"@"+repositoryID] = status
	return nil
}

func (c *backupsIn) DamagedCopies(context.Context) (int, error) { return 0, nil }

func (c *backupsIn) RecordEvents(context.Context, []catalog.Event) error { return nil }

func (c *backupsIn) VerifySummary(context.Context) (int, time.Time, error) {
	return 0, time.Time{}, nil
}

// oneChunkRepo holds one index of one chunk, damaged or sound, and counts its chunk reads;
// with down set, every read fails as an unreachable store's would.
type oneChunkRepo struct {
	idx     *fidx.Index
	damaged bool
	reads   int
	down    error
}

func (r *oneChunkRepo) ReadIndex(context.Context, repository.IndexRef) (*fidx.Index, error) {
	return r.idx, nil
}

func (r *oneChunkRepo) VerifyChunk(_ context.Context, d chunk.Digest) error {
	r.reads++
	if r.down != nil {
		return r.down
	}
	if r.damaged {
		return fmt.Errorf("chunk %s: %w", d, repository.ErrChunkDamaged)
	}
	return nil
}

func (r *oneChunkRepo) QuarantineChunk(context.Context, chunk.Digest) (string, error) {
	return "quarantine/1", nil
}

func (r *oneChunkRepo) ReadVMConfig(context.Context, string, string, string) ([]byte, error) {
	return nil, nil
}

// One digest in two repositories (the same data backed up into both, or a backup moved to its
// copy while newer ones stay home) is two chunks: each is read where it is, and damage in one
// repository damages only the backups there.
func TestAChunkIsVerifiedInEachRepositoryHoldingIt(t *testing.T) {
	idx, err := fidx.New(4<<20, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = chunk.Sum([]byte("the same bytes in both repositories"))
	for _, damagedIn := range []string{"repo-a", "repo-b"} {
		repos := map[string]*oneChunkRepo{"repo-a": {idx: idx}, "repo-b": {idx: idx}}
		repos[damagedIn].damaged = true
		cat := &backupsIn{recorded: map[string]string{}}
		for _, id := range []string{"repo-a", "repo-b"} {
			var row catalog.BackupRow
			row.ID, row.RepositoryID, row.Status = "bk-in-"+id, id, api.JobSucceeded
			cat.rows = append(cat.rows, row)
		}
		v := New(cat, func(_ context.Context, id string) (Repository, error) { return repos[id], nil }, slog.New(slog.DiscardHandler), nil, 2)
		if _, err := v.Run(t.Context(), ""); err != nil {
			t.Fatal(err)
		}
		for id, r := range repos {
			want := StatusOK
			if id == damagedIn {
				want = StatusDamaged
			}
			if r.reads != 1 || cat.recorded["bk-in-"+id] != want {
				t.Errorf("damaged in %s: the chunk was read %d times in %s and its backup recorded %q, want once and %q",
					damagedIn, r.reads, id, cat.recorded["bk-in-"+id], want)
			}
		}
	}
}

// A copy is verified where it is, and its damage is the copy's: the backup, sound in its own
// repository, stays a sound restore point, and the other way round.
func TestACopyIsVerifiedWhereItIs(t *testing.T) {
	idx, err := fidx.New(4<<20, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = chunk.Sum([]byte("a backup and its copy"))
	for _, damagedIn := range []string{"home", "offsite"} {
		repos := map[string]*oneChunkRepo{"home": {idx: idx}, "offsite": {idx: idx}}
		repos[damagedIn].damaged = true
		var row catalog.BackupRow
		row.ID, row.RepositoryID, row.RepositoryName, row.Status = "bk", "home", "home", api.JobSucceeded
		cat := &backupsIn{rows: []catalog.BackupRow{row}, recorded: map[string]string{},
			copies: map[string][]catalog.BackupCopy{"bk": {{BackupID: "bk", RepositoryID: "offsite", RepositoryName: "offsite"}}}}
		v := New(cat, func(_ context.Context, id string) (Repository, error) { return repos[id], nil }, slog.New(slog.DiscardHandler), nil, 2)
		rep, err := v.Run(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		if repos["home"].reads != 1 || repos["offsite"].reads != 1 || rep.Copies != 1 || rep.OK() {
			t.Fatalf("damaged in %s: reads home %d, offsite %d; report %+v", damagedIn, repos["home"].reads, repos["offsite"].reads, rep)
		}
		wantBackup, wantCopy := StatusOK, StatusDamaged
		if damagedIn == "home" {
			wantBackup, wantCopy = StatusDamaged, StatusOK
		}
		if cat.recorded["bk"] != wantBackup || cat.recorded["bk@offsite"] != wantCopy {
			t.Errorf("damaged in %s: recorded %v, want the backup %s and its copy %s", damagedIn, cat.recorded, wantBackup, wantCopy)
		}
		if _, bad := rep.DamagedBackups["bk"]; bad != (damagedIn == "home") {
			t.Errorf("damaged in %s: damaged backups %v", damagedIn, rep.DamagedBackups)
		}
		if _, bad := rep.DamagedCopies["bk"]["offsite"]; bad != (damagedIn == "offsite") || len(rep.DamagedCopies) > 1 {
			t.Errorf("damaged in %s: damaged copies %v", damagedIn, rep.DamagedCopies)
		}
	}
}

// A repository of copies that cannot be read (an off-site store out of reach) does not stop the
// verification: the backups at home are verified and recorded, the copies there keep their last
// verification, and the report names the repository. A repository holding backups of its own
// that cannot be read fails the verification, as before.
func TestAnUnreadableRepositoryOfCopiesIsSkipped(t *testing.T) {
	idx, err := fidx.New(4<<20, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	idx.Digests[0] = chunk.Sum([]byte("a backup and its copy"))
	outage := errors.New("dial tcp 192.0.2.7:443: connect: connection refused")
	for _, tc := range []struct {
		name   string
		opens  bool // the repository opens, and then its chunk reads fail
		copies bool // the unreadable repository holds only copies
	}{
		{"copies, cannot be opened", false, true},
		{"copies, chunk reads fail", true, true},
		{"a backup's own, chunk reads fail", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repos := map[string]*oneChunkRepo{"home": {idx: idx}, "offsite": {idx: idx, down: outage}}
			var row catalog.BackupRow
			row.ID, row.RepositoryID, row.RepositoryName, row.Status = "bk", "home", "home", api.JobSucceeded
			cat := &backupsIn{rows: []catalog.BackupRow{row}, recorded: map[string]string{},
				copies: map[string][]catalog.BackupCopy{"bk": {{BackupID: "bk", RepositoryID: "offsite", RepositoryName: "offsite"}}}}
			if !tc.copies {
				row.ID, row.RepositoryID, row.RepositoryName = "bk-off", "offsite", "offsite"
				cat.rows = append(cat.rows, row)
			}
			open := func(_ context.Context, id string) (Repository, error) {
				if id == "offsite" && !tc.opens {
					return nil, outage
				}
				return repos[id], nil
			}
			rep, err := New(cat, open, slog.New(slog.DiscardHandler), nil, 2).Run(t.Context(), "")
			if !tc.copies {
				if !errors.Is(err, outage) {
					t.Fatalf("a repository of backups cannot be read: %v, want the verification to fail", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cat.recorded["bk"] != StatusOK || repos["home"].reads != 1 {
				t.Errorf("the backup at home: recorded %q after %d reads, want ok after one", cat.recorded["bk"], repos["home"].reads)
			}
			if st, recorded := cat.recorded["bk@offsite"]; recorded {
				t.Errorf("the copy in the unreadable repository was recorded %q", st)
			}
			if rep.OK() || !strings.Contains(rep.Skipped["offsite"], "connection refused") || len(rep.DamagedCopies) != 0 {
				t.Errorf("report %+v, want offsite skipped and nothing damaged", rep)
			}
		})
	}
}
