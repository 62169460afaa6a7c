package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
)

// ErrRetained is returned (with catalog.ErrConflict) when deleting a backup whose objects are
// immutable (a hardened local repository) or under an S3 Object Lock retention date that has
// not passed: the repository would refuse to remove them, so the catalog keeps the backup too.
var ErrRetained = errors.New("the backup is under retention")

// retainer is a repository that keeps the objects of a backup from removal until a date
// (*repository.Repository on an S3 bucket with Object Lock). A repository without it, or whose
// ObjectLock is "", sets no dates.
type retainer interface {
	// ObjectLock is the retention mode, "" for none; LockPeriod how long a backup is retained.
	ObjectLock() string
	LockPeriod() time.Duration
	// RetainBackup extends (never shortens) the date of every object of the backup to until.
	RetainBackup(ctx context.Context, vmUUID, backupID string, diskIDs []string, until time.Time) (repository.Retained, error)
	// BackupRetainedUntil is the latest date of the backup's indexes (zero: none);
	// BackupRetainedAllUntil the earliest (zero when one has none).
	BackupRetainedUntil(ctx context.Context, vmUUID, backupID string, diskIDs []string) (time.Time, error)
	BackupRetainedAllUntil(ctx context.Context, vmUUID, backupID string, diskIDs []string) (time.Time, error)
}

// hardened is a repository whose files may be immutable (a hardened local repository).
type hardened interface {
	// BackupImmutable reports whether an index of the backup is immutable.
	BackupImmutable(ctx context.Context, vmUUID, backupID string, diskIDs []string) (bool, error)
}

func diskIDs(disks []catalog.BackupDisk) []string {
	ids := make([]string, 0, len(disks))
	for _, d := range disks {
		ids = append(ids, d.DiskID)
	}
	return ids
}

// Retain extends the retention of a successful backup's objects to now plus its repository's
// lock period, in each repository holding it (its own, and those holding its copies) that has
// Object Lock; elsewhere it does nothing. Called when a backup succeeds, when it is protected,
// by every retention run that keeps it and by every copy run that keeps its copy, so that a
// backup kept by retention or protection stays undeletable for at least half the lock period
// after each such run (a backup protected for longer needs a retention run within every half
// period). Where it is retained for more than half the period from now it is left as it is.
func (s *Service) Retain(ctx context.Context, id string) error {
	row, err := s.cat.BackupByID(ctx, id)
	if err != nil {
		return err
	}
	disks, err := s.cat.BackupDisks(ctx, id)
	if err != nil {
		return err
	}
	cps, err := s.cat.BackupCopies(ctx, id)
	if err != nil {
		return err
	}
	for _, repoID := range append([]string{row.RepositoryID}, copyRepos(cps)...) {
		if err := s.retainIn(ctx, row, diskIDs(disks), repoID); err != nil {
			return err
		}
	}
	return nil
}

// RetainCopy is Retain for the copy of a backup in one repository only: a copy run keeping
// the copy extends its retention there, not the backup's where its own policy prunes it.
func (s *Service) RetainCopy(ctx context.Context, id, repoID string) error {
	row, err := s.cat.BackupByID(ctx, id)
	if err != nil {
		return err
	}
	disks, err := s.cat.BackupDisks(ctx, id)
	if err != nil {
		return err
	}
	return s.retainIn(ctx, row, diskIDs(disks), repoID)
}

// retainIn is Retain in one repository holding the backup.
func (s *Service) retainIn(ctx context.Context, row *catalog.BackupRow, disks []string, repoID string) error {
	repo, err := s.open(ctx, repoID)
	if err != nil {
		return fmt.Errorf("retain backup %s: %w", row.ID, err)
	}
	rt, ok := repo.(retainer)
	if !ok || rt.ObjectLock() == "" {
		return nil
	}
	now := s.opts.Now()
	// An index's date is never earlier than its chunks' (RetainBackup sets it last), so a backup
	// whose indexes and VM configuration are all retained for more than half the period needs
	// nothing now: a prune then costs one HEAD per disk of a kept backup and one for its VM
	// configuration, not one per chunk (about 1 ms each against SeaweedFS). One object without
	// the date (a retention cut short, or one a copy's repair wrote again) has it all done again.
	if cur, err := rt.BackupRetainedAllUntil(ctx, row.InstanceUUID, row.ID, disks); err != nil {
		return err
	} else if cur.After(now.Add(rt.LockPeriod() / 2)) {
		return nil
	}
	until := now.Add(rt.LockPeriod())
	got, err := rt.RetainBackup(ctx, row.InstanceUUID, row.ID, disks, until)
	if err != nil {
		return err
	}
	s.log.InfoContext(ctx, "backup retained", "job_id", row.ID, "repository_id", repoID, "mode", rt.ObjectLock(),
		"until", until.UTC().Format(time.RFC3339), "objects", got.Objects, "chunks", got.Chunks)
	return nil
}

// checkNotRetained refuses the deletion of a backup whose indexes are under retention or
// immutable.
func (s *Service) checkNotRetained(ctx context.Context, row *catalog.BackupRow) error {
	repo, err := s.open(ctx, row.RepositoryID)
	if err != nil {
		return fmt.Errorf("backup %s: repository: %w", row.ID, err)
	}
	disks, err := s.cat.BackupDisks(ctx, row.ID)
	if err != nil {
		return err
	}
	if h, ok := repo.(hardened); ok {
		on, err := h.BackupImmutable(ctx, row.InstanceUUID, row.ID, diskIDs(disks))
		if err != nil {
			return err
		}
		if on {
			return fmt.Errorf("backup %s: %w: its files are immutable (hardened repository) until `sendense-hub repo harden`, run as root, releases them after the lock period: %w",
				row.ID, ErrRetained, catalog.ErrConflict)
		}
	}
	rt, ok := repo.(retainer)
	if !ok || rt.ObjectLock() == "" {
		return nil
	}
	until, err := rt.BackupRetainedUntil(ctx, row.InstanceUUID, row.ID, diskIDs(disks))
	if err != nil {
		return err
	}
	if now := s.opts.Now(); until.After(now) {
		return fmt.Errorf("backup %s: %w (S3 object lock, %s mode) until %s; it cannot be deleted before: %w",
			row.ID, ErrRetained, rt.ObjectLock(), until.UTC().Format(time.RFC3339), catalog.ErrConflict)
	}
	return nil
}
