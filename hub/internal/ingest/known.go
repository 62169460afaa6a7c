package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// The known-chunks rule (Proxmox Backup Server's): an agent may reference a stored chunk without
// uploading it only when it has proved it holds those bytes before: the chunk is named by the
// latest backup of the same disk in the same repository (which this agent uploaded or proved in
// turn), or it was uploaded or proved earlier in this session. Any other chunk must be uploaded,
// even when the repository already holds it; the hub re-hashes the upload and stores it once. So
// deduplication is never an oracle telling one agent which data another agent's VMs hold, and
// never a way to read that data through a backup of one's own.

// maxKnownSessions bounds the sessions whose known chunks are cached; an evicted set is rebuilt
// from the catalog and the parent index when the session is used again.
const maxKnownSessions = 64

// knownKey is the first 8 bytes of a digest. A chunk passes only if some digest the agent proved
// shares them: forging one needs a 64-bit partial preimage of SHA-256, and 8 bytes keep a set for
// a 64 TiB disk of 4 MiB slots at about 16 MiB.
type knownKey [8]byte

func keyOf(d chunk.Digest) (k knownKey) { copy(k[:], d[:8]); return k }

type knownSet struct {
	mu   sync.Mutex
	keys map[knownKey]struct{}
	est  int64 // estimated memory while cached: knownBytesPerSlot per slot of the disk
}

// knownBytesPerSlot estimates a cached known set's memory per slot of its disk: about one key
// per slot (the parent's chunks, then the session's uploads), each about 10 bytes in a Go map,
// twice that with the slack of its growth.
const knownBytesPerSlot = 24

func (k *knownSet) has(d chunk.Digest) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.keys[keyOf(d)]
	return ok
}

func (k *knownSet) add(d chunk.Digest) {
	k.mu.Lock()
	k.keys[keyOf(d)] = struct{}{}
	k.mu.Unlock()
}

// knownCache holds the known-chunk sets of recent sessions.
type knownCache struct {
	mu   sync.Mutex
	sets map[string]*knownSet
}

func (c *knownCache) get(id string) *knownSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sets[id]
}

// put caches k as the session's set, evicting others beyond maxKnownSessions, and returns the
// change in the estimated memory of the cached sets.
func (c *knownCache) put(id string, k *knownSet) (delta int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sets == nil {
		c.sets = map[string]*knownSet{}
	}
	if old := c.sets[id]; old != nil {
		delta -= old.est
		delete(c.sets, id)
	}
	for other, o := range c.sets {
		if len(c.sets) < maxKnownSessions {
			break
		}
		delta -= o.est
		delete(c.sets, other)
	}
	c.sets[id] = k
	return delta + k.est
}

// drop forgets the session's set and returns the change in the estimated memory of the cached
// sets.
func (c *knownCache) drop(id string) (delta int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := c.sets[id]; k != nil {
		delete(c.sets, id)
		return -k.est
	}
	return 0
}

// knownBackup is the backup whose chunks a session may reference without upload: an
// incremental's parent, else the disk's latest backup in the repository ("" when it has none).
func (s *Service) knownBackup(ctx context.Context, vmContextID string, sess *catalog.UploadSession) (string, error) {
	if sess.ParentJobID != "" {
		return sess.ParentJobID, nil
	}
	latest, err := s.cat.LatestBackupDisk(ctx, vmContextID, sess.DiskID, sess.RepositoryID)
	switch {
	case err == nil:
		return latest.JobID, nil
	case errors.Is(err, catalog.ErrNotFound):
		return "", nil
	default:
		return "", err
	}
}

// known returns the session's known chunks, building the set on first use: the digests of the
// disk's latest backup in the repository (an incremental's parent) and those the session has
// recorded so far (uploads included, also from before an agent or hub restart).
func (s *Service) known(ctx context.Context, ls *catalog.LiveSession, repo Repository) (*knownSet, error) {
	if k := s.knownSets.get(ls.ID); k != nil {
		return k, nil
	}
	release, err := s.indexWork(ctx, ls.SlotCount)
	if err != nil {
		return nil, err
	}
	defer release()
	if k := s.knownSets.get(ls.ID); k != nil {
		return k, nil // built by another request while this one waited
	}
	k := &knownSet{keys: map[knownKey]struct{}{}, est: max(ls.SlotCount, 1) * knownBytesPerSlot}
	parent, err := s.knownBackup(ctx, ls.VMContextID, &ls.UploadSession)
	if err != nil {
		return nil, err
	}
	if parent != "" {
		idx, err := repo.ReadIndex(ctx, repository.IndexRef{VMUUID: ls.InstanceUUID, DiskID: ls.DiskID, BackupID: parent})
		switch {
		case err == nil:
			for i, d := range idx.Digests {
				if !idx.IsZeroSlot(i) {
					k.keys[keyOf(d)] = struct{}{}
				}
			}
		case ls.Type == api.BackupIncremental:
			// An incremental needs its parent's index to commit anyway: fail now, loudly.
			return nil, fmt.Errorf("read the index of %s's last backup: %w", ls.DiskID, err)
		default:
			// A full backup is how a disk recovers from a damaged or missing old index: it goes
			// on without known chunks, so it uploads every chunk (each stored once).
			s.log.WarnContext(ctx, "last backup's index unreadable: this full backup uploads every chunk",
				"session_id", ls.ID, "disk_id", ls.DiskID, "backup_id", parent, "err", err)
		}
	}
	err = s.cat.EachSessionSlot(ctx, ls.ID, func(_ int64, digest string) error {
		if d, err := chunk.ParseDigest(digest); err == nil {
			k.keys[keyOf(d)] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.indexInUseAdd(s.knownSets.put(ls.ID, k))
	return k, nil
}
