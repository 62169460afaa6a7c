package backup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// MaxDiskBytes bounds the capacity of a disk accepted in a session (64 TiB, the vSphere limit).
const MaxDiskBytes = 64 << 40

// NextJob waits up to wait for a job for the agent: one of its running jobs it is not busy with
// (it restarted), else a queued one, claimed exactly once. It returns nil when none came, or when
// ctx ends (the agent went away or the hub is shutting down).
func (s *Service) NextJob(ctx context.Context, agentID string, busy []string, wait time.Duration) (*api.Job, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		woken := s.waiter(agentID) // registered before looking, so a job queued meanwhile wakes us
		j, resumed, err := s.cat.ClaimJob(ctx, agentID, busy)
		if err != nil {
			return nil, err
		}
		if j != nil {
			spec, err := s.jobSpec(ctx, j, resumed)
			if err != nil {
				return nil, err
			}
			if resumed {
				s.log.InfoContext(ctx, "job handed back to its agent after a restart", "job_id", j.ID, "agent_id", agentID)
			} else {
				s.log.InfoContext(ctx, "job claimed", "job_id", j.ID, "agent_id", agentID, "vm_context_id", j.VMContextID)
			}
			return spec, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-deadline.C:
			return nil, nil
		case <-woken:
		case <-time.After(s.opts.PollInterval):
		}
	}
}

func (s *Service) jobSpec(ctx context.Context, j *catalog.BackupJob, resumed bool) (*api.Job, error) {
	vm, err := s.cat.VMByContextID(ctx, j.VMContextID)
	if err != nil {
		return nil, err
	}
	repo, err := s.cat.RepositoryByID(ctx, j.RepositoryID)
	if err != nil {
		return nil, err
	}
	disks, err := s.cat.VMDisks(ctx, j.VMContextID)
	if err != nil {
		return nil, err
	}
	spec := &api.Job{
		ID: j.ID, Status: j.Status, RequestedType: j.RequestedType, SnapshotName: j.SnapshotName, Resumed: resumed,
		VM:         api.JobVM{ContextID: vm.ContextID, Name: vm.VMName, Source: vm.SourceName, InstanceUUID: vm.InstanceUUID, CBTEnabled: vm.CBTEnabled},
		Repository: api.JobRepo{ID: repo.ID, ChunkSize: repo.ChunkSize},
	}
	for _, d := range disks {
		if d.Status != catalog.DiskPresent || !d.Backupable {
			continue
		}
		jd := api.JobDisk{DiskID: d.DiskID, Key: d.DeviceKey, CapacityBytes: d.CapacityBytes}
		if j.RequestedType != catalog.BackupFull {
			parent, err := s.cat.LatestBackupDisk(ctx, j.VMContextID, d.DiskID, j.RepositoryID)
			switch {
			case err == nil:
				jd.Parent = &api.ParentRef{BackupID: parent.JobID, ChangeID: parent.ChangeID, CapacityBytes: parent.CapacityBytes}
			case !errors.Is(err, catalog.ErrNotFound):
				return nil, err
			}
		}
		spec.Disks = append(spec.Disks, jd)
	}
	return spec, nil
}

func jobState(j *catalog.BackupJob) api.JobState {
	return api.JobState{ID: j.ID, Status: j.Status, CancelRequested: j.CancelRequested}
}

// JobState tells an agent the state of one of its jobs.
func (s *Service) JobState(ctx context.Context, agentID, id string) (api.JobState, error) {
	j, err := s.cat.AgentJob(ctx, id, agentID)
	if err != nil {
		return api.JobState{}, err
	}
	return jobState(j), nil
}

// Progress records a running job's heartbeat and counters and answers whether to cancel.
func (s *Service) Progress(ctx context.Context, agentID, id string, p api.JobProgress) (api.JobState, error) {
	j, err := s.cat.JobProgress(ctx, id, agentID, catalog.JobCounters{
		BytesRead: p.BytesRead, BytesSent: p.BytesSent, BytesDeduplicated: p.BytesDeduplicated, BytesZero: p.BytesZero,
	}, p.SnapshotRef, p.SnapshotCreatedAt)
	if err != nil {
		return api.JobState{}, err
	}
	return jobState(j), nil
}

// Complete ends a job. A success requires a committed session for every disk of the job; a
// failure or cancellation discards whatever the job wrote.
func (s *Service) Complete(ctx context.Context, agentID, id string, c api.JobCompletion) error {
	switch c.Status {
	case api.JobSucceeded, api.JobFailed, api.JobCancelled:
	default:
		return &api.FieldError{Field: "status", Msg: "must be succeeded, failed or cancelled"}
	}
	j, dropped, err := s.cat.FinishJob(ctx, id, agentID, c.Status, c.Error, c.Notes)
	if err != nil {
		return err
	}
	if len(dropped) > 0 {
		vm, verr := s.cat.VMByContextID(ctx, j.VMContextID)
		if verr == nil {
			s.removeIndexes(ctx, j.RepositoryID, vm.InstanceUUID, dropped)
		}
	}
	s.metrics.JobsFinished.WithLabelValues(j.Status).Inc()
	if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
		s.metrics.BackupDuration.Observe(j.FinishedAt.Sub(j.StartedAt).Seconds())
	}
	if j.Status == catalog.JobSucceeded {
		s.metrics.BackupBytesRead.Add(float64(j.BytesRead))
		s.metrics.BackupBytesSent.Add(float64(j.BytesSent))
		s.metrics.BackupBytesDedup.Add(float64(j.BytesDeduplicated))
	}
	level := s.log.InfoContext
	if j.Status != catalog.JobSucceeded {
		level = s.log.WarnContext
	}
	if s.OnFinished != nil {
		s.OnFinished(*j)
	}
	level(ctx, "backup finished", "job_id", id, "agent_id", agentID, "vm_context_id", j.VMContextID, "status", j.Status, "type", j.Type,
		"bytes_read", j.BytesRead, "bytes_sent", j.BytesSent, "bytes_deduplicated", j.BytesDeduplicated, "err", c.Error, "notes", c.Notes)
	return nil
}

// ReapStale fails running jobs whose agent went silent, every interval until ctx ends.
func (s *Service) ReapStale(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		failed, err := s.cat.FailStaleJobs(ctx, s.opts.Now().Add(-s.opts.JobTimeout))
		if err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "fail stale jobs", "err", err)
		}
		for _, f := range failed {
			s.metrics.JobsFinished.WithLabelValues(catalog.JobFailed).Inc()
			s.log.WarnContext(ctx, "backup failed: its agent stopped reporting", "job_id", f.Job.ID, "agent_id", f.Job.AgentID, "timeout_seconds", s.opts.JobTimeout.Seconds())
			if vm, err := s.cat.VMByContextID(ctx, f.Job.VMContextID); err == nil {
				s.removeIndexes(ctx, f.Job.RepositoryID, vm.InstanceUUID, f.Discarded)
			}
		}
	}
}

// runningJob returns the agent's job, which must be running.
func (s *Service) runningJob(ctx context.Context, agentID, id string) (*catalog.BackupJob, error) {
	j, err := s.cat.AgentJob(ctx, id, agentID)
	if err != nil {
		return nil, err
	}
	if j.Status != catalog.JobRunning {
		return nil, fmt.Errorf("job %s is %s: %w", id, j.Status, catalog.ErrConflict)
	}
	return j, nil
}

// OpenSession opens (or reopens, for a resuming agent) the upload session of one disk of a job.
// An incremental must name the disk's latest successful backup as parent, with the same
// capacity and chunk size and its change ID as base; otherwise ErrFullRequired says why.
func (s *Service) OpenSession(ctx context.Context, agentID, jobID, diskID string, req api.OpenSessionRequest) (api.Session, error) {
	j, err := s.runningJob(ctx, agentID, jobID)
	if err != nil {
		return api.Session{}, err
	}
	repo, err := s.cat.RepositoryByID(ctx, j.RepositoryID)
	if err != nil {
		return api.Session{}, err
	}
	disks, err := s.cat.VMDisks(ctx, j.VMContextID)
	if err != nil {
		return api.Session{}, err
	}
	if !slices.ContainsFunc(disks, func(d catalog.VMDisk) bool {
		return d.DiskID == diskID && d.Status == catalog.DiskPresent && d.Backupable
	}) {
		return api.Session{}, fmt.Errorf("disk %s is not a backup-able disk of the job's VM: %w", diskID, catalog.ErrNotFound)
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
	case req.Type == api.BackupIncremental && j.RequestedType == catalog.BackupFull:
		return api.Session{}, fmt.Errorf("%w: the job asks for a full backup", ErrFullRequired)
	}
	sess := &catalog.UploadSession{
		JobID: jobID, DiskID: diskID, AgentID: agentID, RepositoryID: repo.ID, Type: req.Type, Reason: req.Reason,
		BaseChangeID: req.BaseChangeID, ChangeID: req.ChangeID, CapacityBytes: req.CapacityBytes, ChunkSize: req.ChunkSize,
		SlotCount: chunk.Grid{Capacity: req.CapacityBytes, ChunkSize: req.ChunkSize}.Slots(),
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
	if sess.ID, err = newID("us-", s.opts.Now()); err != nil {
		return api.Session{}, err
	}
	got, err := s.cat.OpenSession(ctx, sess)
	if err != nil {
		return api.Session{}, err
	}
	return s.sessionInfo(ctx, got)
}

// Session returns an agent's session with the slots already recorded, for resuming.
func (s *Service) Session(ctx context.Context, agentID, id string) (api.Session, error) {
	sess, err := s.cat.AgentSession(ctx, id, agentID)
	if err != nil {
		return api.Session{}, err
	}
	return s.sessionInfo(ctx, sess)
}

func (s *Service) sessionInfo(ctx context.Context, sess *catalog.UploadSession) (api.Session, error) {
	slots, err := s.cat.SessionSlots(ctx, sess.ID)
	if err != nil {
		return api.Session{}, err
	}
	out := api.Session{ID: sess.ID, JobID: sess.JobID, DiskID: sess.DiskID, Type: sess.Type, CapacityBytes: sess.CapacityBytes,
		ChunkSize: sess.ChunkSize, SlotCount: sess.SlotCount, Status: sess.Status, Done: [][2]int64{}}
	for _, sl := range slots {
		if n := len(out.Done); n > 0 && out.Done[n-1][1] == sl.Slot {
			out.Done[n-1][1]++
			continue
		}
		out.Done = append(out.Done, [2]int64{sl.Slot, sl.Slot + 1})
	}
	return out, nil
}

// openSession returns the agent's session (which must be open, of a running job) and its
// repository.
func (s *Service) openSession(ctx context.Context, agentID, id string) (*catalog.UploadSession, *repository.Repository, error) {
	sess, err := s.cat.AgentSession(ctx, id, agentID)
	if err != nil {
		return nil, nil, err
	}
	if sess.Status != catalog.SessionOpen {
		return nil, nil, fmt.Errorf("upload session %s is %s: %w", id, sess.Status, catalog.ErrConflict)
	}
	if _, err := s.runningJob(ctx, agentID, sess.JobID); err != nil {
		return nil, nil, err
	}
	repo, err := s.repos.Open(ctx, sess.RepositoryID)
	if err != nil {
		return nil, nil, err
	}
	return sess, repo, nil
}

// MaxChunkUpload is the largest blob accepted for a session's chunk size.
func MaxChunkUpload(chunkSize int64) int64 { return int64(chunk.MaxBlobLen(int(chunkSize))) }

// PutChunk stores one uploaded chunk after re-hashing it: a blob whose content does not hash to
// its name is refused and nothing is stored. It reports whether the chunk was new.
func (s *Service) PutChunk(ctx context.Context, agentID, sessionID, digest string, blob []byte) (bool, error) {
	d, err := chunk.ParseDigest(digest)
	if err != nil {
		return false, &api.FieldError{Field: "digest", Msg: "must be a lowercase hex SHA-256"}
	}
	_, repo, err := s.openSession(ctx, agentID, sessionID)
	if err != nil {
		return false, err
	}
	stored, err := repo.PutChunk(ctx, d, blob)
	switch {
	case errors.Is(err, repository.ErrDigestMismatch):
		s.metrics.DigestMismatches.Inc()
		s.log.WarnContext(ctx, "chunk refused: content does not match its digest", "agent_id", agentID, "session_id", sessionID, "digest", digest)
		return false, err
	case err != nil:
		s.metrics.BadBlobs.Inc()
		return false, err
	}
	s.metrics.ChunksReceived.Inc()
	s.metrics.ChunkBytes.Add(float64(len(blob)))
	if !stored {
		s.metrics.ChunksDuplicate.Inc() // PutChunk touched it: garbage collection spares it now
	}
	return stored, nil
}

// RecordSlots records slots whose chunk the repository holds (or that are all zero) and returns
// the digests it lacks; those slots are not recorded until the agent uploads them and sends them
// again.
func (s *Service) RecordSlots(ctx context.Context, agentID, sessionID string, batch api.SlotBatch) (api.SlotBatchResult, error) {
	if len(batch.Slots) > api.MaxSlotBatch {
		return api.SlotBatchResult{}, &api.FieldError{Field: "slots", Msg: fmt.Sprintf("at most %d per batch", api.MaxSlotBatch)}
	}
	sess, repo, err := s.openSession(ctx, agentID, sessionID)
	if err != nil {
		return api.SlotBatchResult{}, err
	}
	var rows []catalog.UploadSlot
	var missing []string
	seen := map[chunk.Digest]bool{}
	grid := chunk.Grid{Capacity: sess.CapacityBytes, ChunkSize: sess.ChunkSize}
	for i, sl := range batch.Slots {
		if !grid.Contains(sl.Slot) {
			return api.SlotBatchResult{}, &api.FieldError{Field: fmt.Sprintf("slots[%d].slot", i), Msg: fmt.Sprintf("slot %d is outside the disk (0..%d)", sl.Slot, sess.SlotCount-1)}
		}
		d, err := chunk.ParseDigest(sl.Digest)
		if err != nil {
			return api.SlotBatchResult{}, &api.FieldError{Field: fmt.Sprintf("slots[%d].digest", i), Msg: "must be a lowercase hex SHA-256"}
		}
		if d == grid.Zero(sl.Slot) {
			rows = append(rows, catalog.UploadSlot{Slot: sl.Slot, Digest: sl.Digest})
			continue
		}
		// Touching both checks that the chunk exists and protects it from garbage collection
		// (which spares chunks younger than its grace period) until the index names it.
		err = repo.TouchChunk(ctx, d)
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
	s.metrics.SlotsRecorded.Add(float64(len(rows)))
	return api.SlotBatchResult{Recorded: len(rows), Missing: missing}, nil
}

// Commit writes the disk's fixed index — the parent's index with the recorded slots replaced,
// or a new one for a full — after the repository has checked that every chunk it names is
// durable, and records the disk's result. Committing twice returns the first result.
func (s *Service) Commit(ctx context.Context, agentID, sessionID string, req api.CommitRequest) (api.BackupDisk, error) {
	sess, err := s.cat.AgentSession(ctx, sessionID, agentID)
	if err != nil {
		return api.BackupDisk{}, err
	}
	j, err := s.runningJob(ctx, agentID, sess.JobID)
	if err != nil {
		return api.BackupDisk{}, err
	}
	vm, err := s.cat.VMByContextID(ctx, j.VMContextID)
	if err != nil {
		return api.BackupDisk{}, err
	}
	if sess.Status == catalog.SessionCommitted {
		bds, err := s.cat.BackupDisks(ctx, sess.JobID)
		if err != nil {
			return api.BackupDisk{}, err
		}
		for _, bd := range bds {
			if bd.DiskID == sess.DiskID {
				return diskInfo(&bd), nil
			}
		}
		return api.BackupDisk{}, fmt.Errorf("upload session %s is committed without a result: %w", sessionID, catalog.ErrConflict)
	}
	if sess.Status != catalog.SessionOpen {
		return api.BackupDisk{}, fmt.Errorf("upload session %s is %s: %w", sessionID, sess.Status, catalog.ErrConflict)
	}
	repo, err := s.repos.Open(ctx, sess.RepositoryID)
	if err != nil {
		return api.BackupDisk{}, err
	}
	var idx *fidx.Index
	if sess.Type == catalog.BackupIncremental {
		parent, err := repo.ReadIndex(ctx, indexRef(vm.InstanceUUID, sess.DiskID, sess.ParentJobID))
		if err != nil {
			return api.BackupDisk{}, fmt.Errorf("read parent index of %s: %w", sess.DiskID, err)
		}
		if idx, err = fidx.Derive(parent, sess.CapacityBytes); err != nil {
			return api.BackupDisk{}, fmt.Errorf("derive index of %s: %w", sess.DiskID, err)
		}
	} else if idx, err = fidx.New(sess.CapacityBytes, sess.ChunkSize); err != nil {
		return api.BackupDisk{}, fmt.Errorf("new index of %s: %w", sess.DiskID, err)
	}
	idx.Created = sess.CreatedAt.UTC() // deterministic: a retried commit writes the same bytes
	slots, err := s.cat.SessionSlots(ctx, sessionID)
	if err != nil {
		return api.BackupDisk{}, err
	}
	for _, sl := range slots {
		d, err := chunk.ParseDigest(sl.Digest)
		if err != nil {
			return api.BackupDisk{}, fmt.Errorf("slot %d of session %s: %w", sl.Slot, sessionID, err)
		}
		idx.Digests[sl.Slot] = d
	}
	ref := indexRef(vm.InstanceUUID, sess.DiskID, sess.JobID)
	digest, err := repo.WriteIndex(ctx, ref, idx)
	if err != nil {
		return api.BackupDisk{}, fmt.Errorf("write index of %s: %w", sess.DiskID, err)
	}
	now := s.opts.Now().UTC()
	bd := &catalog.BackupDisk{
		JobID: sess.JobID, VMContextID: j.VMContextID, DiskID: sess.DiskID, Type: sess.Type, Reason: sess.Reason,
		ParentJobID: sess.ParentJobID, BaseChangeID: sess.BaseChangeID, ChangeID: sess.ChangeID,
		CapacityBytes: sess.CapacityBytes, ChunkSize: sess.ChunkSize, SlotsTotal: sess.SlotCount, SlotsChanged: req.SlotsChanged,
		BytesRead: req.BytesRead, BytesSent: req.BytesSent, BytesDeduplicated: req.BytesDeduplicated, BytesZero: req.BytesZero,
		IndexPath: ref.String(), IndexDigest: digest, StartedAt: sess.CreatedAt, FinishedAt: now,
	}
	got, err := s.cat.CommitSession(ctx, sessionID, bd)
	if err != nil {
		return api.BackupDisk{}, err
	}
	s.log.InfoContext(ctx, "disk committed", "job_id", sess.JobID, "disk_id", sess.DiskID, "type", sess.Type, "slots_recorded", len(slots), "index", ref.String())
	return diskInfo(got), nil
}

func diskInfo(d *catalog.BackupDisk) api.BackupDisk {
	return backupInfo(&catalog.BackupRow{}, []catalog.BackupDisk{*d}).Disks[0]
}
