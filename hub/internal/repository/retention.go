package repository

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/sendense/sendense/hub/internal/immutable"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/shared/chunk"
)

// retainer is a store that can keep objects from removal until a date (store/s3 with Object
// Lock). Retain only ever moves a date later; RetainedUntil is zero for an object without one.
type retainer interface {
	Retain(ctx context.Context, key string, until time.Time) error
	RetainedUntil(ctx context.Context, key string) (time.Time, error)
	ObjectLock() string
}

// ObjectLock is the retention mode of the repository's objects ("compliance" or "governance",
// S3 Object Lock), or "" when its store sets no retention dates.
func (r *Repository) ObjectLock() string {
	if rt, ok := r.store.(retainer); ok {
		return rt.ObjectLock()
	}
	return ""
}

// LockPeriod is how long after a backup (or a retention run that keeps it) its objects are
// retained; zero when ObjectLock() is "".
func (r *Repository) LockPeriod() time.Duration {
	if r.ObjectLock() == "" {
		return 0
	}
	return r.lockPeriod
}

// Retained is what RetainBackup did.
type Retained struct {
	Objects int // objects whose date was checked (and moved when earlier)
	Chunks  int // distinct chunks among them
}

// RetainBackup keeps every object of one backup — the indexes of its disks, every chunk they
// name, and its VM configuration when there is one — and the repository's descriptor and key
// slots, which reading any of them needs, from removal until at least until, in a
// repository with Object Lock (ObjectLock() != ""; in any other it does nothing). Dates are
// only ever extended: a chunk that a newer backup shares keeps the later of the two dates. It
// is idempotent, and may be called again with a later date as retention requires. Calls for
// backups that share chunks may run concurrently: a date the server refuses to move earlier
// (another call set a later one first) is read again and kept.
func (r *Repository) RetainBackup(ctx context.Context, vmUUID, backupID string, diskIDs []string, until time.Time) (Retained, error) {
	var out Retained
	rt, ok := r.store.(retainer)
	if !ok || rt.ObjectLock() == "" {
		return out, nil
	}
	retain := func(key string) error {
		err := rt.Retain(ctx, key, until)
		if err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
			err = rt.Retain(ctx, key, until) // a concurrent, later date: read again
		}
		if err == nil {
			out.Objects++
		}
		return err
	}
	// The repository's descriptor and key slots first: without them no retained object can be
	// read (an encrypted repository's chunks could not be decrypted).
	meta := []string{descriptorKey}
	if err := r.store.List(ctx, keyPrefix, func(info store.Info) error {
		meta = append(meta, info.Key)
		return nil
	}); err != nil {
		return out, fmt.Errorf("retain backup %s: list key slots: %w", backupID, err)
	}
	for _, k := range meta {
		if err := retain(k); err != nil && !errors.Is(err, store.ErrNotFound) {
			return out, fmt.Errorf("retain backup %s: %s: %w", backupID, k, err)
		}
	}
	key, err := vmConfigKey(vmUUID, backupID)
	if err != nil {
		return out, fmt.Errorf("retain backup %s: %w", backupID, err)
	}
	if err := retain(key); err != nil && !errors.Is(err, store.ErrNotFound) {
		return out, fmt.Errorf("retain backup %s: vm configuration: %w", backupID, err)
	}
	// Each disk's index after its chunks, and the indexes after everything else: a backup whose
	// indexes all carry a date has every object of it retained to that date at least
	// (BackupRetainedAllUntil).
	seen := map[string]struct{}{}
	for _, disk := range diskIDs {
		ref := IndexRef{VMUUID: vmUUID, DiskID: disk, BackupID: backupID}
		idx, err := r.ReadIndex(ctx, ref)
		if err != nil {
			return out, fmt.Errorf("retain backup %s: %w", backupID, err)
		}
		for _, d := range idx.Referenced() {
			k := r.keyOf(d)
			if _, dup := seen[k]; dup {
				continue
			}
			seen[k] = struct{}{}
			if err := retain(k); err != nil {
				return out, fmt.Errorf("retain backup %s: chunk %s: %w", backupID, d, err)
			}
			out.Chunks++
		}
		// The index last: a backup whose index is retained has every chunk retained.
		if err := retain(indexKey(ref)); err != nil {
			return out, fmt.Errorf("retain backup %s: index %s: %w", backupID, ref, err)
		}
	}
	return out, nil
}

// BackupRetainedUntil returns the latest retention date of the indexes of one backup's disks
// (zero when none has one, or the repository sets none). Until then the backup cannot be
// deleted: its indexes, and the chunks they name, are kept by the store. A missing index is
// skipped.
func (r *Repository) BackupRetainedUntil(ctx context.Context, vmUUID, backupID string, diskIDs []string) (time.Time, error) {
	var latest time.Time
	rt, ok := r.store.(retainer)
	if !ok || rt.ObjectLock() == "" {
		return latest, nil
	}
	for _, disk := range diskIDs {
		ref := IndexRef{VMUUID: vmUUID, DiskID: disk, BackupID: backupID}
		if err := ref.Validate(); err != nil {
			return latest, fmt.Errorf("retention of backup %s: %w", backupID, err)
		}
		t, err := rt.RetainedUntil(ctx, indexKey(ref))
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			return latest, fmt.Errorf("retention of backup %s: %w", backupID, err)
		case t.After(latest):
			latest = t
		}
	}
	return latest, nil
}

// BackupRetainedAllUntil returns the earliest retention date of the indexes of one backup's
// disks and of its VM configuration (when it has one): zero when one of them has none (a
// retention cut short after an earlier disk, or one written again by a copy's repair), so that
// only a backup retained whole is taken for one.
func (r *Repository) BackupRetainedAllUntil(ctx context.Context, vmUUID, backupID string, diskIDs []string) (time.Time, error) {
	var earliest time.Time
	rt, ok := r.store.(retainer)
	if !ok || rt.ObjectLock() == "" {
		return earliest, nil
	}
	for i, disk := range diskIDs {
		ref := IndexRef{VMUUID: vmUUID, DiskID: disk, BackupID: backupID}
		if err := ref.Validate(); err != nil {
			return time.Time{}, fmt.Errorf("retention of backup %s: %w", backupID, err)
		}
		t, err := rt.RetainedUntil(ctx, indexKey(ref))
		switch {
		case errors.Is(err, store.ErrNotFound), err == nil && t.IsZero():
			return time.Time{}, nil
		case err != nil:
			return time.Time{}, fmt.Errorf("retention of backup %s: %w", backupID, err)
		case i == 0 || t.Before(earliest):
			earliest = t
		}
	}
	key, err := vmConfigKey(vmUUID, backupID)
	if err != nil {
		return time.Time{}, fmt.Errorf("retention of backup %s: %w", backupID, err)
	}
	switch t, err := rt.RetainedUntil(ctx, key); {
	case errors.Is(err, store.ErrNotFound): // a backup without a VM configuration
	case err != nil:
		return time.Time{}, fmt.Errorf("retention of backup %s: %w", backupID, err)
	case t.IsZero():
		return time.Time{}, nil
	case len(diskIDs) == 0 || t.Before(earliest):
		earliest = t
	}
	return earliest, nil
}

// localDir is the directory of a local repository; false for any other store.
func (r *Repository) localDir() (string, bool) {
	type dirStore interface{ Dir() string }
	d, ok := r.store.(dirStore)
	if !ok {
		return "", false
	}
	return d.Dir(), true
}

// IndexFile is the file holding the index under ref in a local repository (false for any other).
func (r *Repository) IndexFile(ref IndexRef) (string, bool) {
	dir, ok := r.localDir()
	return filepath.Join(dir, filepath.FromSlash(indexKey(ref))), ok
}

// ChunkFile is the file holding the chunk stored under name (ChunkName of its digest) in a
// local repository (false for any other).
func (r *Repository) ChunkFile(name chunk.Digest) (string, bool) {
	dir, ok := r.localDir()
	return filepath.Join(dir, filepath.FromSlash(chunkKey(name))), ok
}

// BackupImmutable reports whether an index of the backup's disks is immutable (a hardened local
// repository, see package harden): then neither the index nor its chunks can be removed until
// the root helper releases them. Always false for other repositories.
func (r *Repository) BackupImmutable(ctx context.Context, vmUUID, backupID string, diskIDs []string) (bool, error) {
	for _, disk := range diskIDs {
		ref := IndexRef{VMUUID: vmUUID, DiskID: disk, BackupID: backupID}
		if err := ref.Validate(); err != nil {
			return false, fmt.Errorf("backup %s: %w", backupID, err)
		}
		path, ok := r.IndexFile(ref)
		if !ok {
			return false, nil
		}
		on, err := immutable.Is(path)
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, immutable.ErrUnsupported):
			continue
		case err != nil:
			return false, fmt.Errorf("backup %s: %w", backupID, err)
		case on:
			return true, nil
		}
	}
	return false, ctx.Err()
}
