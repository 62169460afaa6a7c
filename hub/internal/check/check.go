// Package check compares the catalog with the repositories: backups whose index is missing,
// indexes no backup references, chunks that indexes name but the repository lacks; and it lists
// the damaged chunks in quarantine. Repair removes only what is provably orphaned, never data a
// backup needs, and never a quarantined chunk (evidence for the operator).
package check

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

type checkCatalog interface {
	Repositories(ctx context.Context) ([]catalog.Repository, error)
	IndexedDisks(ctx context.Context, repositoryID string) ([]catalog.IndexedDisk, error)
	WritingBackupIDs(ctx context.Context) (map[string]bool, error)
	BackupByID(ctx context.Context, id string) (*catalog.BackupRow, error)
}

// Repository is what the check needs of one repository.
type Repository interface {
	// WalkIndexes calls fn for every index; an error from fn stops the walk and is returned.
	WalkIndexes(ctx context.Context, fn func(ref repository.IndexRef) error) error
	// ReadIndex reads and checks one index.
	ReadIndex(ctx context.Context, ref repository.IndexRef) (*fidx.Index, error)
	// RemoveIndex removes one index durably.
	RemoveIndex(ctx context.Context, ref repository.IndexRef) error
	// HasChunk reports whether the repository holds a chunk, without reading it.
	HasChunk(ctx context.Context, d chunk.Digest) (bool, error)
	// Stats counts the chunks and their bytes.
	Stats(ctx context.Context) (chunks, bytes int64, err error)
	// CleanTemp removes (dryRun: counts) the temp files no live writer owns.
	CleanTemp(ctx context.Context, dryRun bool) (int, error)
	// WalkQuarantine calls fn for every damaged chunk object moved into quarantine.
	WalkQuarantine(ctx context.Context, fn func(q repository.Quarantined) error) error
	// ReadBackupRecord reads the repository's record of one backup:
	// repository.ErrBackupRecordNotFound when there is none.
	ReadBackupRecord(ctx context.Context, vmUUID, backupID string) (*repository.BackupRecord, error)
}

// OpenFunc opens the repository with a catalog id.
type OpenFunc func(ctx context.Context, id string) (Repository, error)

// Problem is one inconsistency.
type Problem struct {
	Repository string
	Kind       string // missing_index, orphan_index, unimported_backup, missing_chunk, unreadable_index, stale_temp
	BackupID   string
	DiskID     string
	Detail     string
	Repaired   bool
}

// Quarantined is one damaged chunk object kept in a repository's quarantine. It is not a
// problem of its own: a backup that needs the chunk is reported as missing_chunk until a later
// backup uploads the chunk again, and the object stays until an operator removes it.
type Quarantined struct {
	Repository string
	repository.Quarantined
}

// Report is the outcome of a check.
type Report struct {
	Problems     []Problem
	Quarantined  []Quarantined
	Indexes      int
	Chunks       int
	TempsRemoved int
}

// OK reports whether the check found nothing left to fix.
func (r *Report) OK() bool {
	for _, p := range r.Problems {
		if !p.Repaired {
			return false
		}
	}
	return true
}

// Checker checks consistency.
type Checker struct {
	cat  checkCatalog
	open OpenFunc
	log  *slog.Logger
}

// New returns a checker.
func New(cat checkCatalog, open OpenFunc, log *slog.Logger) *Checker {
	return &Checker{cat: cat, open: open, log: log}
}

// Run checks every repository. With repair it removes orphaned indexes — index files whose
// backup the catalog does not know as successful or committed and whose job is neither queued nor
// running (a failed or deleted backup's leftovers) — and stale temporary files: those of
// writers that died (a crash), which no live process owns.
// Missing indexes and chunks cannot be repaired: they are reported with the backups they break.
// Neither can the indexes of a backup the repository records but the catalog lacks (a catalog
// restored from an older copy, an attach under way, a deletion that could not reach the
// repository): repo attach imports them, and repair leaves them; so does it the indexes of a
// backup the catalog holds in another repository with no copy recorded here (orphan_copy).
func (c *Checker) Run(ctx context.Context, repair bool) (Report, error) {
	var rep Report
	rs, err := c.cat.Repositories(ctx)
	if err != nil {
		return rep, err
	}
	for _, r := range rs {
		if err := c.repository(ctx, r, repair, &rep); err != nil {
			return rep, fmt.Errorf("repository %s: %w", r.Name, err)
		}
	}
	return rep, nil
}

func (c *Checker) repository(ctx context.Context, r catalog.Repository, repair bool, rep *Report) error {
	repo, err := c.open(ctx, r.ID)
	if err != nil {
		return err
	}
	disks, err := c.cat.IndexedDisks(ctx, r.ID)
	if err != nil {
		return err
	}
	// What the catalog expects: every disk result of a successful job, and committed results of
	// running jobs (their index exists before the job ends).
	known := map[repository.IndexRef]catalog.IndexedDisk{}
	for _, d := range disks {
		known[repository.IndexRef{VMUUID: d.InstanceUUID, DiskID: d.DiskID, BackupID: d.JobID}] = d
	}
	onDisk := map[repository.IndexRef]bool{}
	var refs []repository.IndexRef
	if err := repo.WalkIndexes(ctx, func(ref repository.IndexRef) error {
		onDisk[ref] = true
		refs = append(refs, ref)
		return nil
	}); err != nil {
		return err
	}
	rep.Indexes += len(refs)
	for ref, d := range known {
		if d.JobStatus == api.JobSucceeded && !onDisk[ref] {
			rep.Problems = append(rep.Problems, Problem{Repository: r.Name, Kind: "missing_index", BackupID: d.JobID, DiskID: d.DiskID,
				Detail: "the backup is recorded as successful but its index is missing: it cannot be restored"})
		}
	}
	// Orphans are decided against the active jobs read after the walk, and then the catalog's
	// disks read again: an index the walk found belongs to a job that was active then or that
	// committed it before — a job that started meanwhile is active, one that succeeded
	// meanwhile recorded its disk when it committed (before it stopped being active). Either
	// way its fresh index is never taken for an orphan.
	active, err := c.cat.WritingBackupIDs(ctx)
	if err != nil {
		return err
	}
	after, err := c.cat.IndexedDisks(ctx, r.ID)
	if err != nil {
		return err
	}
	for _, d := range after {
		ref := repository.IndexRef{VMUUID: d.InstanceUUID, DiskID: d.DiskID, BackupID: d.JobID}
		if _, ok := known[ref]; !ok && onDisk[ref] {
			known[ref] = d
		}
	}
	missingChunks := map[chunk.Digest][]repository.IndexRef{}
	present := map[chunk.Digest]bool{}
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
	for _, ref := range refs {
		d, isKnown := known[ref]
		if !isKnown && !active[ref.BackupID] {
			p, orphan, err := c.unnamed(ctx, repo, r, ref)
			if err != nil {
				return err
			}
			if repair && orphan {
				if err := repo.RemoveIndex(ctx, ref); err != nil {
					return err
				}
				p.Repaired = true
				c.log.InfoContext(ctx, "removed an orphaned index", "repository", r.Name, "index", ref.String())
			}
			rep.Problems = append(rep.Problems, p)
			continue
		}
		if isKnown && d.JobStatus != api.JobSucceeded {
			continue // a running job's committed disk; checked once the job succeeds
		}
		idx, err := repo.ReadIndex(ctx, ref)
		if err != nil {
			rep.Problems = append(rep.Problems, Problem{Repository: r.Name, Kind: "unreadable_index", BackupID: ref.BackupID, DiskID: ref.DiskID, Detail: err.Error()})
			continue
		}
		for _, dg := range idx.Referenced() {
			if present[dg] {
				continue
			}
			if _, seen := missingChunks[dg]; seen {
				missingChunks[dg] = append(missingChunks[dg], ref)
				continue
			}
			has, err := repo.HasChunk(ctx, dg)
			if err != nil {
				return err
			}
			if has {
				present[dg] = true
			} else {
				missingChunks[dg] = []repository.IndexRef{ref}
			}
		}
	}
	inQuarantine := map[chunk.Digest]string{}
	if err := repo.WalkQuarantine(ctx, func(q repository.Quarantined) error {
		rep.Quarantined = append(rep.Quarantined, Quarantined{Repository: r.Name, Quarantined: q})
		inQuarantine[q.Digest] = q.Key
		return nil
	}); err != nil {
		return err
	}
	for dg, users := range missingChunks {
		detail := fmt.Sprintf("chunk %s is referenced but absent", dg)
		if key, ok := inQuarantine[dg]; ok {
			detail = fmt.Sprintf("chunk %s is referenced but was found damaged and quarantined as %s; the next backup holding its data uploads it again", dg, key)
		}
		for _, u := range users {
			rep.Problems = append(rep.Problems, Problem{Repository: r.Name, Kind: "missing_chunk", BackupID: u.BackupID, DiskID: u.DiskID, Detail: detail})
		}
	}
	n, _, err := repo.Stats(ctx)
	if err != nil {
		return err
	}
	rep.Chunks += int(n)
	stale, err := repo.CleanTemp(ctx, true)
	if err != nil {
		return err
	}
	if stale > 0 {
		p := Problem{Repository: r.Name, Kind: "stale_temp",
			Detail: fmt.Sprintf("%d temporary files of writers that died (wasted space; no data is missing)", stale)}
		if repair {
			removed, err := repo.CleanTemp(ctx, false)
			if err != nil {
				return err
			}
			rep.TempsRemoved += removed
			p.Repaired = true
		}
		rep.Problems = append(rep.Problems, p)
	}
	return nil
}

// kindOrphanCopy is the problem of an index that a copy left behind (unnamed).
const kindOrphanCopy = "orphan_copy"

// unnamed classifies an index that no backup in the catalog names and no running job writes: an
// orphan (a deleted or failed backup's leftover, which repair may remove) when the repository
// holds no record of its backup — a deletion removes the record before the indexes, and a backup
// writes it only once it succeeded — and otherwise a backup the catalog lacks, which is kept.
// A record that cannot be read keeps the index too: repair removes only what is provably
// orphaned. A recorded backup that the catalog holds elsewhere, with no copy recorded here, is
// the leftover of a copy that failed between writing it and recording it, or of a removal that
// could not finish, or a copy that attach did not take for the catalog's restore point (an
// index differs, a chunk is missing): kindOrphanCopy, which repair leaves, as it cannot tell them apart.
func (c *Checker) unnamed(ctx context.Context, repo Repository, r catalog.Repository, ref repository.IndexRef) (_ Problem, orphan bool, _ error) {
	p := Problem{Repository: r.Name, BackupID: ref.BackupID, DiskID: ref.DiskID}
	_, err := repo.ReadBackupRecord(ctx, ref.VMUUID, ref.BackupID)
	switch {
	case errors.Is(err, repository.ErrBackupRecordNotFound):
		p.Kind, p.Detail = "orphan_index", "no backup in the catalog names this index (a deleted or failed backup's leftover)"
		return p, true, nil
	case errors.Is(err, repository.ErrInvalidRef):
		return p, false, err
	case err != nil:
		p.Kind, p.Detail = "orphan_index", fmt.Sprintf("no backup in the catalog names this index, and the repository's record of its backup cannot be read (%v): left in place", err)
		return p, false, nil
	}
	switch row, err := c.cat.BackupByID(ctx, ref.BackupID); {
	case err == nil && row.RepositoryID != r.ID:
		p.Kind, p.Detail = kindOrphanCopy, "the catalog holds this backup in another repository and records no copy of it here: "+
			"the leftover of a copy that failed before it was recorded or of a removal that could not finish, or a copy that "+
			"`sendense-hub repo attach` did not take for the catalog's restore point; the next run of a copy policy into this "+
			"repository records it if it is sound; repair leaves it"
		return p, false, nil
	case err != nil && !errors.Is(err, catalog.ErrNotFound):
		return p, false, err
	}
	p.Kind = "unimported_backup"
	p.Detail = "the repository records this backup as complete but the catalog lacks it (a catalog restored from an older copy, " +
		"an attach under way, or a deletion that could not reach the repository): `sendense-hub repo attach` with this repository's " +
		"name and location imports it, and `sendense-hub backup rm` then removes it if it was deleted; repair leaves it"
	return p, false, nil
}
