// Package harden is the hardened mode of local repositories. Run as root, apart from the hub
// (sendense-hub repo harden, from a systemd timer or after each backup), it makes the indexes
// of recent and protected backups, and every chunk they name, immutable (chattr +i): the hub's
// own user — and root, until it clears the attribute — can then neither remove nor overwrite
// them, whatever the API is asked or a bug or an intruder in the hub process does. It releases
// (clears the attribute of) indexes older than the lock period whose backup is not protected,
// and chunks no immutable index names, so that prune, delete and garbage collection, which run
// as the hub's user, can remove them.
//
// What it does not protect against: root on the hub host (who can clear the attribute, or
// reformat the disk), someone with the disk itself, and the time between a backup and the next
// run of the helper (the new index and chunks are still writable by the hub's user). The dates
// it judges by are the index files' modification times, which an immutable file keeps; the
// protection flags it reads from the catalog can only add protection, never remove the lock
// period's.
package harden

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/immutable"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/chunk"
)

// Catalog lists a repository's backups with their protection.
type Catalog interface {
	Backups(ctx context.Context, f catalog.BackupFilter) ([]catalog.BackupRow, int, error)
}

// Repository is what the helper reads of a local repository (*repository.Repository).
type Repository interface {
	WalkIndexes(ctx context.Context, fn func(ref repository.IndexRef) error) error
	ReadIndex(ctx context.Context, ref repository.IndexRef) (*fidx.Index, error)
	ChunkName(d chunk.Digest) chunk.Digest
	IndexFile(ref repository.IndexRef) (string, bool)
	ChunkFile(name chunk.Digest) (string, bool)
}

// Options of one run.
type Options struct {
	RepositoryID string
	// LockPeriod: an index stays immutable this long after it was written (and for ever while
	// its backup is protected).
	LockPeriod time.Duration
	Now        time.Time // judging time; zero: time.Now()
	DryRun     bool      // count what would change, change nothing
}

// Report is what one run found and did.
type Report struct {
	Indexes, Chunks   int // immutable after the run
	HardenedIndexes   int // made immutable by this run
	HardenedChunks    int
	ReleasedIndexes   int // released by this run
	ReleasedChunks    int
	ProtectedIndexes  int // kept immutable because their backup is protected (beyond the lock period)
	UnreadableIndexes int // kept immutable, and no chunk released, because they cannot be read
	DryRun            bool
}

// Run hardens and releases the files of one local repository as the package comment says.
// It needs CAP_LINUX_IMMUTABLE and a file system with the attribute (immutable.ErrUnsupported
// otherwise, before anything changed).
func Run(ctx context.Context, repo Repository, cat Catalog, o Options, log *slog.Logger) (Report, error) {
	rep := Report{DryRun: o.DryRun}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	rows, _, err := cat.Backups(ctx, catalog.BackupFilter{RepositoryID: o.RepositoryID})
	if err != nil {
		return rep, err
	}
	protected := map[string]bool{}
	for _, r := range rows {
		if r.Protected {
			protected[r.ID] = true
		}
	}
	type file struct {
		path string
		keep bool
	}
	var indexes []file
	keepChunks := map[chunk.Digest]struct{}{}
	err = repo.WalkIndexes(ctx, func(ref repository.IndexRef) error {
		path, ok := repo.IndexFile(ref)
		if !ok {
			return errors.New("not a local repository: hardened mode is for local repositories (S3 ones use Object Lock)")
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return fmt.Errorf("index %s: %w", ref, err)
		}
		recent := now.Sub(fi.ModTime()) < o.LockPeriod
		keep := recent || protected[ref.BackupID]
		if keep && !recent {
			rep.ProtectedIndexes++
		}
		idx, err := repo.ReadIndex(ctx, ref)
		if err != nil {
			// What it names is unknown: it stays immutable, and no chunk is released.
			log.ErrorContext(ctx, "index cannot be read; it stays immutable and no chunk is released", "index", ref.String(), "err", err)
			rep.UnreadableIndexes++
			keep = true
		} else if keep {
			for _, d := range idx.Referenced() {
				keepChunks[repo.ChunkName(d)] = struct{}{}
			}
		}
		indexes = append(indexes, file{path, keep})
		return nil
	})
	if err != nil {
		return rep, err
	}
	// chunks/ab/cd/<name>: the chunk directory is three levels above any chunk's file, and the
	// repository's one above it.
	p, ok := repo.ChunkFile(chunk.Digest{})
	if !ok {
		return rep, errors.New("not a local repository: hardened mode is for local repositories (S3 ones use Object Lock)")
	}
	chunkDir := filepath.Dir(filepath.Dir(filepath.Dir(p)))
	root := filepath.Dir(chunkDir)
	set := func(path string, on bool) (bool, error) {
		was, err := immutable.Is(path)
		if err != nil || was == on {
			return false, err
		}
		if o.DryRun {
			return true, nil
		}
		return true, immutable.Set(root, path, on)
	}
	// Chunks first, then indexes: an immutable index always names immutable chunks.
	for name := range keepChunks {
		path, _ := repo.ChunkFile(name)
		changed, err := set(path, true)
		if errors.Is(err, fs.ErrNotExist) {
			log.WarnContext(ctx, "chunk named by an index is missing", "chunk_name", name.String())
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("harden chunk %s: %w", name, err)
		}
		rep.Chunks++
		if changed {
			rep.HardenedChunks++
		}
	}
	for _, f := range indexes {
		changed, err := set(f.path, f.keep)
		if err != nil {
			return rep, fmt.Errorf("index %s: %w", f.path, err)
		}
		if f.keep {
			rep.Indexes++
			if changed {
				rep.HardenedIndexes++
			}
		} else if changed {
			rep.ReleasedIndexes++
			log.InfoContext(ctx, "index released", "path", f.path)
		}
	}
	if rep.UnreadableIndexes > 0 {
		return rep, nil
	}
	// Release immutable chunks no kept index names. Their time becomes now, so that garbage
	// collection's grace period covers a backup that reuses one meanwhile.
	err = filepath.WalkDir(chunkDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || ctx.Err() != nil {
			return ctx.Err()
		}
		name, err := chunk.ParseDigest(d.Name())
		if err != nil {
			return nil // not a chunk
		}
		if _, keep := keepChunks[name]; keep {
			return nil
		}
		changed, err := set(path, false)
		if err != nil {
			return fmt.Errorf("release chunk %s: %w", name, err)
		}
		if changed {
			rep.ReleasedChunks++
			if !o.DryRun {
				t := time.Now()
				if err := os.Chtimes(path, t, t); err != nil {
					return fmt.Errorf("release chunk %s: %w", name, err)
				}
			}
		}
		return nil
	})
	return rep, err
}
