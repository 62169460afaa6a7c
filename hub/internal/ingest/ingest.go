// Package ingest receives backup data from agents: one upload session per disk of a running
// job, chunks re-hashed and stored durably before they are acknowledged, the slots that hold
// them recorded, and a commit that turns the session into the disk's fixed index.
//
// Every request on a session reads the session, its job's status and its VM in one catalog
// query; a chunk upload records the slots that hold the chunk itself, so a group of k slots of
// which m are new costs one slot batch and m uploads.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/sendense/sendense/hub/internal/buffers"
	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// Errors the API maps to status codes.
var (
	// ErrFullRequired: the agent asked for an incremental that is not possible; it must send a
	// full backup of the disk.
	ErrFullRequired = errors.New("an incremental is not possible")
	// ErrTooLarge: a chunk upload longer than the largest blob of the session's chunk size.
	ErrTooLarge = errors.New("chunk upload too large")
	// ErrBusy: the agent already has MaxUploadsPerAgent chunk uploads in flight; it may retry.
	ErrBusy = errors.New("too many chunk uploads in flight for this agent")
	// ErrNoUploadMemory: the uploads of all agents together held the hub's upload memory for
	// as long as an upload may wait for it; the agent may retry.
	ErrNoUploadMemory = errors.New("the hub's memory for chunk uploads is in use")
	// ErrBadBody: the chunk could not be read from the request; it wraps the reader's error
	// (for example the server's body deadline).
	ErrBadBody = errors.New("could not read the chunk")
)

// keptUploadBuffers is how many upload buffers the hub keeps for reuse: those of two agents
// uploading at full width.
const keptUploadBuffers = 2 * MaxUploadsPerAgent

// DefaultUploadMemory is the memory the bodies of chunk uploads in flight may hold, those of
// every agent together, so that the hub's memory stays bounded however many agents upload at
// once. An upload reserves the buffer its session's largest blob needs before it reads a byte,
// and waits while the others hold the rest. One agent holds at most half of it (its share): 80
// MiB, about the agent's own default budget for data in flight, so one agent at full speed waits
// rarely, and however slowly its uploads arrive the other agents keep the other half.
const DefaultUploadMemory = 160 << 20

// DefaultUploadMemoryWait bounds how long an upload waits for memory before ErrNoUploadMemory.
// Its body's read deadline is held meanwhile: the hub, not the agent, is slow. The agent gives
// up on a call after two minutes.
const DefaultUploadMemoryWait = 30 * time.Second

// Options tune the intake; zero values select the defaults.
type Options struct {
	// UploadMemory bounds the bytes the chunk uploads of all agents hold at once
	// (DefaultUploadMemory). An upload larger than it runs alone.
	UploadMemory int64
	// UploadMemoryWait is how long an upload waits for UploadMemory (DefaultUploadMemoryWait).
	UploadMemoryWait time.Duration
	// OnIndexMemory, when set, hears the estimated memory of the index-sized work in progress
	// (see indexWork) and of the cached known-chunk sets each time it changes, e.g. to raise a
	// soft memory limit by it.
	OnIndexMemory func(inUse int64)
	// OnIdle, when set, runs once the chunk uploads of every agent have stopped for IdleAfter
	// (DefaultIdleAfter): e.g. to give the garbage of the backups just ended back to the system
	// before the next ones. The upload buffers kept for reuse stay: dropping them too made the
	// next incremental 0.2–0.3 s slower (its buffers faulted in anew).
	OnIdle    func()
	IdleAfter time.Duration
}

// DefaultIdleAfter is how long uploads must have stopped before the intake counts as idle.
const DefaultIdleAfter = 10 * time.Second

// DeadlineHolder is a request body whose read deadline can be held while its upload waits for
// memory: HoldDeadline lifts it, and the function it returns sets it again as if the wait had
// not happened.
type DeadlineHolder interface {
	HoldDeadline() (resume func())
}

// MaxDiskBytes bounds the capacity of a disk accepted in a session (64 TiB, the vSphere limit).
const MaxDiskBytes = 64 << 40

// MaxUploadsPerAgent bounds the chunk uploads one agent has in flight, each holding a buffer of
// up to one blob (4 MiB by default, 64 MiB at most): an agent keeps all its uploads within it
// (api.MaxUploadsPerAgent), so it never holds one back, while a misbehaving agent holds at most
// 32 blobs of memory.
const MaxUploadsPerAgent = api.MaxUploadsPerAgent

// ingestCatalog is what intake needs from the catalog.
type ingestCatalog interface {
	AgentJob(ctx context.Context, id, agentID string) (*catalog.BackupJob, error)
	RepositoryByID(ctx context.Context, id string) (*catalog.Repository, error)
	VMDisks(ctx context.Context, contextID string) ([]catalog.VMDisk, error)
	LatestBackupDisk(ctx context.Context, vmContextID, diskID, repositoryID string) (*catalog.BackupDisk, error)
	OpenSession(ctx context.Context, s *catalog.UploadSession) (*catalog.UploadSession, error)
	BeginCommit(ctx context.Context, sessionID string) error
	AgentLiveSession(ctx context.Context, id, agentID string) (*catalog.LiveSession, error)
	RecordSlots(ctx context.Context, sessionID string, slots []catalog.UploadSlot) error
	EachSessionSlot(ctx context.Context, sessionID string, fn func(slot int64, digest string) error) error
	CountSessionSlots(ctx context.Context, sessionID string) (int64, error)
	RecordSessionDrift(ctx context.Context, sessionID string, n int64) error
	CommitSession(ctx context.Context, sessionID string, bd *catalog.BackupDisk) (*catalog.BackupDisk, error)
	BackupDisks(ctx context.Context, jobID string) ([]catalog.BackupDisk, error)
	RecordEvents(ctx context.Context, evs []catalog.Event) error
}

// Repository is what intake needs of one repository. PutChunk re-hashes and stores a blob
// durably (idempotent), PutBlob does the same for a blob it names by that hash; TouchChunk
// proves a chunk exists and spares it from garbage collection (repository.ErrChunkNotFound when
// it does not); WriteIndex refuses an index naming a missing chunk.
type Repository interface {
	PutChunk(ctx context.Context, d chunk.Digest, blob []byte) (stored bool, err error)
	PutBlob(ctx context.Context, blob []byte) (d chunk.Digest, stored bool, err error)
	TouchChunk(ctx context.Context, d chunk.Digest) error
	ReadIndex(ctx context.Context, ref repository.IndexRef) (*fidx.Index, error)
	WriteIndex(ctx context.Context, ref repository.IndexRef, idx *fidx.Index) (digest string, err error)
}

// Opener opens a repository by catalog id (a registry of repositories).
type Opener[R Repository] interface {
	Open(ctx context.Context, id string) (R, error)
}

// Service is the hub's data intake. It is safe for concurrent use.
type Service struct {
	cat     ingestCatalog
	open    func(ctx context.Context, id string) (Repository, error)
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time

	bufs    *buffers.List // upload buffers, kept for reuse: chunks are megabytes
	uploads *quiet        // uploads holding memory, for Options.OnIdle (nil without it)

	mu       sync.Mutex
	inFlight map[string]*agentUploads // agent id → its chunk uploads in progress

	knownSets knownCache // per session: the chunks its agent may reference without upload

	indexMem *semaphore.Weighted // index-sized work in progress, by its estimated memory (indexWork)

	uploadMem     *semaphore.Weighted // bytes of upload buffers in use, all agents together
	uploadMemSize int64
	uploadWait    time.Duration

	indexMu       sync.Mutex
	indexInUse    int64 // bytes of indexMem held, plus the estimate of the cached known sets
	onIndexMemory func(int64)
}

// agentUploads are one agent's chunk uploads in progress and the share of the upload memory
// they hold.
type agentUploads struct {
	n     int
	share *semaphore.Weighted
}

// Index-sized work — reading a parent index, building a known set, walking a session's slots,
// writing an index — holds memory in proportion to the disk's slots: about indexBytesPerSlot
// each (the index file and its decoded digests, or a known-set entry). Such work runs within
// indexMemory for the whole hub, so that no number of requests, from one agent or many, can
// make it hold more; one larger piece (a disk of over 8 million slots, 32 TiB in 4 MiB chunks)
// runs alone.
const (
	indexMemory       = 1 << 30
	indexBytesPerSlot = 128
)

// indexWork waits until index-sized work for a disk of slots slots fits in indexMemory and
// returns the function that ends it.
func (s *Service) indexWork(ctx context.Context, slots int64) (release func(), err error) {
	w := min(max(slots, 1)*indexBytesPerSlot, indexMemory)
	if err := s.indexMem.Acquire(ctx, w); err != nil {
		return nil, err
	}
	s.indexInUseAdd(w)
	return func() { s.indexInUseAdd(-w); s.indexMem.Release(w) }, nil
}

// indexInUseAdd counts d more bytes of index-sized work or cached known sets and tells
// onIndexMemory, in order.
func (s *Service) indexInUseAdd(d int64) {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	s.indexInUse += d
	if s.onIndexMemory != nil {
		s.onIndexMemory(s.indexInUse)
	}
}

// New returns the intake service over the repositories of repos; its metrics are registered on
// reg (nil: not registered).
func New[R Repository](cat ingestCatalog, repos Opener[R], log *slog.Logger, reg prometheus.Registerer, opts Options) *Service {
	if opts.UploadMemory <= 0 {
		opts.UploadMemory = DefaultUploadMemory
	}
	if opts.UploadMemoryWait <= 0 {
		opts.UploadMemoryWait = DefaultUploadMemoryWait
	}
	open := func(ctx context.Context, id string) (Repository, error) {
		r, err := repos.Open(ctx, id)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	if opts.IdleAfter <= 0 {
		opts.IdleAfter = DefaultIdleAfter
	}
	s := &Service{cat: cat, open: open, log: log, metrics: newMetrics(reg), now: time.Now, inFlight: map[string]*agentUploads{},
		bufs: buffers.New(keptUploadBuffers, 0), indexMem: semaphore.NewWeighted(indexMemory),
		uploadMem: semaphore.NewWeighted(opts.UploadMemory), uploadMemSize: opts.UploadMemory, uploadWait: opts.UploadMemoryWait,
		onIndexMemory: opts.OnIndexMemory}
	if opts.OnIdle != nil {
		s.uploads = newQuiet(opts.IdleAfter, opts.OnIdle)
	}
	return s
}

// OpenSession opens (or reopens, for a resuming agent) the upload session of one disk of a job.
// An incremental must name the disk's latest successful backup as parent, with the same
// capacity and chunk size and its change ID as base; otherwise ErrFullRequired says why.
func (s *Service) OpenSession(ctx context.Context, agentID, jobID, diskID string, req api.OpenSessionRequest) (api.Session, error) {
	j, err := s.cat.AgentJob(ctx, jobID, agentID)
	if err != nil {
		return api.Session{}, err
	}
	if j.Status != api.JobRunning {
		return api.Session{}, fmt.Errorf("job %s is %s: %w", jobID, j.Status, catalog.ErrConflict)
	}
	repo, err := s.cat.RepositoryByID(ctx, j.RepositoryID)
	if err != nil {
		return api.Session{}, err
	}
	disks, err := s.cat.VMDisks(ctx, j.VMContextID)
	if err != nil {
		return api.Session{}, err
	}
	i := slices.IndexFunc(disks, func(d catalog.VMDisk) bool {
		return d.DiskID == diskID && d.Status == api.DiskPresent && d.Backupable
	})
	if i < 0 {
		return api.Session{}, fmt.Errorf("disk %s is not a backup-able disk of the job's VM: %w", diskID, catalog.ErrNotFound)
	}
	// The disk's geometry is the catalog's (from discovery, refreshed by the job's report of
	// its snapshot), never the session request's: an agent cannot claim a disk larger or
	// smaller than the one it reported.
	if req.CapacityBytes != disks[i].CapacityBytes {
		return api.Session{}, &api.FieldError{Field: "capacity_bytes", Msg: fmt.Sprintf("must be the disk's capacity as reported for the job (%d); report the job's disks first", disks[i].CapacityBytes)}
	}
	switch {
	case req.Type != api.BackupFull && req.Type != api.BackupIncremental:
		return api.Session{}, &api.FieldError{Field: "type", Msg: "must be full or incremental"}
	case req.ChunkSize != repo.ChunkSize:
		return api.Session{}, &api.FieldError{Field: "chunk_size", Msg: fmt.Sprintf("must be the repository's chunk size %d", repo.ChunkSize)}
	case req.CapacityBytes <= 0 || req.CapacityBytes > MaxDiskBytes:
		return api.Session{}, &api.FieldError{Field: "capacity_bytes", Msg: fmt.Sprintf("must be between 1 and %d", int64(MaxDiskBytes))}
	case len(req.Reason) > 255 || len(req.ChangeID) > 255 || len(req.BaseChangeID) > 255:
		return api.Session{}, &api.FieldError{Field: "reason", Msg: "reason and change ids must be at most 255 characters"}
	case req.Type == api.BackupIncremental && j.RequestedType == api.BackupFull:
		return api.Session{}, fmt.Errorf("%w: the job asks for a full backup", ErrFullRequired)
	}
	grid := chunk.Grid{Capacity: req.CapacityBytes, ChunkSize: req.ChunkSize}
	sess := &catalog.UploadSession{
		JobID: jobID, DiskID: diskID, AgentID: agentID, RepositoryID: repo.ID, Type: req.Type, Reason: req.Reason,
		BaseChangeID: req.BaseChangeID, ChangeID: req.ChangeID, CapacityBytes: req.CapacityBytes, ChunkSize: req.ChunkSize,
		SlotCount: grid.Slots(),
	}
	if req.Type == api.BackupIncremental {
		parent, err := s.cat.LatestBackupDisk(ctx, j.VMContextID, diskID, repo.ID)
		switch {
		case errors.Is(err, catalog.ErrNotFound):
			return api.Session{}, fmt.Errorf("%w: disk %s has no earlier backup in this repository", ErrFullRequired, diskID)
		case err != nil:
			return api.Session{}, err
		case parent.JobID != req.ParentBackupID:
			return api.Session{}, fmt.Errorf("%w: the latest backup of %s is %s, not %s", ErrFullRequired, diskID, parent.JobID, req.ParentBackupID)
		case parent.CapacityBytes != req.CapacityBytes:
			return api.Session{}, fmt.Errorf("%w: disk %s was resized (%d → %d bytes)", ErrFullRequired, diskID, parent.CapacityBytes, req.CapacityBytes)
		case parent.ChunkSize != req.ChunkSize:
			return api.Session{}, fmt.Errorf("%w: chunk size changed", ErrFullRequired)
		case parent.ChangeID == "" || parent.ChangeID != req.BaseChangeID:
			return api.Session{}, fmt.Errorf("%w: base change id %q is not the parent's %q", ErrFullRequired, req.BaseChangeID, parent.ChangeID)
		}
		sess.ParentJobID = parent.JobID
	}
	sess.ID = catalog.NewID("us-", s.now())
	got, err := s.cat.OpenSession(ctx, sess)
	if err != nil {
		return api.Session{}, err
	}
	return s.sessionInfo(ctx, j.VMContextID, got)
}

// Session returns an agent's session with the slots already recorded, for resuming.
func (s *Service) Session(ctx context.Context, agentID, id string) (api.Session, error) {
	ls, err := s.cat.AgentLiveSession(ctx, id, agentID)
	if err != nil {
		return api.Session{}, err
	}
	return s.sessionInfo(ctx, ls.VMContextID, &ls.UploadSession)
}

func (s *Service) sessionInfo(ctx context.Context, vmContextID string, sess *catalog.UploadSession) (api.Session, error) {
	known, err := s.knownBackup(ctx, vmContextID, sess)
	if err != nil {
		return api.Session{}, err
	}
	release, err := s.indexWork(ctx, sess.SlotCount)
	if err != nil {
		return api.Session{}, err
	}
	defer release()
	out := api.Session{ID: sess.ID, JobID: sess.JobID, DiskID: sess.DiskID, Type: sess.Type, CapacityBytes: sess.CapacityBytes,
		ChunkSize: sess.ChunkSize, SlotCount: sess.SlotCount, Status: sess.Status, CBTDrift: sess.DriftCount > 0, Done: [][2]int64{},
		KnownBackupID: known}
	err = s.cat.EachSessionSlot(ctx, sess.ID, func(slot int64, _ string) error {
		if n := len(out.Done); n > 0 && out.Done[n-1][1] == slot {
			out.Done[n-1][1]++
			return nil
		}
		out.Done = append(out.Done, [2]int64{slot, slot + 1})
		return nil
	})
	if err != nil {
		return api.Session{}, err
	}
	return out, nil
}

// live returns the agent's session, which must be open and belong to a running job: the one
// catalog read of a request on a session.
func (s *Service) live(ctx context.Context, agentID, id string) (*catalog.LiveSession, error) {
	ls, err := s.cat.AgentLiveSession(ctx, id, agentID)
	if err != nil {
		return nil, err
	}
	if ls.Status != api.SessionOpen {
		return nil, fmt.Errorf("upload session %s is %s: %w", id, ls.Status, catalog.ErrConflict)
	}
	if ls.JobStatus != api.JobRunning {
		return nil, fmt.Errorf("job %s is %s: %w", ls.JobID, ls.JobStatus, catalog.ErrConflict)
	}
	return ls, nil
}

func grid(sess *catalog.UploadSession) chunk.Grid {
	return chunk.Grid{Capacity: sess.CapacityBytes, ChunkSize: sess.ChunkSize}
}

// MaxChunkUpload is the largest blob accepted for a chunk size.
func MaxChunkUpload(chunkSize int64) int64 { return int64(chunk.MaxBlobLen(int(chunkSize))) }

// PutChunk stores one uploaded chunk and records the slots that hold it. The session is checked
// before any byte of the body is read; the body (size bytes as announced, -1 when unknown) may be
// at most the largest blob of the session's chunk size (ErrTooLarge otherwise). The blob is
// re-hashed: one whose content does not hash to its name is refused and nothing is stored or
// recorded. With digest "" the hub names the chunk itself by that hash (an agent sending data
// it did not ask about need not hash it first). It answers the chunk's name and whether it was
// new.
func (s *Service) PutChunk(ctx context.Context, agentID, sessionID, digest string, slots []int64, body io.Reader, size int64) (api.ChunkStored, error) {
	var named *chunk.Digest
	if digest != "" {
		d, err := chunk.ParseDigest(digest)
		if err != nil {
			return api.ChunkStored{}, &api.FieldError{Field: "digest", Msg: "must be a lowercase hex SHA-256"}
		}
		named = &d
	}
	if len(slots) > api.MaxSlotBatch {
		return api.ChunkStored{}, &api.FieldError{Field: "slots", Msg: fmt.Sprintf("at most %d per upload", api.MaxSlotBatch)}
	}
	ls, err := s.live(ctx, agentID, sessionID)
	if err != nil {
		return api.ChunkStored{}, err
	}
	g := grid(&ls.UploadSession)
	for _, sl := range slots {
		if !g.Contains(sl) {
			return api.ChunkStored{}, &api.FieldError{Field: "slots", Msg: fmt.Sprintf("slot %d is outside the disk (0..%d)", sl, g.Slots()-1)}
		}
	}
	limit := MaxChunkUpload(ls.ChunkSize)
	if size > limit {
		return api.ChunkStored{}, fmt.Errorf("%w: %d bytes, a chunk of this session takes at most %d", ErrTooLarge, size, limit)
	}
	au, ok := s.acquire(agentID)
	if !ok {
		s.metrics.uploadsRefused.Inc()
		return api.ChunkStored{}, fmt.Errorf("%w (%d)", ErrBusy, MaxUploadsPerAgent)
	}
	defer s.release(agentID)
	end, err := s.reserveUpload(ctx, au, body, limit+1)
	if err != nil {
		return api.ChunkStored{}, err
	}
	b := s.bufs.Get(int(limit) + 1)
	// free gives the upload's memory back: once the blob is in the repository, recording its
	// slots (a catalog commit) needs none of it, and the next upload need not wait for that.
	freed := false
	free := func() {
		if !freed {
			freed = true
			s.bufs.Put(b)
			end()
		}
	}
	defer free()
	n, err := io.ReadFull(body, b)
	switch {
	case err == nil:
		return api.ChunkStored{}, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
	default:
		return api.ChunkStored{}, fmt.Errorf("%w: %w", ErrBadBody, err)
	}
	if size >= 0 && int64(n) != size {
		return api.ChunkStored{}, &api.FieldError{Field: "body", Msg: fmt.Sprintf("%d bytes received, %d announced", n, size)}
	}
	blob := b[:n]
	// Every byte is here: storing and recording the chunk no longer depends on the agent
	// staying connected. An agent killed now finds the slots done when it resumes, instead of
	// sending the chunk again. (The repository and catalog calls bound their own time.)
	ctx = context.WithoutCancel(ctx)
	repo, err := s.open(ctx, ls.RepositoryID)
	if err != nil {
		return api.ChunkStored{}, err
	}
	var d chunk.Digest
	var stored bool
	if named != nil {
		d = *named
		stored, err = repo.PutChunk(ctx, d, blob)
	} else {
		d, stored, err = repo.PutBlob(ctx, blob)
	}
	switch {
	case errors.Is(err, repository.ErrDigestMismatch):
		s.metrics.digestMismatches.Inc()
		s.log.WarnContext(ctx, "chunk refused: content does not match its digest", "agent_id", agentID, "session_id", sessionID, "digest", digest)
		return api.ChunkStored{}, err
	case err != nil:
		s.metrics.badBlobs.Inc()
		return api.ChunkStored{}, err
	}
	free()
	s.metrics.chunksReceived.Inc()
	s.metrics.chunkBytes.Add(float64(n))
	if !stored {
		s.metrics.chunksDuplicate.Inc() // PutChunk touched it: garbage collection spares it now
	}
	if k := s.knownSets.get(sessionID); k != nil {
		k.add(d) // uploaded, so proved: later slots with these bytes need no upload
	}
	if len(slots) > 0 {
		rows := make([]catalog.UploadSlot, len(slots))
		for i, sl := range slots {
			rows[i] = catalog.UploadSlot{Slot: sl, Digest: d.String()}
		}
		if err := s.cat.RecordSlots(ctx, sessionID, rows); err != nil {
			return api.ChunkStored{}, err
		}
		s.metrics.slotsRecorded.Add(float64(len(rows)))
	}
	return api.ChunkStored{Digest: d.String(), Stored: stored}, nil
}

// acquire counts one more upload in flight for the agent unless it has MaxUploadsPerAgent.
func (s *Service) acquire(agentID string) (*agentUploads, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	au := s.inFlight[agentID]
	if au == nil {
		au = &agentUploads{share: semaphore.NewWeighted(s.agentShare())}
		s.inFlight[agentID] = au
	}
	if au.n >= MaxUploadsPerAgent {
		return nil, false
	}
	au.n++
	s.metrics.uploadsInFlight.Inc()
	return au, true
}

func (s *Service) release(agentID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.metrics.uploadsInFlight.Dec()
	if au := s.inFlight[agentID]; au != nil {
		if au.n--; au.n <= 0 {
			delete(s.inFlight, agentID)
		}
	}
}

// agentShare is the upload memory one agent may hold: half of it.
func (s *Service) agentShare() int64 { return max(s.uploadMemSize/2, 1) }

// reserveUpload waits until n bytes of upload memory are free, within the agent's share (all of
// either for a larger n), holding the body's read deadline meanwhile, for at most the upload
// wait; it returns the function that frees them.
func (s *Service) reserveUpload(ctx context.Context, au *agentUploads, body io.Reader, n int64) (end func(), err error) {
	n = min(n, s.uploadMemSize)
	own := min(n, s.agentShare())
	gotOwn := au.share.TryAcquire(own)
	if !gotOwn || !s.uploadMem.TryAcquire(n) {
		s.metrics.uploadMemoryWaits.Inc()
		if h, ok := body.(DeadlineHolder); ok {
			defer h.HoldDeadline()()
		}
		wctx, cancel := context.WithTimeout(ctx, s.uploadWait)
		defer cancel()
		var err error
		whose := fmt.Sprintf("this agent's share, %d MiB", s.agentShare()>>20)
		if !gotOwn {
			if err = au.share.Acquire(wctx, own); err == nil {
				gotOwn = true
			}
		}
		if err == nil {
			whose = fmt.Sprintf("%d MiB", s.uploadMemSize>>20)
			err = s.uploadMem.Acquire(wctx, n)
		}
		// An Acquire that succeeded holds its weight even if ctx ended meanwhile: err decides.
		if err != nil {
			if gotOwn {
				au.share.Release(own)
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.metrics.uploadsRefusedMemory.Inc()
			return nil, fmt.Errorf("%w (%s, waited %s)", ErrNoUploadMemory, whose, s.uploadWait)
		}
	}
	s.metrics.uploadMemory.Add(float64(n))
	s.uploads.begin()
	return func() {
		s.metrics.uploadMemory.Sub(float64(n))
		s.uploadMem.Release(n)
		au.share.Release(own)
		s.uploads.end()
	}, nil
}

// RecordSlots records slots whose chunk the repository holds (or that are all zero) and returns
// the digests it lacks; the agent uploads those with the slots that hold them.
func (s *Service) RecordSlots(ctx context.Context, agentID, sessionID string, batch api.SlotBatch) (api.SlotBatchResult, error) {
	if len(batch.Slots) > api.MaxSlotBatch {
		return api.SlotBatchResult{}, &api.FieldError{Field: "slots", Msg: fmt.Sprintf("at most %d per batch", api.MaxSlotBatch)}
	}
	ls, err := s.live(ctx, agentID, sessionID)
	if err != nil {
		return api.SlotBatchResult{}, err
	}
	repo, err := s.open(ctx, ls.RepositoryID)
	if err != nil {
		return api.SlotBatchResult{}, err
	}
	known, err := s.known(ctx, ls, repo)
	if err != nil {
		return api.SlotBatchResult{}, err
	}
	g := grid(&ls.UploadSession)
	var rows []catalog.UploadSlot
	missing := []string{}
	seen := map[chunk.Digest]bool{}
	for i, sl := range batch.Slots {
		if !g.Contains(sl.Slot) {
			return api.SlotBatchResult{}, &api.FieldError{Field: fmt.Sprintf("slots[%d].slot", i), Msg: fmt.Sprintf("slot %d is outside the disk (0..%d)", sl.Slot, g.Slots()-1)}
		}
		d, err := chunk.ParseDigest(sl.Digest)
		if err != nil {
			return api.SlotBatchResult{}, &api.FieldError{Field: fmt.Sprintf("slots[%d].digest", i), Msg: "must be a lowercase hex SHA-256"}
		}
		if d == g.Zero(sl.Slot) {
			rows = append(rows, catalog.UploadSlot{Slot: sl.Slot, Digest: sl.Digest})
			continue
		}
		// A chunk this agent has not proved it holds must be uploaded (the known-chunks rule).
		// Touching a known one both checks that it exists and protects it from garbage
		// collection (which spares chunks younger than its grace period) until the index names it.
		if known.has(d) {
			err = repo.TouchChunk(ctx, d)
		} else {
			err = repository.ErrChunkNotFound
		}
		if err != nil && !errors.Is(err, repository.ErrChunkNotFound) {
			return api.SlotBatchResult{}, err
		}
		if err != nil {
			if !seen[d] {
				missing = append(missing, sl.Digest)
				seen[d] = true
			}
			continue
		}
		rows = append(rows, catalog.UploadSlot{Slot: sl.Slot, Digest: sl.Digest})
	}
	if err := s.cat.RecordSlots(ctx, sessionID, rows); err != nil {
		return api.SlotBatchResult{}, err
	}
	s.metrics.slotsRecorded.Add(float64(len(rows)))
	return api.SlotBatchResult{Recorded: len(rows), Missing: missing}, nil
}

// Check compares slot digests the agent read with the parent index of an incremental's session
// and answers the slots whose digest differs: the slots CBT called unchanged that had changed
// (CBT drift). A full backup has no parent to compare with: every slot matches.
func (s *Service) Check(ctx context.Context, agentID, sessionID string, req api.CheckRequest) (api.CheckResult, error) {
	if len(req.Slots) > api.MaxCheckSlots {
		return api.CheckResult{}, &api.FieldError{Field: "slots", Msg: fmt.Sprintf("at most %d per check", api.MaxCheckSlots)}
	}
	ls, err := s.live(ctx, agentID, sessionID)
	if err != nil {
		return api.CheckResult{}, err
	}
	out := api.CheckResult{Mismatched: []int64{}}
	if ls.Type != api.BackupIncremental || len(req.Slots) == 0 {
		return out, nil
	}
	g := grid(&ls.UploadSession)
	want := make([]chunk.Digest, len(req.Slots))
	for i, sl := range req.Slots {
		if !g.Contains(sl.Slot) {
			return api.CheckResult{}, &api.FieldError{Field: fmt.Sprintf("slots[%d].slot", i), Msg: fmt.Sprintf("slot %d is outside the disk (0..%d)", sl.Slot, g.Slots()-1)}
		}
		if want[i], err = chunk.ParseDigest(sl.Digest); err != nil {
			return api.CheckResult{}, &api.FieldError{Field: fmt.Sprintf("slots[%d].digest", i), Msg: "must be a lowercase hex SHA-256"}
		}
	}
	repo, err := s.open(ctx, ls.RepositoryID)
	if err != nil {
		return api.CheckResult{}, err
	}
	release, err := s.indexWork(ctx, ls.SlotCount)
	if err != nil {
		return api.CheckResult{}, err
	}
	defer release()
	parent, err := s.parentIndex(ctx, repo, ls.InstanceUUID, ls.DiskID, ls.ParentJobID)
	if err != nil {
		return api.CheckResult{}, err
	}
	for i, sl := range req.Slots {
		if sl.Slot >= int64(len(parent.Digests)) || parent.Digests[sl.Slot] != want[i] {
			out.Mismatched = append(out.Mismatched, sl.Slot)
		}
	}
	// Remembered before it is answered: an agent that stops after this answer and resumes the
	// session learns from the session that CBT is not to be trusted, and the commit holds it to that.
	if len(out.Mismatched) > 0 {
		if err := s.cat.RecordSessionDrift(ctx, sessionID, int64(len(out.Mismatched))); err != nil {
			return api.CheckResult{}, err
		}
	}
	return out, nil
}

// parentIndex reads the index of an incremental's parent. A parent deleted while the
// incremental ran (deletion refuses that, but not a removal outside the hub) → ErrConflict
// naming it: the incremental cannot be completed, the next backup of the disk is a full one.
func (s *Service) parentIndex(ctx context.Context, repo Repository, vmUUID, diskID, parentID string) (*fidx.Index, error) {
	idx, err := repo.ReadIndex(ctx, repository.IndexRef{VMUUID: vmUUID, DiskID: diskID, BackupID: parentID})
	switch {
	case errors.Is(err, repository.ErrIndexNotFound):
		return nil, fmt.Errorf("the parent backup %s of this incremental of %s has no index any more (deleted?): %w", parentID, diskID, catalog.ErrConflict)
	case err != nil:
		return nil, fmt.Errorf("read parent index of %s: %w", diskID, err)
	}
	return idx, nil
}

// Commit writes the disk's fixed index — the parent's index with the recorded slots replaced,
// or a new one for a full — after the repository has checked that every chunk it names is
// durable, and records the disk's result. Committing twice returns the first result.
func (s *Service) Commit(ctx context.Context, agentID, sessionID string, req api.CommitRequest) (api.BackupDisk, error) {
	ls, err := s.cat.AgentLiveSession(ctx, sessionID, agentID)
	if err != nil {
		return api.BackupDisk{}, err
	}
	if ls.JobStatus != api.JobRunning {
		return api.BackupDisk{}, fmt.Errorf("job %s is %s: %w", ls.JobID, ls.JobStatus, catalog.ErrConflict)
	}
	sess := &ls.UploadSession
	if err := checkCommit(req, grid(sess)); err != nil {
		return api.BackupDisk{}, err
	}
	if req.CBTDrift && sess.Type != api.BackupIncremental {
		return api.BackupDisk{}, &api.FieldError{Field: "cbt_drift", Msg: "only an incremental can find CBT drift"}
	}
	if len(req.DriftSlots) > api.MaxDriftSlots {
		return api.BackupDisk{}, &api.FieldError{Field: "drift_slots", Msg: fmt.Sprintf("at most %d", api.MaxDriftSlots)}
	}
	if sess.Status == api.SessionCommitted {
		bds, err := s.cat.BackupDisks(ctx, sess.JobID)
		if err != nil {
			return api.BackupDisk{}, err
		}
		for _, bd := range bds {
			if bd.DiskID == sess.DiskID {
				return bd.Wire(), nil
			}
		}
		return api.BackupDisk{}, fmt.Errorf("upload session %s is committed without a result: %w", sessionID, catalog.ErrConflict)
	}
	if sess.Status != api.SessionOpen && sess.Status != api.SessionCommitting {
		return api.BackupDisk{}, fmt.Errorf("upload session %s is %s: %w", sessionID, sess.Status, catalog.ErrConflict)
	}
	drift := req.CBTDrift || sess.DriftCount > 0
	if drift && sess.Status == api.SessionOpen {
		// Slots CBT called unchanged had changed: the parent's digests cannot stand for any slot,
		// so every slot must have been read and recorded — also by an agent that resumed the
		// session after the one that found the drift stopped.
		n, err := s.cat.CountSessionSlots(ctx, sessionID)
		if err != nil {
			return api.BackupDisk{}, err
		}
		if n < sess.SlotCount {
			return api.BackupDisk{}, fmt.Errorf("CBT drift was found in upload session %s, so every slot must be read before its commit; %d of %d are recorded: %w",
				sessionID, n, sess.SlotCount, catalog.ErrConflict)
		}
	}
	repo, err := s.open(ctx, sess.RepositoryID)
	if err != nil {
		return api.BackupDisk{}, err
	}
	// From here the session takes no more slots: an upload still arriving fails (409) instead
	// of being acknowledged for a slot this index would not name.
	if err := s.cat.BeginCommit(ctx, sessionID); err != nil {
		return api.BackupDisk{}, err
	}
	release, err := s.indexWork(ctx, sess.SlotCount)
	if err != nil {
		return api.BackupDisk{}, err
	}
	defer release()
	var idx *fidx.Index
	if sess.Type == api.BackupIncremental {
		parent, err := s.parentIndex(ctx, repo, ls.InstanceUUID, sess.DiskID, sess.ParentJobID)
		if err != nil {
			return api.BackupDisk{}, err
		}
		if idx, err = fidx.Derive(parent, sess.CapacityBytes); err != nil {
			return api.BackupDisk{}, fmt.Errorf("derive index of %s: %w", sess.DiskID, err)
		}
	} else if idx, err = fidx.New(sess.CapacityBytes, sess.ChunkSize); err != nil {
		return api.BackupDisk{}, fmt.Errorf("new index of %s: %w", sess.DiskID, err)
	}
	idx.Created = sess.CreatedAt.UTC() // deterministic: a retried commit writes the same bytes
	recorded := 0
	err = s.cat.EachSessionSlot(ctx, sessionID, func(slot int64, digest string) error {
		d, err := chunk.ParseDigest(digest)
		if err != nil {
			return fmt.Errorf("slot %d of session %s: %w", slot, sessionID, err)
		}
		if slot < 0 || slot >= int64(len(idx.Digests)) {
			return fmt.Errorf("slot %d of session %s is outside its index of %d slots", slot, sessionID, len(idx.Digests))
		}
		idx.Digests[slot] = d
		recorded++
		return nil
	})
	if err != nil {
		return api.BackupDisk{}, err
	}
	ref := repository.IndexRef{VMUUID: ls.InstanceUUID, DiskID: sess.DiskID, BackupID: sess.JobID}
	digest, err := repo.WriteIndex(ctx, ref, idx)
	if err != nil {
		return api.BackupDisk{}, fmt.Errorf("write index of %s: %w", sess.DiskID, err)
	}
	bd := &catalog.BackupDisk{
		JobID: sess.JobID, VMContextID: ls.VMContextID, DiskID: sess.DiskID, Type: sess.Type, Reason: sess.Reason,
		ParentJobID: sess.ParentJobID, BaseChangeID: sess.BaseChangeID, ChangeID: sess.ChangeID,
		CapacityBytes: sess.CapacityBytes, ChunkSize: sess.ChunkSize, SlotsTotal: sess.SlotCount, SlotsChanged: req.SlotsChanged,
		BytesRead: req.BytesRead, BytesSent: req.BytesSent, BytesDeduplicated: req.BytesDeduplicated, BytesZero: req.BytesZero,
		IndexPath: ref.String(), IndexDigest: digest, StartedAt: sess.CreatedAt, FinishedAt: s.now().UTC(), CBTDrift: drift,
	}
	got, err := s.cat.CommitSession(ctx, sessionID, bd)
	if err != nil {
		return api.BackupDisk{}, err
	}
	if drift {
		s.driftFound(ctx, ls, req)
	}
	s.indexInUseAdd(s.knownSets.drop(sessionID))
	s.log.InfoContext(ctx, "disk committed", "job_id", sess.JobID, "disk_id", sess.DiskID, "type", sess.Type, "slots_recorded", recorded, "index", ref.String())
	return got.Wire(), nil
}

// driftFound counts and records CBT drift found by a committed incremental. The backup itself is
// already correct (the agent read every slot), so a failure to record the event is logged only.
func (s *Service) driftFound(ctx context.Context, ls *catalog.LiveSession, req api.CommitRequest) {
	s.metrics.cbtDrift.Inc()
	list := make([]string, len(req.DriftSlots))
	for i, sl := range req.DriftSlots {
		list[i] = strconv.FormatInt(sl, 10)
	}
	// The agent's count is exact; the session's counts checks sent again twice, and is all there
	// is when the agent that found the drift stopped and another resumed the session.
	count := max(req.DriftCount, int64(len(req.DriftSlots)))
	if count == 0 {
		count = ls.DriftCount
	}
	s.log.WarnContext(ctx, "CBT drift: slots CBT called unchanged had changed; the whole disk was read", "job_id", ls.JobID,
		"disk_id", ls.DiskID, "vm_context_id", ls.VMContextID, "drift_count", count, "slots", list)
	err := s.cat.RecordEvents(ctx, []catalog.Event{{Type: api.EventCBTDrift, VMContextID: ls.VMContextID, AgentID: ls.AgentID, Actor: ls.AgentID,
		Outcome: api.OutcomeOK, Details: map[string]string{"backup_id": ls.JobID, "disk_id": ls.DiskID,
			"drift_count": strconv.FormatInt(count, 10), "slots": strings.Join(list, ",")}}})
	if err != nil {
		s.log.ErrorContext(ctx, "could not record the CBT drift event", "job_id", ls.JobID, "disk_id", ls.DiskID, "err", err)
	}
}

// checkCommit refuses a commit whose numbers no disk of this geometry can produce: nothing is
// negative, nothing read exceeds the disk, and what was sent exceeds it at most by the blob
// framing.
func checkCommit(req api.CommitRequest, g chunk.Grid) error {
	if req.SlotsChanged < 0 || req.SlotsChanged > g.Slots() {
		return &api.FieldError{Field: "slots_changed", Msg: fmt.Sprintf("must be between 0 and %d", g.Slots())}
	}
	for _, f := range []struct {
		name   string
		v, max int64
	}{
		{"bytes_read", req.BytesRead, g.Capacity},
		{"bytes_deduplicated", req.BytesDeduplicated, g.Capacity},
		{"bytes_zero", req.BytesZero, g.Capacity},
		{"bytes_sent", req.BytesSent, g.Slots() * MaxChunkUpload(g.ChunkSize)},
	} {
		if f.v < 0 || f.v > f.max {
			return &api.FieldError{Field: f.name, Msg: fmt.Sprintf("must be between 0 and %d for this disk", f.max)}
		}
	}
	return nil
}
