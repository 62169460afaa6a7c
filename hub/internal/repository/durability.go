package repository

// Durability of chunk writes.
//
// In the per-chunk mode every chunk is durable when PutChunk returns (the store's Put: on a local
// directory an fsync of the file and one of its directory, per chunk). In the per-commit mode
// (the default) chunks are written with the store's PutDeferred, which skips both (and the fsync
// of a new directory's parent), and WriteIndex makes them durable before it writes the index:
// with SyncOwn (an fsync of each file and new directory this process wrote since its last sync,
// and of the directories holding them) when this process is the only
// deferred writer, with Sync (syncfs) otherwise. A committed backup still means that every chunk
// its index names is durable.
//
// Why that holds, including for chunks a later backup finds present and reuses without writing:
//
//   - WriteIndex checks that every chunk the index names exists, then syncs, then writes the
//     index. A chunk the index names that is not durable yet was put deferred, by this process
//     (then SyncOwn makes it durable) or by another, whose marker (below) exists from before its
//     first deferred put until after a sync of all it put: when WriteIndex finds such a marker it
//     calls Sync, which makes durable every object put by any process on this host before it was
//     called. So every chunk the index names is durable before the index is, whoever wrote it
//     and whether or not it was synced before. SyncOwn does not wait for other programs' writes
//     to the same file system, which one syncfs does.
//   - A crash of a process (kill -9, a panic) loses nothing it wrote: the host's page cache
//     survives, and the next Sync of any process, at the latest the next WriteIndex, makes those
//     chunks durable. They are complete (a Put is visible whole or not at all) and may be
//     trusted as present at once.
//   - A crash of the host (power loss, kernel panic) can leave a chunk written after the last
//     Sync missing, which is harmless (it is uploaded again), or present with damaged content,
//     which is not: a later backup would find it present, reuse it, and commit an index naming
//     a chunk that cannot be read. So a process that writes deferred chunks first records a
//     marker in the store, unsynced/<id>, durably: the host's boot id and the time of its last
//     completed Sync ("since"), and holds the store lock unsynced-<id> while it lives. When a
//     repository is opened, every marker whose lock can be taken belongs to a dead process. If
//     its boot id is the current one, only the process died: a Sync makes its chunks durable. If
//     the host rebooted since, every chunk modified since "since" (minus a margin for writes in
//     progress when that Sync started) is read back and verified, damaged ones are quarantined
//     (and so uploaded again by the next backup that needs them), and only then is the marker
//     removed. Chunks modified before "since" were made durable by that Sync.
//
// A repository is opened (and so recovered) before any backup uses it, by every process that
// writes to it; the only window left is a second process opening the repository while a first
// one is still recovering after a host crash, which a hub does not do (one hub per data
// directory).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/shared/chunk"
)

// Durability says when a stored chunk is made durable.
type Durability string

// The durability modes.
const (
	// DurabilityCommit makes chunks durable with one sync of the store before each index is
	// written (the default).
	DurabilityCommit Durability = "commit"
	// DurabilityChunk makes every chunk durable before PutChunk returns.
	DurabilityChunk Durability = "chunk"
)

// ParseDurability checks a durability mode from configuration; "" is the default.
func ParseDurability(s string) (Durability, error) {
	switch Durability(s) {
	case "", DurabilityCommit:
		return DurabilityCommit, nil
	case DurabilityChunk:
		return DurabilityChunk, nil
	}
	return "", fmt.Errorf("durability %q: must be %q or %q", s, DurabilityCommit, DurabilityChunk)
}

// WithDurability sets when chunks are made durable (default DurabilityCommit). A store without
// deferred writes (store.Deferrer) makes every chunk durable on its own, whatever the mode.
func WithDurability(d Durability) Option { return func(o *options) { o.durability = d } }

// withBootID replaces how the host's boot id is read; tests simulate a reboot with it.
func withBootID(f func() (string, error)) Option { return func(o *options) { o.bootID = f } }

// readBootID is the boot id of the running Linux kernel, different after every boot.
func readBootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

const (
	unsyncedPrefix = "unsynced/"
	// unsyncedMargin is subtracted from a marker's "since" when chunks are verified after a host
	// crash: a file's modification time is set when a write starts, so a write in progress when
	// a Sync started may carry a time a little before it.
	unsyncedMargin = time.Minute
)

// unsyncedMarker is the content of unsynced/<id>.
type unsyncedMarker struct {
	BootID string    `json:"boot_id"`
	Since  time.Time `json:"since"`
}

// deferredState is the per-commit durability state of an open repository.
type deferredState struct {
	d      store.Deferrer
	bootID func() (string, error)

	// Under Repository.mu:
	id      string       // marker id; "" until the first deferred write
	release func() error // the marker's lock
	since   time.Time    // the marker's since
}

// putChunkBlob stores a chunk blob: deferred (after the marker exists) in the per-commit mode,
// durably otherwise.
func (r *Repository) putChunkBlob(ctx context.Context, key string, blob []byte) error {
	if r.deferred == nil {
		return r.store.Put(ctx, key, blob)
	}
	if err := r.ensureMarker(ctx); err != nil {
		return err
	}
	return r.deferred.d.PutDeferred(ctx, key, blob)
}

// ensureMarker writes this process's unsynced marker and takes its lock, once.
func (r *Repository) ensureMarker(ctx context.Context) error {
	r.markerMu.Lock()
	defer r.markerMu.Unlock()
	ds := r.deferred
	if ds.id != "" {
		return nil
	}
	boot, err := ds.bootID()
	if err != nil {
		return err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	release, err := r.store.Lock(ctx, "unsynced-"+id)
	if err != nil {
		return fmt.Errorf("lock unsynced marker: %w", err)
	}
	// Nothing is unsynced yet: "since" is now.
	now := time.Now().UTC()
	if err := r.putMarker(ctx, id, unsyncedMarker{BootID: boot, Since: now}); err != nil {
		_ = release()
		return err
	}
	ds.id, ds.release, ds.since = id, release, now
	return nil
}

func (r *Repository) putMarker(ctx context.Context, id string, m unsyncedMarker) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("unsynced marker: %w", err)
	}
	if err := r.store.Put(ctx, unsyncedPrefix+id, b); err != nil {
		return fmt.Errorf("write unsynced marker: %w", err)
	}
	return nil
}

// syncChunks makes every chunk stored so far durable, by this process or any other (a no-op in
// the per-chunk mode), and advances this process's marker. Called after the chunks an index
// names were found present, it makes them durable before the index is written.
//
// When no other process has a marker, every chunk not yet durable is one this process put
// deferred (a process writes its marker before its first deferred chunk and removes it only
// after a sync; a chunk put durably is durable), so syncing this process's own files
// (SyncOwn: an fsync of each file and directory) suffices, and other programs' writes to the
// file system are not waited for. Another process's marker, live or dead, means chunks this
// process cannot name may be unsynced: then the whole file system is synced, and the markers of
// processes that died on this boot are removed, their chunks being durable now.
func (r *Repository) syncChunks(ctx context.Context) error {
	if r.deferred == nil {
		return nil
	}
	start := time.Now().UTC()
	others, err := r.otherMarkers(ctx)
	if err != nil {
		return fmt.Errorf("sync chunks: %w", err)
	}
	// The locks of dead writers' markers are taken before the sync, so that everything those
	// processes wrote precedes it.
	var dead []string
	for _, id := range others {
		release, err := r.store.Lock(ctx, "unsynced-"+id)
		if errors.Is(err, store.ErrLocked) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sync chunks: lock unsynced marker %s: %w", id, err)
		}
		defer func() { _ = release() }()
		dead = append(dead, id)
	}
	how := "own files"
	if len(others) == 0 {
		err = r.deferred.d.SyncOwn(ctx)
	} else {
		how = "file system"
		err = r.deferred.d.Sync(ctx)
	}
	if err != nil {
		return fmt.Errorf("sync chunks: %w", err)
	}
	r.logger.DebugContext(ctx, "chunks synced", "synced", how, "other_writers", len(others),
		"duration_seconds", time.Since(start).Seconds())
	for _, id := range dead {
		if err := r.removeDeadMarker(ctx, id); err != nil {
			r.logger.WarnContext(ctx, "unsynced marker of a dead writer", "marker", id, "err", err)
		}
	}
	r.markerMu.Lock()
	defer r.markerMu.Unlock()
	ds := r.deferred
	if ds.id == "" || !start.After(ds.since) {
		return nil
	}
	boot, err := ds.bootID()
	if err != nil {
		return err
	}
	if err := r.putMarker(ctx, ds.id, unsyncedMarker{BootID: boot, Since: start}); err != nil {
		return err
	}
	ds.since = start
	return nil
}

// otherMarkers lists the unsynced markers of other processes (and of other repositories opened
// on the same store in this process).
func (r *Repository) otherMarkers(ctx context.Context) ([]string, error) {
	r.markerMu.Lock()
	own := r.deferred.id
	r.markerMu.Unlock()
	var ids []string
	err := r.store.List(ctx, unsyncedPrefix, func(info store.Info) error {
		if id := strings.TrimPrefix(info.Key, unsyncedPrefix); id != own {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list unsynced markers: %w", err)
	}
	return ids, nil
}

// removeDeadMarker removes the marker id, whose lock the caller holds since before a Sync, when
// its process died on this boot: its chunks are durable. A marker left by a host crash (whose
// chunks must be verified when the repository is next opened, see recoverMarker) stays.
func (r *Repository) removeDeadMarker(ctx context.Context, id string) error {
	b, err := r.store.Get(ctx, unsyncedPrefix+id, nil, 4096)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	boot, err := r.deferred.bootID()
	if err != nil {
		return err
	}
	var m unsyncedMarker
	if json.Unmarshal(b, &m) != nil || m.BootID != boot {
		return nil
	}
	if err := r.store.Remove(ctx, unsyncedPrefix+id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// closeDeferred syncs what this process wrote and removes its marker.
func (r *Repository) closeDeferred(ctx context.Context) error {
	if r.deferred == nil {
		return nil
	}
	r.markerMu.Lock()
	defer r.markerMu.Unlock()
	ds := r.deferred
	if ds.id == "" {
		return nil
	}
	// Only this process's chunks are under its marker; other processes have their own.
	if err := ds.d.SyncOwn(ctx); err != nil {
		return fmt.Errorf("sync chunks: %w", err)
	}
	err := r.store.Remove(ctx, unsyncedPrefix+ds.id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("remove unsynced marker: %w", err)
	}
	err = ds.release()
	ds.id, ds.release = "", nil
	return err
}

// recoverUnsynced handles the markers of dead processes, as the comment at the top explains.
// It runs when a repository is opened, whatever this process's mode.
func (r *Repository) recoverUnsynced(ctx context.Context, bootID func() (string, error)) error {
	d, ok := r.store.(store.Deferrer)
	if !ok {
		return nil
	}
	var ids []string
	err := r.store.List(ctx, unsyncedPrefix, func(info store.Info) error {
		ids = append(ids, strings.TrimPrefix(info.Key, unsyncedPrefix))
		return nil
	})
	if err != nil {
		return fmt.Errorf("list unsynced markers: %w", err)
	}
	for _, id := range ids {
		if err := r.recoverMarker(ctx, d, id, bootID); err != nil {
			return fmt.Errorf("recover unsynced chunks of %s: %w", id, err)
		}
	}
	return nil
}

func (r *Repository) recoverMarker(ctx context.Context, d store.Deferrer, id string, bootID func() (string, error)) error {
	release, err := r.store.Lock(ctx, "unsynced-"+id)
	if errors.Is(err, store.ErrLocked) {
		return nil // its process lives
	}
	if err != nil {
		return err
	}
	defer func() { _ = release() }()
	b, err := r.store.Get(ctx, unsyncedPrefix+id, nil, 4096)
	if errors.Is(err, store.ErrNotFound) {
		return nil // recovered meanwhile by another process
	}
	if err != nil {
		return err
	}
	var m unsyncedMarker
	boot, err := bootID()
	if err != nil {
		return err
	}
	if jerr := json.Unmarshal(b, &m); jerr != nil || m.BootID != boot {
		// The host crashed (or the marker is unreadable, and then so is its time: verify all).
		if jerr != nil {
			m.Since = time.Time{}
		}
		if err := r.verifySince(ctx, m.Since.Add(-unsyncedMargin)); err != nil {
			return err
		}
	}
	if err := d.Sync(ctx); err != nil {
		return err
	}
	if err := r.store.Remove(ctx, unsyncedPrefix+id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// verifySince reads back every chunk modified at or after t and quarantines the damaged ones.
func (r *Repository) verifySince(ctx context.Context, t time.Time) error {
	var names []chunk.Digest
	err := r.WalkChunks(ctx, func(name chunk.Digest, _ int64, mod time.Time) error {
		if !mod.Before(t) {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	bp := r.payloadBufs.Get(r.maxBlob)
	defer r.payloadBufs.Put(bp)
	pp := r.plainBufs.Get(int(r.desc.ChunkSize))
	defer r.plainBufs.Put(pp)
	for _, name := range names {
		key := chunkKey(name)
		blob, err := r.store.Get(ctx, key, bp, int64(r.maxBlob))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err == nil {
			err = r.checkStoredName(name, blob, pp)
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrChunkDamaged) && !errors.Is(err, store.ErrTooLarge) {
			return fmt.Errorf("verify chunk %s: %w", name, err)
		}
		// No PutChunk runs yet (the repository is being opened): move it aside directly.
		qkey := quarantineKey(name, time.Now())
		if err := r.store.Rename(ctx, key, qkey); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("quarantine chunk %s: %w", name, err)
		}
		r.logger.WarnContext(ctx, "chunk damaged by a host crash before it was synced: quarantined", "chunk", name.String(), "key", qkey)
	}
	return nil
}

// checkStoredName checks a stored blob under the chunk name name as ReadChunk does, without
// knowing the digest: the plaintext must hash to a digest whose name is name.
func (r *Repository) checkStoredName(name chunk.Digest, blob, dst []byte) error {
	plain, err := r.openBlob(chunkKey(name), blob, dst)
	if err != nil {
		return err
	}
	if got := chunk.Sum(plain); r.ChunkName(got) != name {
		return fmt.Errorf("%w: plaintext hashes to %s", ErrChunkDamaged, got)
	}
	return nil
}
