// Package restore reads restore points back: a disk of a backup as a raw image with random
// access, every chunk verified against its digest as it is read, so that damage fails the read
// instead of returning wrong bytes — and the damaged chunk is quarantined, so that the next
// backup holding its bytes uploads them again.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// ErrNotRestorable is returned for a backup that is not a successful restore point.
var ErrNotRestorable = errors.New("backup is not a successful restore point")

// ErrBusy refuses a read of a restore point for a client while the hub serves as many as it
// allows (Service.Serve); the client retries later.
var ErrBusy = errors.New("the hub is serving as many restore-point reads as it allows")

// MaxServed bounds the reads of restore points the hub serves to clients at once: image
// downloads and file-level restores (listings, files, archives), through the API and the
// console together. Each holds its disk's index and up to 32 MiB of chunks (a download's
// read-ahead, a browse's page cache), so eight hold a few hundred MiB at most whoever asks and
// however often. Instant recoveries, restore tests and restores run by the hub itself are not
// counted: they have their own bounds.
const MaxServed = 8

// servedWait is how long a read waits for one of the others to end before ErrBusy.
const servedWait = 10 * time.Second

// restoreCatalog is what this package needs from the catalog.
type restoreCatalog interface {
	BackupByID(ctx context.Context, id string) (*catalog.BackupRow, error)
	BackupDisks(ctx context.Context, jobID string) ([]catalog.BackupDisk, error)
	RecordEvents(ctx context.Context, evs []catalog.Event) error
	RepositoryByName(ctx context.Context, name string) (*catalog.Repository, error)
	BackupCopies(ctx context.Context, backupID string) ([]catalog.BackupCopy, error)
	BeginBackupRead(ctx context.Context, backupID string, ttl time.Duration) (string, error)
	BeginBackupHold(ctx context.Context, backupID, holder string, ttl time.Duration) (*catalog.BackupRead, error)
	RenewBackupRead(ctx context.Context, backupID, id, holder string, ttl time.Duration) (time.Time, error)
	EndBackupRead(ctx context.Context, id string) error
	EndBackupReadOf(ctx context.Context, backupID, id, holder string) error
}

// readTTL is how long a read's record in the catalog (catalog.BackupRead) keeps its backup from
// deletion without renewal; Hold renews it every readTTL/4.
const readTTL = 2 * time.Minute

// OpenFunc opens the repository with a catalog id.
type OpenFunc func(ctx context.Context, id string) (Repository, error)

// Service opens disk images of restore points.
type Service struct {
	cat    restoreCatalog
	open   OpenFunc
	m      *metrics
	served *semaphore.Weighted // reads served to clients (Serve)
	wait   time.Duration
	ttl    time.Duration // readTTL; a field so that a test can shorten it
	log    *slog.Logger

	// Reads served (Serve), one record in the catalog per backup however many requests read
	// it at once, kept for linger after the last ends (0: it ends with the last).
	heldMu sync.Mutex
	held   map[string]*heldRead
	linger time.Duration
}

// heldRead is the catalog's record of reads of one backup, shared by its readers.
type heldRead struct {
	refs    int
	release func()      // ends the record
	linger  *time.Timer // while refs is 0: ends the record when it fires
}

// New returns the service; the metrics of the images it opens are registered on reg (nil: not
// registered).
func New(cat restoreCatalog, open OpenFunc, reg prometheus.Registerer) *Service {
	return &Service{cat: cat, open: open, m: newMetrics(reg), served: semaphore.NewWeighted(MaxServed), wait: servedWait, ttl: readTTL,
		log: slog.New(slog.DiscardHandler), held: map[string]*heldRead{}}
}

// SetLogger sets where the service logs (nothing otherwise).
func (s *Service) SetLogger(log *slog.Logger) { s.log = log }

// SetServeWaitForTest sets how long Serve waits before ErrBusy (10 s otherwise).
func (s *Service) SetServeWaitForTest(d time.Duration) { s.wait = d }

// Serve admits one read of backup backupID served to a client (a download, a listing),
// waiting up to 10 s while MaxServed others are being served: ErrBusy after that, the context's
// error when it ends first. The read holds the backup (as Hold does) until it calls release,
// which it must when it ends; the reads served of one backup at once share one record in the
// catalog, which ends with the last of them, so that a backup is free to delete as soon as its
// readers are done.
func (s *Service) Serve(ctx context.Context, backupID string) (release func(), err error) {
	wctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	if err := s.served.Acquire(wctx, 1); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.m.busy.Inc()
		return nil, fmt.Errorf("%w (%d at once); retry when one has ended", ErrBusy, MaxServed)
	}
	unhold, err := s.holdShared(ctx, backupID)
	if err != nil {
		s.served.Release(1)
		return nil, err
	}
	return sync.OnceFunc(func() {
		unhold()
		s.served.Release(1)
	}), nil
}

// renew extends the read *id of backupID, within a quarter of the read's lifetime; a read that
// expired meanwhile (the catalog out of reach for that long) is recorded again, as a new one.
func (s *Service) renew(ctx context.Context, backupID string, id *string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.ttl/4)
	defer cancel()
	_, err := s.cat.RenewBackupRead(ctx, backupID, *id, "", s.ttl)
	if !errors.Is(err, catalog.ErrNotFound) {
		return err
	}
	fresh, err := s.cat.BeginBackupRead(ctx, backupID, s.ttl)
	if err != nil {
		return err
	}
	old := *id
	*id = fresh
	return s.cat.EndBackupRead(ctx, old)
}

// Hold records in the catalog that backup backupID is being read, and renews that record until
// release is called: meanwhile the backup cannot be deleted, pruned or moved, nor a copy of it
// removed, by this hub or another on the same catalog. A backup that does not exist →
// catalog.ErrNotFound; one that is not a restore point → catalog.ErrConflict. A renewal that
// fails is logged and the read goes on: every chunk it reads is verified, so a backup removed
// under it fails the read, never returns other bytes. The record ends at release.
func (s *Service) Hold(ctx context.Context, backupID string) (release func(), err error) {
	return s.record(ctx, backupID)
}

// HoldFor begins a hold of backup backupID for holder, a client reading it in several
// requests: a record of a read that the holder, and no one else, renews (RenewHold) within
// readTTL and ends (EndHold). Unlike Hold, the hub does not renew it: a client that dies stops,
// and the hold expires.
func (s *Service) HoldFor(ctx context.Context, backupID, holder string) (api.BackupHold, error) {
	r, err := s.cat.BeginBackupHold(ctx, backupID, holder, s.ttl)
	if err != nil {
		return api.BackupHold{}, err
	}
	return s.hold(backupID, r.ID, r.ExpiresAt), nil
}

func (s *Service) hold(backupID, id string, expires time.Time) api.BackupHold {
	return api.BackupHold{ID: id, BackupID: backupID, ExpiresAt: expires.UTC(), TTLSeconds: int(s.ttl / time.Second)}
}

// RenewHold extends hold id of backup backupID, taken by holder, by readTTL from now: one that
// expired, ended, reached catalog.MaxHoldLife, or is of another backup or holder →
// catalog.ErrNotFound. Only a client's hold is renewed here, never the hub's own records of
// reads.
func (s *Service) RenewHold(ctx context.Context, backupID, id, holder string) (api.BackupHold, error) {
	if !strings.HasPrefix(id, catalog.HoldPrefix) || holder == "" {
		return api.BackupHold{}, fmt.Errorf("hold %s of backup %s: %w", id, backupID, catalog.ErrNotFound)
	}
	exp, err := s.cat.RenewBackupRead(ctx, backupID, id, holder, s.ttl)
	if err != nil {
		return api.BackupHold{}, err
	}
	return s.hold(backupID, id, exp), nil
}

// EndHold ends hold id of backup backupID, taken by holder: unknown, or of another backup or
// holder → catalog.ErrNotFound. Only a client's hold is ended here, never the hub's own records
// of reads.
func (s *Service) EndHold(ctx context.Context, backupID, id, holder string) error {
	if !strings.HasPrefix(id, catalog.HoldPrefix) || holder == "" {
		return fmt.Errorf("hold %s of backup %s: %w", id, backupID, catalog.ErrNotFound)
	}
	return s.cat.EndBackupReadOf(ctx, backupID, id, holder)
}

// holdShared is Hold sharing one record among the readers of a backup (see Serve).
func (s *Service) holdShared(ctx context.Context, backupID string) (release func(), err error) {
	if h := s.take(backupID); h != nil {
		return s.unref(backupID, h), nil
	}
	end, err := s.record(ctx, backupID)
	if err != nil {
		return nil, err
	}
	s.heldMu.Lock()
	if h := s.takeLocked(backupID); h != nil {
		s.heldMu.Unlock()
		end() // another reader recorded the backup's read meanwhile: this one shares that
		return s.unref(backupID, h), nil
	}
	h := &heldRead{refs: 1, release: end}
	s.held[backupID] = h
	s.heldMu.Unlock()
	return s.unref(backupID, h), nil
}

// take takes a share of the backup's recorded read, if there is one.
func (s *Service) take(backupID string) *heldRead {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return s.takeLocked(backupID)
}

func (s *Service) takeLocked(backupID string) *heldRead {
	h := s.held[backupID]
	if h == nil {
		return nil
	}
	h.refs++
	if h.linger != nil {
		h.linger.Stop() // if it fired already, its callback finds refs > 0 and does nothing
		h.linger = nil
	}
	return h
}

// unref returns the release of one share of h: the last one ends the record (after s.linger
// when that is set, unless a new reader takes it first).
func (s *Service) unref(backupID string, h *heldRead) func() {
	return sync.OnceFunc(func() {
		s.heldMu.Lock()
		if h.refs--; h.refs > 0 {
			s.heldMu.Unlock()
			return
		}
		if s.linger <= 0 {
			delete(s.held, backupID) // a reader coming now records anew
			s.heldMu.Unlock()
			h.release()
			return
		}
		h.linger = time.AfterFunc(s.linger, func() {
			s.heldMu.Lock()
			if h.refs > 0 || s.held[backupID] != h {
				s.heldMu.Unlock()
				return
			}
			delete(s.held, backupID)
			s.heldMu.Unlock()
			h.release()
		})
		s.heldMu.Unlock()
	})
}

// record begins a record of reads of backupID in the catalog and renews it until the returned
// end is called.
func (s *Service) record(ctx context.Context, backupID string) (end func(), err error) {
	id, err := s.cat.BeginBackupRead(ctx, backupID, s.ttl)
	if err != nil {
		return nil, err
	}
	ctx = context.WithoutCancel(ctx) // the record outlives the request that began it
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(s.ttl / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if err := s.renew(ctx, backupID, &id); err != nil {
				s.log.WarnContext(ctx, "renew the record of a backup read; its backup may be deleted under it", "job_id", backupID, "err", err)
			}
		}
	}()
	return sync.OnceFunc(func() {
		close(done)
		<-stopped
		ectx, cancel := context.WithTimeout(ctx, s.ttl/4)
		defer cancel()
		if err := s.cat.EndBackupRead(ectx, id); err != nil {
			s.log.WarnContext(ctx, "end the record of a backup read (it expires)", "job_id", backupID, "err", err)
		}
	}), nil
}

// recorder returns the function with which an image of row's disk, read from the repository
// repoID (repoName), records the quarantine of a damaged chunk it read: an event naming the
// backup and disk. A failure to record is returned to the reader, whose read fails anyway.
func (s *Service) recorder(row *catalog.BackupRow, repoID, repoName, diskID string) func(ctx context.Context, d chunk.Digest, key string, cause error) error {
	return func(ctx context.Context, d chunk.Digest, key string, cause error) error {
		e := events.ChunkQuarantined(repoID, repoName, d.String(), key, cause.Error(), "restore")
		e.VMContextID, e.VM = row.VMContextID, row.VMName
		e.Details["backup_id"], e.Details["disk_id"] = row.ID, diskID
		return s.cat.RecordEvents(ctx, []catalog.Event{events.Row(e)})
	}
}

// metrics of restores served.
type metrics struct {
	bytes    prometheus.Counter
	failures prometheus.Counter
	busy     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		bytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_restore_bytes_total", Help: "Bytes of disk images served for restore."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_restore_failures_total", Help: "Restore streams aborted because a chunk was damaged or missing."}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_restore_reads_refused_total",
			Help: "Reads of restore points for clients (downloads, file-level restores) refused because as many as the hub allows were being served."}),
	}
	if reg != nil {
		reg.MustRegister(m.bytes, m.failures, m.busy)
	}
	return m
}

// Disk describes one disk of a restore point.
type Disk struct {
	BackupID    string
	DiskID      string
	Size        int64
	IndexDigest string // SHA-256 of the index file: a strong ETag for the image
}

// Disks lists the disks of a successful backup.
func (s *Service) Disks(ctx context.Context, backupID string) ([]Disk, error) {
	row, err := s.cat.BackupByID(ctx, backupID)
	if err != nil {
		return nil, err
	}
	if row.Status != api.JobSucceeded {
		return nil, fmt.Errorf("backup %s is %s: %w", backupID, row.Status, ErrNotRestorable)
	}
	bds, err := s.cat.BackupDisks(ctx, backupID)
	if err != nil {
		return nil, err
	}
	out := make([]Disk, 0, len(bds))
	for _, d := range bds {
		out = append(out, Disk{BackupID: backupID, DiskID: d.DiskID, Size: d.CapacityBytes, IndexDigest: d.IndexDigest})
	}
	return out, nil
}

// Open returns a disk of a successful backup as a random-access image, read from the backup's
// own repository.
func (s *Service) Open(ctx context.Context, backupID, diskID string) (*Image, Disk, error) {
	return s.OpenIn(ctx, backupID, diskID, "")
}

// OpenIn is Open reading from the repository named repo: the backup's own or one holding a copy
// of it (empty: the backup's own). An unknown repository is an *api.FieldError on
// "repository"; one without a copy of the backup, catalog.ErrNotFound. The image is the same
// whichever copy it is read from: a copy's index has the digest the catalog recorded.
func (s *Service) OpenIn(ctx context.Context, backupID, diskID, repo string) (*Image, Disk, error) {
	row, err := s.cat.BackupByID(ctx, backupID)
	if err != nil {
		return nil, Disk{}, err
	}
	if row.Status != api.JobSucceeded {
		return nil, Disk{}, fmt.Errorf("backup %s is %s: %w", backupID, row.Status, ErrNotRestorable)
	}
	repoID, repoName, err := Holder(ctx, s.cat, row, repo)
	if err != nil {
		return nil, Disk{}, err
	}
	bds, err := s.cat.BackupDisks(ctx, backupID)
	if err != nil {
		return nil, Disk{}, err
	}
	for _, d := range bds {
		if d.DiskID != diskID {
			continue
		}
		r, err := s.open(ctx, repoID)
		if err != nil {
			return nil, Disk{}, err
		}
		img, err := OpenImage(ctx, r, repository.IndexRef{VMUUID: row.InstanceUUID, DiskID: diskID, BackupID: backupID})
		if err != nil {
			return nil, Disk{}, err
		}
		img.m = s.m
		img.record = s.recorder(row, repoID, repoName, diskID)
		return img, Disk{BackupID: backupID, DiskID: diskID, Size: img.Size(), IndexDigest: d.IndexDigest}, nil
	}
	return nil, Disk{}, fmt.Errorf("backup %s has no disk %s: %w", backupID, diskID, catalog.ErrNotFound)
}

// HolderCatalog is what Holder needs of the catalog.
type HolderCatalog interface {
	RepositoryByName(ctx context.Context, name string) (*catalog.Repository, error)
	BackupCopies(ctx context.Context, backupID string) ([]catalog.BackupCopy, error)
}

// Holder resolves the repository a backup is read from: repo names the backup's own repository
// or one that holds a copy of it (empty: its own). It returns that repository's id and name; an
// unknown name is an *api.FieldError on "repository", a repository without a copy of the
// backup catalog.ErrNotFound.
func Holder(ctx context.Context, cat HolderCatalog, row *catalog.BackupRow, repo string) (id, name string, err error) {
	if repo == "" || repo == row.RepositoryName {
		return row.RepositoryID, row.RepositoryName, nil
	}
	r, err := cat.RepositoryByName(ctx, repo)
	if errors.Is(err, catalog.ErrNotFound) {
		return "", "", &api.FieldError{Field: "repository", Msg: fmt.Sprintf("no repository named %q", repo)}
	}
	if err != nil {
		return "", "", err
	}
	cps, err := cat.BackupCopies(ctx, row.ID)
	if err != nil {
		return "", "", err
	}
	for _, cp := range cps {
		if cp.RepositoryID == r.ID {
			return r.ID, r.Name, nil
		}
	}
	return "", "", fmt.Errorf("backup %s has no copy in repository %q: %w", row.ID, repo, catalog.ErrNotFound)
}

// Repository is what a restore needs of a repository.
type Repository interface {
	// ReadChunk returns the plaintext of a chunk, verified against its digest, over dst's
	// storage when it suffices; errors wrap repository.ErrChunkNotFound or ErrChunkDamaged
	// for a missing or damaged chunk.
	ReadChunk(ctx context.Context, d chunk.Digest, dst []byte) ([]byte, error)
	// ReadIndex reads and checks one index.
	ReadIndex(ctx context.Context, ref repository.IndexRef) (*fidx.Index, error)
	// QuarantineChunk moves a chunk that a read found damaged out of the way, so that it counts
	// as missing and the next backup holding its bytes uploads it again, and returns where it
	// went; repository.ErrChunkSound when the chunk read back after the move is sound (a good
	// copy uploaded meanwhile) and stays.
	QuarantineChunk(ctx context.Context, d chunk.Digest) (key string, err error)
}

// Image is one disk of one restore point. Its methods are safe for concurrent use; every chunk
// read is verified against its digest, and a damaged or missing chunk is an error, never zeros
// or wrong bytes. A damaged chunk is quarantined (Repository.QuarantineChunk) the first time the
// image reads it. Each read runs under the caller's context.
type Image struct {
	m      *metrics // nil: not counted
	repo   Repository
	idx    *fidx.Index
	bufs   sync.Pool
	record func(ctx context.Context, d chunk.Digest, key string, cause error) error // nil: not recorded

	mu          sync.Mutex
	quarantined map[chunk.Digest]bool // digests whose quarantine this image tried
}

// OpenImage reads the index of ref and returns its image.
func OpenImage(ctx context.Context, repo Repository, ref repository.IndexRef) (*Image, error) {
	idx, err := repo.ReadIndex(ctx, ref)
	if err != nil {
		return nil, err
	}
	img := &Image{repo: repo, idx: idx}
	img.bufs.New = func() any { b := make([]byte, idx.ChunkSize); return &b }
	return img, nil
}

// Size is the disk's capacity.
func (im *Image) Size() int64 { return im.idx.DiskSize }

// Index returns the image's fixed index.
func (im *Image) Index() *fidx.Index { return im.idx }

// Reader returns the image as an io.ReaderAt whose reads run under ctx.
func (im *Image) Reader(ctx context.Context) io.ReaderAt { return imageReader{im, ctx} }

type imageReader struct {
	im  *Image
	ctx context.Context
}

func (r imageReader) ReadAt(p []byte, off int64) (int, error) { return r.im.ReadAt(r.ctx, p, off) }

// ReadAt reads len(p) bytes at off, like io.ReaderAt, under ctx.
func (im *Image) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= im.idx.DiskSize {
			return n, io.EOF
		}
		slot := int(pos / im.idx.ChunkSize)
		in := pos - int64(slot)*im.idx.ChunkSize
		want := int(min(int64(len(p)-n), int64(im.idx.SlotLen(slot))-in))
		d := im.readSlot(ctx, slot)
		switch {
		case d.err != nil:
			return n, d.err
		case d.buf == nil:
			clear(p[n : n+want])
		default:
			copy(p[n:n+want], d.data[in:])
			im.bufs.Put(d.buf)
		}
		n += want
	}
	return n, nil
}
