// Package local is the blob store of a repository in a local directory (or a network file system
// mounted like one): each object is a read-only file whose path is its key.
//
// Layout under the directory, besides the objects:
//
//	tmp/<instance>/lock        held (flock) by the process that uses tmp/<instance>/ for its
//	                           temp files; a directory whose lock can be taken is a dead
//	                           process's and is cleaned up (see CleanTemp)
//	tmp/<instance>/put-*       a Put in progress: written, fsynced, then renamed into place
//	tmp/<instance>/aside/<key>~<n> an object RemoveIfOlder has renamed aside while it decides,
//	                           or Rename while it links the object under its new key
//	locks/<name>               the files of Lock
//
// tmp and locks are therefore not valid first key components.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sendense/sendense/hub/internal/directio"
	"github.com/sendense/sendense/hub/internal/immutable"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/shared/atomicfile"
	"golang.org/x/sys/unix"
)

var _ store.Store = (*Store)(nil)

// Permissions of stored files and directories. Objects are never modified in place, so their
// files are read-only; removing or replacing them only needs write access to their directory.
const (
	dirPerm  = 0o750
	filePerm = 0o440
)

// legacyTempAge is the age after which a temp file directly in tmp/ counts as abandoned. Hubs
// before per-instance temp directories wrote there, and whether their writer still lives cannot
// be told; no write takes an hour.
const legacyTempAge = time.Hour

// modTimeSlack covers file systems that store times in units of up to 2 s: Touch accepts a
// stored time this much before the time it set.
const modTimeSlack = 2 * time.Second

// Store is a blob store in a local directory. It is safe for concurrent use, also by other
// processes that open the same directory, with the guarantees of store.Store.
type Store struct {
	root string
	log  *slog.Logger

	mu    sync.Mutex
	tmp   string                // tmp/<instance>, this instance's temp directory
	locks []*os.File            // flock'd lock files of tmp directories this instance created
	held  map[*os.File]struct{} // files of locks taken with Lock and not yet released

	// dirs holds directories known to exist durably (entry fsynced in its parent), so that a
	// Put into a known directory costs no mkdir and no directory fsync.
	dirs sync.Map
	// deferredDirs holds directories PutDeferred created or found, not known durable: each was
	// entered in pending when first met, so that the next SyncOwn or Sync makes its entry
	// durable with the files put into it (see ensureDirDeferredOnce).
	deferredDirs sync.Map

	seq atomic.Uint64 // numbers aside files

	// pending tracks the files of deferred puts not yet synced, for SyncOwn.
	pending pendingFiles
	// fsync and syncfs make a file (or directory) and the whole file system durable; tests
	// replace them to record calls.
	fsync  func(path string) error
	syncfs func(root string) error
	// dirSync makes a new directory's entry durable (its parent fsynced) when a Put creates it.
	dirSync func(dir string) error
}

// Bounds of SyncOwn. pendingMax files and new directories (16 GiB of 4 MiB chunks even when
// each makes its own directory, about 1 MiB of paths) are tracked; a store that wrote more since
// its last sync falls back to one syncfs, which by then costs about the same. syncWorkers fsyncs
// run at once: a journaling file system commits concurrent fsyncs together, and a few in flight
// keep its queue busy without a thread per file.
const (
	pendingMax  = 8192
	syncWorkers = 4
)

// pendingFiles is the set of files this Store put deferred since they were last synced, and of
// the directories it made or found for them and does not know durable.
type pendingFiles struct {
	syncMu sync.Mutex // serializes SyncOwn and Sync: a file leaves the set only once durable

	mu       sync.Mutex
	max      int // pendingMax; tests lower it
	files    map[string]struct{}
	overflow bool // more than max files, or a failed sync: SyncOwn must use syncfs
}

// add records a file written deferred.
func (p *pendingFiles) add(path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.overflow {
		return
	}
	if len(p.files) >= p.max {
		p.overflow, p.files = true, nil
		return
	}
	if p.files == nil {
		p.files = map[string]struct{}{}
	}
	p.files[path] = struct{}{}
}

// take empties the set and returns what it held.
func (p *pendingFiles) take() (files map[string]struct{}, overflow bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	files, overflow = p.files, p.overflow
	p.files, p.overflow = nil, false
	return files, overflow
}

// failed marks the set unknown after a failed sync: the next sync is a syncfs.
func (p *pendingFiles) failed() {
	p.mu.Lock()
	p.overflow, p.files = true, nil
	p.mu.Unlock()
}

// Create makes dir (and its parents) if missing and opens the store there.
func Create(ctx context.Context, dir string, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("create store directory: %w", err)
	}
	return Open(ctx, dir, log)
}

// Open opens the store in the existing directory dir. It creates this instance's temp
// directory and cleans up the temp files of dead instances (CleanTemp), logging what it did.
func Open(ctx context.Context, dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open store: %w", &fs.PathError{Op: "open", Path: dir, Err: syscall.ENOTDIR})
	}
	s := &Store{root: dir, log: log, held: map[*os.File]struct{}{}, fsync: fsyncPath, syncfs: syncfsPath, dirSync: atomicfile.SyncDir}
	s.pending.max = pendingMax
	if err := s.newTempDir(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	n, err := s.CleanTemp(ctx, false)
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if n > 0 {
		log.InfoContext(ctx, "removed temp files of dead writers", "dir", dir, "files", n)
	}
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.root }

// Close removes this instance's temp directory and releases its locks.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := os.RemoveAll(s.tmp)
	for _, f := range s.locks {
		err = errors.Join(err, f.Close())
	}
	s.locks = nil
	for f := range s.held {
		err = errors.Join(err, f.Close())
	}
	clear(s.held)
	return err
}

// newTempDir creates a temp directory for this instance and takes its lock. It is built under a
// dot name, which cleaners ignore, and renamed into place only once locked: a cleaner never sees
// a live instance's directory unlocked.
func (s *Store) newTempDir() error {
	tmpRoot := filepath.Join(s.root, "tmp")
	if err := os.MkdirAll(tmpRoot, dirPerm); err != nil {
		return fmt.Errorf("create temp directory: %w", err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	name := "i-" + hex.EncodeToString(id[:])
	building := filepath.Join(tmpRoot, "."+name)
	if err := os.Mkdir(building, dirPerm); err != nil {
		return fmt.Errorf("create temp directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(building, "lock"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("create temp directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return fmt.Errorf("lock temp directory: %w", err)
	}
	final := filepath.Join(tmpRoot, name)
	if err := os.Rename(building, final); err != nil {
		_ = f.Close()
		return fmt.Errorf("create temp directory: %w", err)
	}
	s.tmp = final
	s.locks = append(s.locks, f)
	return nil
}

// tempDir returns this instance's temp directory, recreating it (under a new name) when someone
// removed it.
func (s *Store) tempDir() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(filepath.Join(s.tmp, "lock")); err == nil {
		return s.tmp, nil
	}
	if err := s.newTempDir(); err != nil {
		return "", err
	}
	return s.tmp, nil
}

// path maps a key to its file.
func (s *Store) path(key string) (string, error) {
	if err := store.CheckKey(key); err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(key, "/")
	if first == "tmp" || first == "locks" {
		return "", fmt.Errorf("%w: %q: %s/ is reserved", store.ErrInvalidKey, key, first)
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put implements store.Store: temp file in this instance's temp directory → write (direct I/O
// when possible) → fsync → rename into place → fsync the directory.
func (s *Store) Put(ctx context.Context, key string, data []byte) (err error) {
	path, err := s.path(key)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	tmp, err := s.writeTemp(data)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := s.renameInto(tmp, path); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// PutDeferred implements store.Deferrer: Put without the fsync of the file, of its directory
// and of new directories on the way, all of which the next SyncOwn or Sync makes durable. (In a
// new repository nearly every chunk makes a directory of its own: thousands of directory fsyncs,
// each a journal commit, while chunks arrive.)
func (s *Store) PutDeferred(ctx context.Context, key string, data []byte) (err error) {
	path, err := s.path(key)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	tmp, err := s.writeTempNoSync(data)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := s.renameIntoNoSync(tmp, path, s.ensureDirDeferredOnce); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("put %s: %w", key, err)
	}
	s.pending.add(path)
	return nil
}

// Sync implements store.Deferrer with syncfs(2) on the store's file system: every dirty file and
// directory of that file system, whoever wrote it, is on stable storage when it returns.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	s.pending.syncMu.Lock()
	defer s.pending.syncMu.Unlock()
	// What was pending before the syncfs is durable after it.
	_, _ = s.pending.take()
	if err := s.syncfs(s.root); err != nil {
		s.pending.failed()
		return fmt.Errorf("sync store %s: %w", s.root, err)
	}
	return nil
}

// SyncOwn implements store.Deferrer: it fsyncs the files this Store put deferred since they
// were last synced, the directories it made for them, and the directories holding each of
// those, a few at a time, and nothing else, so it does not wait for other programs' writes to
// the same file system as syncfs does. Beyond pendingMax entries, or after a failed sync, it is
// Sync. Concurrent calls run one after the other, so that each returns only once every file put
// before it was called is durable.
func (s *Store) SyncOwn(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	s.pending.syncMu.Lock()
	defer s.pending.syncMu.Unlock()
	files, overflow := s.pending.take()
	if overflow {
		if err := s.syncfs(s.root); err != nil {
			s.pending.failed()
			return fmt.Errorf("sync store %s: %w", s.root, err)
		}
		return nil
	}
	if len(files) == 0 {
		return nil
	}
	// Each entry and its directory, once: a directory made for a file is also an entry.
	paths := make([]string, 0, 2*len(files))
	seen := make(map[string]struct{}, 2*len(files))
	for f := range files {
		for _, p := range [2]string{f, filepath.Dir(f)} {
			if _, ok := seen[p]; !ok {
				seen[p] = struct{}{}
				paths = append(paths, p)
			}
		}
	}
	if err := s.fsyncAll(ctx, paths); err != nil {
		s.pending.failed()
		return fmt.Errorf("sync store %s: %w", s.root, err)
	}
	return nil
}

// fsyncAll fsyncs paths with syncWorkers workers. A path that no longer exists is skipped: the
// object was removed (garbage collection, quarantine) and needs no durability.
func (s *Store) fsyncAll(ctx context.Context, paths []string) error {
	work := make(chan string)
	errs := make(chan error, syncWorkers)
	var wg sync.WaitGroup
	for range min(syncWorkers, len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var first error
			for p := range work {
				if first != nil {
					continue
				}
				if err := s.fsync(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					first = err
				}
			}
			errs <- first
		}()
	}
	var err error
send:
	for _, p := range paths {
		select {
		case work <- p:
		case <-ctx.Done():
			err = ctx.Err()
			break send
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	for e := range errs {
		err = errors.Join(err, e)
	}
	return err
}

// fsyncPath opens path (a file or a directory) read-only and fsyncs it.
func fsyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// syncfsPath runs syncfs(2) on the file system holding root.
func syncfsPath(root string) error {
	f, err := os.Open(root)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// renameInto renames file to path, creating path's directories durably, and makes the rename
// durable. A Remove may prune a directory between its creation and the rename; then it is
// created again.
func (s *Store) renameInto(file, path string) error {
	if err := s.renameIntoNoSync(file, path, s.ensureDirOnce); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// renameIntoNoSync is renameInto without making the rename durable; ensureOnce makes the
// directories on the way (ensureDirOnce durably, ensureDirDeferredOnce for the next sync).
func (s *Store) renameIntoNoSync(file, path string, ensureOnce func(dir string) error) error {
	dir := filepath.Dir(path)
	for attempt := 0; ; attempt++ {
		if err := s.ensureDirWith(dir, ensureOnce); err != nil {
			return err
		}
		err := os.Rename(file, path)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 10 {
			return fmt.Errorf("rename into place: %w", err)
		}
		if _, serr := os.Lstat(file); serr != nil {
			return fmt.Errorf("rename into place: %w", err)
		}
		s.forgetDirs(dir)
	}
	return nil
}

// writeTemp writes data to a new read-only file in the temp directory, fsyncs and closes it,
// and returns its path.
func (s *Store) writeTemp(data []byte) (path string, err error) { return s.writeTempFile(data, true) }

// writeTempNoSync is writeTemp without the fsync.
func (s *Store) writeTempNoSync(data []byte) (path string, err error) {
	return s.writeTempFile(data, false)
}

func (s *Store) writeTempFile(data []byte, sync bool) (path string, err error) {
	dir, err := s.tempDir()
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "put-*")
	if err != nil {
		return "", fmt.Errorf("create temp file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := directio.WriteAt(f, data, 0); err != nil {
		return "", fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(filePerm); err != nil {
		return "", fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return "", fmt.Errorf("fsync %s: %w", f.Name(), err)
		}
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

// ensureDir makes dir and every directory between the root and it exist durably. The parent of
// each is fsynced even when the directory existed already: another writer may have created it
// and not yet made its entry durable, and an object must not be reported durable before its
// whole path is.
// A Remove in any process may prune a directory meanwhile; then the path is created again.
func (s *Store) ensureDir(dir string) error { return s.ensureDirWith(dir, s.ensureDirOnce) }

// ensureDirWith runs once (ensureDirOnce or ensureDirDeferredOnce) until no directory on the way
// is pruned meanwhile.
func (s *Store) ensureDirWith(dir string, once func(dir string) error) error {
	for attempt := 0; ; attempt++ {
		err := once(dir)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || attempt == 10 {
			return err
		}
		s.forgetDirs(dir)
	}
}

func (s *Store) ensureDirOnce(dir string) error {
	if _, ok := s.dirs.Load(dir); ok || dir == s.root {
		return nil
	}
	if err := s.ensureDirOnce(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create directory: %w", err)
	}
	if err := s.dirSync(filepath.Dir(dir)); err != nil {
		return err
	}
	s.dirs.Store(dir, struct{}{})
	return nil
}

// ensureDirDeferredOnce makes dir and the directories between the root and it exist, like
// ensureDirOnce, but leaves their entries to the next sync: each one not known durable is
// entered in pending once, whose SyncOwn fsyncs it and its parent (and Sync the whole file
// system), before the files put into it are reported durable. It is entered before it is
// remembered, so that a put that finds it remembered knows the next sync covers it — or, when
// a sync that took it is still running, the one after, which waits for it (syncMu) and is a
// syncfs if it failed.
func (s *Store) ensureDirDeferredOnce(dir string) error {
	if dir == s.root {
		return nil
	}
	if _, ok := s.dirs.Load(dir); ok {
		return nil
	}
	if _, ok := s.deferredDirs.Load(dir); ok {
		return nil
	}
	if err := s.ensureDirDeferredOnce(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create directory: %w", err)
	}
	s.pending.add(dir)
	s.deferredDirs.Store(dir, struct{}{})
	return nil
}

// forgetDirs drops dir and its parents from the known directories.
func (s *Store) forgetDirs(dir string) {
	for ; dir != s.root && len(dir) > len(s.root); dir = filepath.Dir(dir) {
		s.dirs.Delete(dir)
		s.deferredDirs.Delete(dir)
	}
}

// Prefetch implements store.Prefetcher: it asks the kernel to read the object's file into the
// page cache (POSIX_FADV_WILLNEED), which queues the reads and returns. Chunks are written with
// direct I/O and are not in the page cache when a restore reads them.
func (s *Store) Prefetch(key string) {
	path, err := s.path(key)
	if err != nil {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_WILLNEED)
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string, dst []byte, limit int64) ([]byte, error) {
	path, err := s.path(key)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("get %s: not a regular file", key)
	}
	size := fi.Size()
	if limit > 0 && size > limit {
		return nil, fmt.Errorf("get %s: %w: %d bytes, limit %d", key, store.ErrTooLarge, size, limit)
	}
	if int64(cap(dst)) < size {
		dst = make([]byte, size)
	}
	dst = dst[:size]
	if _, err := io.ReadFull(f, dst); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return dst, nil
}

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, key string) (store.Info, error) {
	path, err := s.path(key)
	if err != nil {
		return store.Info{}, fmt.Errorf("stat: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return store.Info{}, fmt.Errorf("stat %s: %w", key, err)
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return store.Info{}, fmt.Errorf("stat %s: %w", key, store.ErrNotFound)
	case err != nil:
		return store.Info{}, fmt.Errorf("stat %s: %w", key, err)
	case !fi.Mode().IsRegular():
		return store.Info{}, fmt.Errorf("stat %s: not a regular file", key)
	}
	return store.Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List implements store.Store. Directories are read in sorted order with a directory's name
// compared as name+"/", which yields the keys in ascending byte order. Files whose names are
// not valid key components (dot files, crash leftovers) are skipped.
func (s *Store) List(ctx context.Context, prefix string, fn func(store.Info) error) error {
	dir := prefix[:strings.LastIndex(prefix, "/")+1]
	var fnErr error
	err := s.list(ctx, dir, prefix[len(dir):], func(info store.Info) error {
		fnErr = fn(info)
		return fnErr
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	return nil
}

type entry struct {
	sortKey string
	e       os.DirEntry
}

func (s *Store) list(ctx context.Context, dir, namePrefix string, fn func(store.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	es, err := os.ReadDir(filepath.Join(s.root, filepath.FromSlash(dir)))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // removed meanwhile, or a prefix naming no directory
	}
	if err != nil {
		return err
	}
	sorted := make([]entry, 0, len(es))
	for _, e := range es {
		name := e.Name()
		if !strings.HasPrefix(name, namePrefix) || name[0] == '.' || dir == "" && (name == "tmp" || name == "locks") {
			continue
		}
		if e.IsDir() {
			sorted = append(sorted, entry{name + "/", e})
		} else if e.Type().IsRegular() {
			sorted = append(sorted, entry{name, e})
		}
	}
	slices.SortFunc(sorted, func(a, b entry) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, x := range sorted {
		if x.e.IsDir() {
			if err := s.list(ctx, dir+x.sortKey, "", fn); err != nil {
				return err
			}
			continue
		}
		key := dir + x.sortKey
		if store.CheckKey(key) != nil {
			continue
		}
		fi, err := x.e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the directory was read
		}
		if err != nil {
			return err
		}
		if err := fn(store.Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// Touch implements store.Store. After setting the time it checks that the key still names an
// object as new as that: RemoveIfOlder may have renamed the file aside between Chtimes' lookup
// of the path and its update of the time, and then decides on the aside file with a time it read
// before the update. If the key names nothing then, Touch reports ErrNotFound; if it names
// another file (put or restored meanwhile) that is older, Touch touches that one.
func (s *Store) Touch(ctx context.Context, key string) error {
	path, err := s.path(key)
	if err != nil {
		return fmt.Errorf("touch: %w", err)
	}
	for range 10 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("touch %s: %w", key, err)
		}
		now := time.Now()
		if err := os.Chtimes(path, now, now); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("touch %s: %w", key, store.ErrNotFound)
		} else if hardened(path, err) {
			return nil // nothing can remove it, so it needs no fresh time
		} else if err != nil {
			return fmt.Errorf("touch %s: %w", key, err)
		}
		fi, err := os.Lstat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("touch %s: %w", key, store.ErrNotFound)
		case err != nil:
			return fmt.Errorf("touch %s: %w", key, err)
		case !fi.Mode().IsRegular():
			return fmt.Errorf("touch %s: not a regular file", key)
		}
		if !fi.ModTime().Before(now.Add(-modTimeSlack)) {
			return nil
		}
	}
	return fmt.Errorf("touch %s: replaced by older objects ten times in a row", key)
}

// RemoveIfOlder implements store.Store.
//
// Checking the time and then deleting would let a Touch from another process land in between
// and be lost. Instead the file is first renamed aside, into this instance's temp directory: from
// that moment no Touch can reach it (a Touch that comes later finds no object and its caller puts
// the object again, which is safe), so the time read after the rename is final, except for a
// Touch that looked the path up before the rename, which Touch itself detects (see Touch). An
// aside file still older than cutoff is deleted; a newer one goes back under its key, unless a
// new object was put there meanwhile. A crash between the rename and the decision leaves the
// file aside in a temp directory whose lock dies with the process; the next Open of the store
// puts it back (CleanTemp), so a crash never removes an object it should not have.
func (s *Store) RemoveIfOlder(ctx context.Context, key string, cutoff time.Time) (bool, int64, error) {
	path, err := s.path(key)
	if err != nil {
		return false, 0, fmt.Errorf("remove: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return false, 0, fmt.Errorf("remove %s: %w", key, err)
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, 0, nil
	case err != nil:
		return false, 0, fmt.Errorf("remove %s: %w", key, err)
	case !fi.Mode().IsRegular():
		return false, 0, fmt.Errorf("remove %s: not a regular file", key)
	case !fi.ModTime().Before(cutoff):
		return false, 0, nil
	}
	tmp, err := s.tempDir()
	if err != nil {
		return false, 0, fmt.Errorf("remove %s: %w", key, err)
	}
	// A suffix per call keeps two removals of one key from sharing an aside file.
	aside := filepath.Join(tmp, "aside", filepath.FromSlash(key)+"~"+strconv.FormatUint(s.seq.Add(1), 10))
	if err := s.ensureDir(filepath.Dir(aside)); err != nil {
		return false, 0, fmt.Errorf("remove %s: %w", key, err)
	}
	if err := os.Rename(path, aside); errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil // removed meanwhile
	} else if hardened(path, err) {
		return false, 0, fmt.Errorf("remove %s: %w", key, errRetained)
	} else if err != nil {
		return false, 0, fmt.Errorf("remove %s: %w", key, err)
	}
	if fi, err = os.Lstat(aside); err != nil {
		return false, 0, fmt.Errorf("remove %s: %w", key, errors.Join(err, s.restore(aside, path)))
	}
	if !fi.ModTime().Before(cutoff) {
		if err := s.restore(aside, path); err != nil {
			return false, 0, fmt.Errorf("remove %s: put back a touched object: %w", key, err)
		}
		return false, 0, nil
	}
	if err := os.Remove(aside); err != nil {
		return false, 0, fmt.Errorf("remove %s: %w", key, errors.Join(err, s.restore(aside, path)))
	}
	if err := errors.Join(syncDir(filepath.Dir(path)), syncDir(filepath.Dir(aside))); err != nil {
		return false, 0, fmt.Errorf("remove %s: %w", key, err)
	}
	return true, fi.Size(), nil
}

// restore puts the aside file back at path unless a new object took path meanwhile (the newer
// object wins: it was put after the aside one). A hard link refuses to replace; on file
// systems without hard links a check then a rename does the same, with a window in which a
// concurrent Put of the key can be replaced by the aside object, whose content the key also
// names.
func (s *Store) restore(aside, path string) error {
	if err := s.ensureDir(filepath.Dir(path)); err != nil {
		return err
	}
	err := os.Link(aside, path)
	switch {
	case err == nil || errors.Is(err, fs.ErrExist):
		if err := os.Remove(aside); err != nil {
			return err
		}
	default:
		if _, serr := os.Lstat(path); serr == nil {
			return os.Remove(aside)
		}
		if err := s.renameInto(aside, path); err != nil {
			return err
		}
	}
	return syncDir(filepath.Dir(path))
}

// Remove implements store.Store. Directories it leaves empty are removed too (never a top-level
// one), so that listings stay fast; a Put racing with that creates its directory again.
func (s *Store) Remove(ctx context.Context, key string) error {
	path, err := s.path(key)
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	fi, err := os.Lstat(path)
	if err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("remove %s: not a regular file", key)
	}
	if err := os.Remove(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", key, store.ErrNotFound)
	} else if hardened(path, err) {
		return fmt.Errorf("remove %s: %w", key, errRetained)
	} else if err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	dir := filepath.Dir(path)
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	for depth := strings.Count(key, "/"); depth > 1; depth-- {
		s.dirs.Delete(dir)
		s.deferredDirs.Delete(dir)
		if os.Remove(dir) != nil {
			break // not empty, or removed by someone else
		}
		dir = filepath.Dir(dir)
	}
	return nil
}

// Rename implements store.Store. The object is first renamed aside into this instance's temp
// directory, which takes whichever file is under from at that instant and makes concurrent
// Renames of from find nothing; it is then hard-linked under to, which refuses to replace an
// existing file, and the aside name removed. A crash in between leaves the file aside in a temp
// directory whose lock dies with the process, and the next Open of the store puts it back under
// from (CleanTemp). On file systems without hard links a check then a rename does the same,
// with a window in which a Put of to can be replaced by the moved object.
func (s *Store) Rename(ctx context.Context, from, to string) error {
	src, err := s.path(from)
	if err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	dst, err := s.path(to)
	if err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rename %s: %w", from, err)
	}
	fi, err := os.Lstat(src)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("rename %s: %w", from, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("rename %s: %w", from, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("rename %s: not a regular file", from)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("rename %s to %s: %w", from, to, store.ErrExists)
	}
	tmp, err := s.tempDir()
	if err != nil {
		return fmt.Errorf("rename %s: %w", from, err)
	}
	aside := filepath.Join(tmp, "aside", filepath.FromSlash(from)+"~"+strconv.FormatUint(s.seq.Add(1), 10))
	if err := s.ensureDir(filepath.Dir(aside)); err != nil {
		return fmt.Errorf("rename %s: %w", from, err)
	}
	if err := os.Rename(src, aside); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rename %s: %w", from, store.ErrNotFound) // moved or removed meanwhile
	} else if hardened(src, err) {
		return fmt.Errorf("rename %s: %w", from, errRetained)
	} else if err != nil {
		return fmt.Errorf("rename %s: %w", from, err)
	}
	if err := s.ensureDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("rename %s: %w", from, errors.Join(err, s.restore(aside, src)))
	}
	err = os.Link(aside, dst)
	switch {
	case err == nil:
		err = os.Remove(aside)
	case errors.Is(err, fs.ErrExist):
		if err := s.restore(aside, src); err != nil {
			return fmt.Errorf("rename %s: put back: %w", from, err)
		}
		return fmt.Errorf("rename %s to %s: %w", from, to, store.ErrExists)
	default:
		if _, serr := os.Lstat(dst); serr == nil {
			if err := s.restore(aside, src); err != nil {
				return fmt.Errorf("rename %s: put back: %w", from, err)
			}
			return fmt.Errorf("rename %s to %s: %w", from, to, store.ErrExists)
		}
		err = os.Rename(aside, dst)
	}
	if err != nil {
		return fmt.Errorf("rename %s: %w", from, errors.Join(err, s.restore(aside, src)))
	}
	if err := errors.Join(syncDir(filepath.Dir(dst)), syncDir(filepath.Dir(src)), syncDir(filepath.Dir(aside))); err != nil {
		return fmt.Errorf("rename %s: %w", from, err)
	}
	// The object may have been put deferred and not synced yet (a chunk quarantined and put
	// back): its content is now made durable under its new path by the next SyncOwn.
	s.pending.add(dst)
	return nil
}

// Lock implements store.Store with flock(2) on locks/<name>. flock locks belong to the open
// file, so two opens of the lock in one process exclude each other like two processes do.
func (s *Store) Lock(ctx context.Context, name string) (release func() error, err error) {
	if err := store.CheckName(name); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	dir := filepath.Join(s.root, "locks")
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", name, store.ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	s.mu.Lock()
	s.held[f] = struct{}{}
	s.mu.Unlock()
	return func() error {
		s.mu.Lock()
		_, ok := s.held[f]
		delete(s.held, f)
		s.mu.Unlock()
		if !ok {
			return fs.ErrClosed
		}
		return f.Close()
	}, nil
}

// CleanTemp removes the temp files of dead instances: the temp directories in tmp/ whose lock
// it can take (their process ended, cleanly or not), and files directly in tmp/ older than an
// hour (written by hubs before per-instance temp directories). Objects that a dead instance's
// RemoveIfOlder had renamed aside are put back under their keys, unless a new object took the
// key. Temp directories of live instances are left alone, so this is safe while other processes
// write to the store. It returns how many temp files it found; with dryRun it only counts them
// (aside objects are not counted: they are put back, not removed).
func (s *Store) CleanTemp(ctx context.Context, dryRun bool) (int, error) {
	tmpRoot := filepath.Join(s.root, "tmp")
	es, err := os.ReadDir(tmpRoot)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("clean temp files: %w", err)
	}
	s.mu.Lock()
	mine := filepath.Base(s.tmp)
	s.mu.Unlock()
	n := 0
	for _, e := range es {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("clean temp files: %w", err)
		}
		p := filepath.Join(tmpRoot, e.Name())
		switch {
		case e.Name() == mine:
		case e.Type().IsRegular():
			fi, err := e.Info()
			if err != nil || time.Since(fi.ModTime()) < legacyTempAge {
				continue
			}
			n++
			if !dryRun {
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return n, fmt.Errorf("clean temp files: %w", err)
				}
			}
		case e.IsDir() && strings.HasPrefix(e.Name(), "."):
			// A directory being built, or left by an instance that died building it.
			fi, err := e.Info()
			if err != nil || time.Since(fi.ModTime()) < legacyTempAge || dryRun {
				continue
			}
			_ = os.RemoveAll(p)
		case e.IsDir():
			c, err := s.cleanDead(p, dryRun)
			n += c
			if err != nil {
				return n, fmt.Errorf("clean temp files: %w", err)
			}
		}
	}
	return n, nil
}

// cleanDead cleans up the temp directory dir if its instance is dead: it puts aside objects
// back, then removes the directory. It returns the number of temp files (not aside objects) it
// found.
func (s *Store) cleanDead(dir string, dryRun bool) (int, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
	switch {
	case err == nil:
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); errors.Is(err, syscall.EWOULDBLOCK) {
			return 0, nil // alive
		} else if err != nil {
			return 0, err
		}
	case errors.Is(err, fs.ErrNotExist):
		// No lock file: a cleaner died halfway through removing the directory.
	default:
		return 0, err
	}
	n := 0
	aside := filepath.Join(dir, "aside")
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() || p == filepath.Join(dir, "lock") {
			return nil
		}
		if rel, err := filepath.Rel(aside, p); err == nil && !strings.HasPrefix(rel, "..") {
			if dryRun {
				return nil
			}
			key := filepath.ToSlash(rel)
			if i := strings.LastIndexByte(key, '~'); i > 0 {
				key = key[:i]
			}
			path, err := s.path(key)
			if err != nil {
				return nil // not an object's key; removed with the directory
			}
			s.log.Info("putting back an object a dead instance had set aside", "dir", s.root, "key", key)
			return s.restore(p, path)
		}
		n++
		return nil
	})
	if err != nil || dryRun {
		return n, err
	}
	return n, os.RemoveAll(dir)
}

// syncDir fsyncs a directory so that entries created, renamed or removed in it are durable. A
// directory that a concurrent Remove pruned meanwhile holds nothing that needs syncing.
func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// errRetained is a removal refused because the file is immutable (a hardened repository).
var errRetained = fmt.Errorf("%w: the file is immutable (hardened repository); only the root helper, sendense-hub repo harden, releases it", store.ErrRetained)

// hardened reports whether err is the EPERM an operation on an immutable file (chattr +i) meets:
// writes, renames, removals and time changes all refuse, for root too.
func hardened(path string, err error) bool {
	if !errors.Is(err, syscall.EPERM) {
		return false
	}
	on, ierr := immutable.Is(path)
	return ierr == nil && on
}
