package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/agent/internal/disk"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// ErrCancelled is the cause of a job stopped by the operator.
var ErrCancelled = errors.New("cancelled by the operator")

// jobHub is what a job needs from the hub.
type jobHub interface {
	sessionHub
	Progress(ctx context.Context, jobID string, p api.JobProgress) (api.JobState, error)
	Complete(ctx context.Context, jobID string, done api.JobCompletion) error
	OpenSession(ctx context.Context, jobID, diskID string, req api.OpenSessionRequest) (api.Session, error)
	Commit(ctx context.Context, sessionID string, req api.CommitRequest) (api.BackupDisk, error)
	// Check answers which of the slot digests differ from the parent index of an incremental's
	// session (read-only, so idempotent).
	Check(ctx context.Context, sessionID string, req api.CheckRequest) (api.CheckResult, error)
	// ReportDisks tells the hub the VM's disks as the snapshot shows them and answers the job
	// with the disks to back up (new ones included, with their geometry).
	ReportDisks(ctx context.Context, jobID string, r api.JobDisksReport) (*api.Job, error)
	// PutVMConfig stores the VM's configuration with the backup (idempotent).
	PutVMConfig(ctx context.Context, jobID string, cfg api.VMConfig) error
}

// Source is one connected vCenter/ESXi endpoint (sources.Conn). Both calls may connect, and
// may be called concurrently by parallel jobs.
type Source interface {
	FindVM(ctx context.Context, instanceUUID string) (*vsphere.VM, error)
	// OpenDisk opens a snapshot disk with the source's configured transport; the Reader's
	// Close releases everything it started.
	OpenDisk(ctx context.Context, d vsphere.SnapshotDisk) (disk.Reader, error)
}

// changeTracker answers CBT queries against the job's snapshot (*vsphere.Snapshot): the areas
// of a disk changed since changeID ("*": the allocated areas). It fails with
// vsphere.ErrChangeIDInvalid or vsphere.ErrCBTUnavailable when CBT cannot answer.
type changeTracker interface {
	ChangedAreas(ctx context.Context, diskKey int32, capacity int64, changeID string) ([]vsphere.Extent, error)
}

// Runner runs backup jobs.
type Runner struct {
	hub     jobHub
	sources func(name string) (Source, error)
	log     *slog.Logger
	metrics *Metrics
	opts    RunnerOptions

	mu        sync.Mutex
	snapshots map[string]time.Time // open snapshots by job id → creation time
	active    map[string]bool      // jobs running now
}

// RunnerOptions tune jobs.
type RunnerOptions struct {
	// AgentID marks the job snapshots this agent takes (api.SnapshotDescription), so that its
	// reaper removes only those.
	AgentID string
	Upload  UploadOptions
	// CompleteWithin is how long the report of a job's outcome is retried while the hub is away
	// (default 10 minutes, the hub's default job_timeout).
	CompleteWithin   time.Duration
	ProgressInterval time.Duration // default 5s
	Now              func() time.Time
}

// NewRunner returns a job runner. sources resolves a job's source name to a connected source.
func NewRunner(hub jobHub, sources func(name string) (Source, error), log *slog.Logger, m *Metrics, opts RunnerOptions) *Runner {
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CompleteWithin <= 0 {
		opts.CompleteWithin = 10 * time.Minute
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if opts.Upload.Pool == nil {
		opts.Upload.Pool = NewBufferPool(opts.Upload.MaxInFlight)
	}
	r := &Runner{hub: hub, sources: sources, log: log, metrics: m, opts: opts, snapshots: map[string]time.Time{}, active: map[string]bool{}}
	age := r.oldestSnapshotAge
	m.oldestSnapshot.Store(&age)
	return r
}

// Run runs one job to its end and reports the outcome to the hub. The snapshot it takes is
// removed in every case, also when ctx is cancelled (SIGTERM): then the job is reported failed.
// Only a crash leaves the snapshot and the job for a restarted agent to resume.
func (r *Runner) Run(ctx context.Context, job *api.Job) error {
	start := r.opts.Now()
	r.mu.Lock()
	r.active[job.ID] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.active, job.ID)
		r.mu.Unlock()
	}()
	log := r.log.With("job_id", job.ID, "vm_context_id", job.VM.ContextID, "vm_name", job.VM.Name)
	log.InfoContext(ctx, "backup started", "requested_type", job.RequestedType, "resumed", job.Resumed, "disks", len(job.Disks))
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c := &Counters{}
	st := &jobStatus{}
	stopProgress := r.reportProgress(jctx, job.ID, c, st, cancel, log)
	notes, err := r.run(jctx, job, c, st, log)
	stopProgress()

	status, msg := api.JobSucceeded, ""
	switch {
	case err == nil:
	case errors.Is(context.Cause(jctx), ErrCancelled):
		status, msg = api.JobCancelled, "cancelled by the operator"
	case ctx.Err() != nil:
		status, msg = api.JobFailed, "the agent was stopped during the backup"
	default:
		status, msg = api.JobFailed, err.Error()
	}
	// The outcome must reach the hub even when ctx is already cancelled (SIGTERM), and a hub
	// that is away for a while must not cost a finished backup: the report is retried until the
	// hub would fail the silent job anyway (its job_timeout, 10 minutes by default), or for two
	// minutes of a stopping agent.
	within := r.opts.CompleteWithin
	if ctx.Err() != nil {
		within = min(within, 2*time.Minute)
	}
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), within)
	defer ccancel()
	if cerr := r.complete(cctx, job.ID, c, api.JobCompletion{Status: status, Error: msg, Notes: strings.Join(notes, "; ")}, log); cerr != nil {
		log.ErrorContext(cctx, "could not report the end of the job", "status", status, "err", cerr)
		if err == nil {
			err = cerr
		}
	}
	r.metrics.jobs.WithLabelValues(status).Inc()
	r.metrics.jobDuration.Observe(r.opts.Now().Sub(start).Seconds())
	read, sent, dedup, zero := c.all() // of this run: a resumed job's earlier runs are the hub's to add
	log.InfoContext(ctx, "backup finished", "status", status, "bytes_read", read, "bytes_sent", sent,
		"bytes_deduplicated", dedup, "bytes_zero", zero, "duration_seconds", r.opts.Now().Sub(start).Seconds(), "err", msg)
	return err
}

// complete reports the job's last progress and its outcome to the hub, in one request, again and
// again while the hub cannot be reached or answers with a server error, until ctx ends. A hub
// that refuses the progress field of a completion (an older one does not know it) gets the two
// requests it knows: the outcome never waits on the progress.
func (r *Runner) complete(ctx context.Context, jobID string, c *Counters, outcome api.JobCompletion, log *slog.Logger) error {
	p := c.Progress()
	p.Phase = api.PhaseFinished
	outcome.Progress = &p
	wait := min(5*time.Second, r.opts.CompleteWithin/20)
	for {
		if outcome.Progress == nil {
			_, _ = r.hub.Progress(ctx, jobID, p)
		}
		err := r.hub.Complete(ctx, jobID, outcome)
		var he *hubclient.Error
		if outcome.Progress != nil && errors.As(err, &he) && he.Status == http.StatusBadRequest &&
			(he.Body.Field == "progress" || strings.HasPrefix(he.Body.Field, "progress.")) {
			outcome.Progress = nil
			continue
		}
		if st := hubclient.StatusOf(err); err == nil || (st != 0 && st < 500 && st != http.StatusTooManyRequests) {
			return err
		}
		retry := hubclient.Jitter(wait)
		log.WarnContext(ctx, "could not report the end of the job; retrying", "status", outcome.Status, "retry_in_seconds", retry.Seconds(), "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(retry):
		}
		wait = min(2*wait, time.Minute)
	}
}

type jobStatus struct {
	mu      sync.Mutex
	phase   string
	snapRef string
	snapAt  time.Time
	total   int64
}

func (s *jobStatus) set(f func(*jobStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// reportProgress sends the counters every interval (the job's heartbeat) and cancels the job
// when the operator asked for it or the hub no longer considers it running.
func (r *Runner) reportProgress(ctx context.Context, jobID string, c *Counters, st *jobStatus, cancel context.CancelCauseFunc, log *slog.Logger) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.opts.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			p := c.Progress()
			st.mu.Lock()
			p.Phase, p.SnapshotRef, p.SnapshotCreatedAt, p.BytesTotal = st.phase, st.snapRef, st.snapAt, st.total
			st.mu.Unlock()
			state, err := r.hub.Progress(ctx, jobID, p)
			switch {
			case err == nil && state.CancelRequested:
				log.InfoContext(ctx, "the operator cancelled the backup")
				cancel(ErrCancelled)
				return
			case err == nil && state.Status != api.JobRunning:
				cancel(fmt.Errorf("the hub ended the job (%s)", state.Status))
				return
			case hubclient.StatusOf(err) == http.StatusNotFound:
				cancel(errors.New("the hub no longer knows the job"))
				return
			case err != nil && ctx.Err() == nil:
				log.WarnContext(ctx, "progress report failed", "err", err)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (r *Runner) run(ctx context.Context, job *api.Job, c *Counters, st *jobStatus, log *slog.Logger) (notes []string, err error) {
	src, err := r.sources(job.VM.Source)
	if err != nil {
		return nil, err
	}
	vm, err := src.FindVM(ctx, job.VM.InstanceUUID)
	if err != nil {
		return nil, err
	}
	// The inventory may be older than the last job, which enabled CBT: vCenter says whether it
	// is off now. A CBT turned off and on again since the parent has a new change ID UUID, which
	// forces a full anyway (decide).
	cbtWasOff := false
	if !job.VM.CBTEnabled {
		enabled, err := vm.EnableCBT(ctx)
		if err != nil {
			return nil, err
		}
		if enabled {
			cbtWasOff = true
			notes = append(notes, "changed block tracking was off and has been enabled")
		}
	}
	st.set(func(s *jobStatus) { s.phase = api.PhaseSnapshot })
	snap, snapNote, err := r.snapshot(ctx, vm, job)
	if err != nil {
		return notes, err
	}
	if snapNote != "" {
		notes = append(notes, snapNote)
	}
	defer r.removeSnapshot(ctx, job.ID, snap, log)
	st.set(func(s *jobStatus) { s.snapRef, s.snapAt = snap.MoRef(), r.opts.Now().UTC() })

	// The restore point carries the VM's configuration, so that the VM can be created again
	// from the repository alone: a backup without it would not be restorable into vSphere. It
	// is read and sent beside the disks' report and backups (over a long link, a round trip
	// waited for is time lost); the job succeeds only once it is stored, and either failing
	// stops the other.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.sendVMConfig(gctx, job.ID, snap) })
	g.Go(func() error { return r.backupDisks(gctx, job, snap, src, cbtWasOff, c, st, log) })
	return notes, g.Wait()
}

// disksAtOnce bounds the disks of one job backed up at the same time.
const disksAtOnce = 4

// backupDisks reports the disks the snapshot shows and backs up the job's disks, checking
// first that the snapshot has every one of them and that each can be backed up.
func (r *Runner) backupDisks(ctx context.Context, job *api.Job, snap *vsphere.Snapshot, src Source, cbtWasOff bool, c *Counters, st *jobStatus, log *slog.Logger) error {
	sdisks, err := snap.Disks(ctx)
	if err != nil {
		return err
	}
	// The hub takes the disks' geometry from what the snapshot shows, and records disks added
	// since the last discovery, so that this backup includes them.
	report := api.JobDisksReport{Disks: make([]api.Disk, 0, len(sdisks))}
	for _, d := range sdisks {
		report.Disks = append(report.Disks, d.Wire())
	}
	spec, err := r.hub.ReportDisks(ctx, job.ID, report)
	if err != nil {
		return fmt.Errorf("report the snapshot's disks: %w", err)
	}
	job.Disks = spec.Disks
	byKey := map[int32]vsphere.SnapshotDisk{}
	for _, d := range sdisks {
		byKey[d.Key] = d
	}
	for _, jd := range job.Disks {
		sd, ok := byKey[jd.Key]
		if !ok {
			return fmt.Errorf("disk %s (key %d) is not in the snapshot; was it removed?", jd.DiskID, jd.Key)
		}
		if !sd.Backupable {
			return fmt.Errorf("disk %s cannot be backed up: %s", jd.DiskID, sd.NotBackupableReason)
		}
	}
	// The disks are backed up at once: each disk's session, CBT query and commit are round
	// trips of their own, which over a long link one disk after another would wait for in
	// turn. They share the process's upload budget (UploadOptions), so memory stays bounded.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(disksAtOnce)
	for _, jd := range job.Disks {
		sd := byKey[jd.Key]
		g.Go(func() error {
			if err := r.backupDisk(gctx, job, jd, snap, sd, src, cbtWasOff, c, st, log.With("disk_id", jd.DiskID)); err != nil {
				return fmt.Errorf("disk %s: %w", jd.DiskID, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// sendVMConfig reads the VM's configuration as the snapshot recorded it and stores it with the
// job's backup.
func (r *Runner) sendVMConfig(ctx context.Context, jobID string, snap *vsphere.Snapshot) error {
	cfg, err := snap.VMConfig(ctx)
	if err != nil {
		return err
	}
	if err := r.hub.PutVMConfig(ctx, jobID, cfg); err != nil {
		return fmt.Errorf("send the VM configuration: %w", err)
	}
	return nil
}

// Busy lists the jobs running now.
func (r *Runner) Busy() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.active))
	for id := range r.active {
		out = append(out, id)
	}
	return out
}

// plan decides how one disk is backed up: full or incremental, why, and which slots to read.
type plan struct {
	typ, reason    string
	parent, baseID string
	allSlots       bool // no CBT to ask: read every slot
}

func decide(job *api.Job, jd api.JobDisk, sd vsphere.SnapshotDisk, cbtWasOff bool) plan {
	full := func(reason string) plan {
		if sd.ChangeID == "" {
			reason += "; the disk has no change ID (no CBT): every slot read"
		}
		return plan{typ: api.BackupFull, reason: reason, allSlots: sd.ChangeID == ""}
	}
	p := jd.Parent
	switch {
	case job.RequestedType == api.BackupFull:
		return full("full backup requested")
	case p == nil:
		return full("no earlier backup of this disk")
	case jd.FullReason != "":
		return full(jd.FullReason)
	case cbtWasOff:
		return full("changed block tracking was off")
	case sd.ChangeID == "":
		return full("changed block tracking is off for this disk")
	case p.CapacityBytes != sd.CapacityBytes:
		return full(fmt.Sprintf("disk resized from %d to %d bytes", p.CapacityBytes, sd.CapacityBytes))
	case p.ChangeID == "":
		return full("the parent backup has no change ID")
	}
	// Two malformed IDs would both parse to an empty UUID and look unchanged: only IDs that
	// parse can vouch for an incremental.
	pu, pseq, pok := vsphere.ParseChangeID(p.ChangeID)
	su, sseq, sok := vsphere.ParseChangeID(sd.ChangeID)
	pn, perr := strconv.ParseUint(pseq, 10, 64)
	sn, serr := strconv.ParseUint(sseq, 10, 64)
	switch {
	case !pok:
		return full(fmt.Sprintf("the parent backup's change ID %q is malformed", p.ChangeID))
	case !sok:
		return full(fmt.Sprintf("the disk's change ID %q is malformed", sd.ChangeID))
	case pu != su:
		return full("the change ID's UUID changed (CBT was reset)")
	case perr == nil && serr == nil && sn < pn:
		// The disk's tracking is behind the parent's (a snapshot reverted to, a disk swapped
		// back): the changes since the parent cannot be asked of it.
		return full(fmt.Sprintf("the change ID's sequence went back from %d to %d (a snapshot reverted?)", pn, sn))
	}
	return plan{typ: api.BackupIncremental, reason: "changed blocks since " + p.ChangeID, parent: p.BackupID, baseID: p.ChangeID}
}

func (r *Runner) backupDisk(ctx context.Context, job *api.Job, jd api.JobDisk, snap changeTracker, sd vsphere.SnapshotDisk, src Source, cbtWasOff bool, c *Counters, st *jobStatus, log *slog.Logger) error {
	chunkSize := job.Repository.ChunkSize
	pl := decide(job, jd, sd, cbtWasOff)
	var slots []int64
	if !pl.allSlots {
		since := pl.baseID
		if pl.typ == api.BackupFull {
			since = "*"
		}
		extents, err := snap.ChangedAreas(ctx, sd.Key, sd.CapacityBytes, since)
		switch {
		case err == nil:
			slots = chunk.Grid{Capacity: sd.CapacityBytes, ChunkSize: chunkSize}.ForExtents(toExtents(extents))
		case errors.Is(err, vsphere.ErrChangeIDInvalid) && pl.typ == api.BackupIncremental:
			pl = plan{typ: api.BackupFull, reason: "the parent's change ID is no longer valid: " + err.Error()}
			if extents, err = snap.ChangedAreas(ctx, sd.Key, sd.CapacityBytes, "*"); err != nil {
				pl.allSlots, pl.reason = true, pl.reason+"; CBT unavailable, every slot read"
				slots = chunk.Grid{Capacity: sd.CapacityBytes, ChunkSize: chunkSize}.All()
			} else {
				slots = chunk.Grid{Capacity: sd.CapacityBytes, ChunkSize: chunkSize}.ForExtents(toExtents(extents))
			}
		case errors.Is(err, vsphere.ErrCBTUnavailable) || errors.Is(err, vsphere.ErrChangeIDInvalid):
			// Slower but still correct: read everything, send only what the hub lacks.
			pl = plan{typ: api.BackupFull, reason: "CBT unavailable (" + err.Error() + "); every slot read", allSlots: true}
		default:
			return err
		}
	}
	if pl.allSlots {
		slots = chunk.Grid{Capacity: sd.CapacityBytes, ChunkSize: chunkSize}.All()
	}
	sess, err := r.hub.OpenSession(ctx, job.ID, jd.DiskID, api.OpenSessionRequest{
		Type: pl.typ, Reason: pl.reason, ParentBackupID: pl.parent, BaseChangeID: pl.baseID, ChangeID: sd.ChangeID,
		CapacityBytes: sd.CapacityBytes, ChunkSize: chunkSize,
	})
	if err != nil {
		return err
	}
	todo := withoutDone(slots, sess.Done)
	log.InfoContext(ctx, "backing up disk", "type", pl.typ, "reason", pl.reason, "capacity_bytes", sd.CapacityBytes,
		"slots_changed", len(slots), "slots_to_read", len(todo), "session_id", sess.ID)
	r.metrics.fullReasons.WithLabelValues(pl.typ).Inc()
	st.set(func(s *jobStatus) { s.phase = api.PhaseReading; s.total += int64(len(todo)) * chunkSize })
	rd, err := src.OpenDisk(ctx, sd)
	if err != nil {
		return fmt.Errorf("open disk: %w", err)
	}
	defer rd.Close()
	// A read stuck on an unresponsive source (a hung nbdkit, an ESXi host that stopped sending)
	// ends when the job does: closing the reader fails the reads in flight (disk.Reader).
	defer context.AfterFunc(ctx, func() { _ = rd.Close() })()
	if rd.Size() < sd.CapacityBytes {
		return fmt.Errorf("the transport sees %d bytes, the snapshot says %d", rd.Size(), sd.CapacityBytes)
	}
	grid := chunk.Grid{Capacity: sd.CapacityBytes, ChunkSize: chunkSize}
	dc := &Counters{}
	// send uploads slots; direct when they are expected to be new to the hub (see sendMode).
	send := func(ctx context.Context, slots []int64, direct bool) error {
		return upload(ctx, r.hub, r.opts.Upload.Pool, uploadTask{SessionID: sess.ID, Job: c, Reader: rd, Capacity: sd.CapacityBytes,
			ChunkSize: chunkSize, Slots: slots, Direct: direct}, dc, r.metrics, r.opts.Upload)
	}
	var drift []int64
	driftFound := false
	// A session the hub is committing or has committed holds every slot already: the agent
	// asked for its commit before it stopped (or lost the answer). Asking again completes it.
	if sess.Status == api.SessionCommitting || sess.Status == api.SessionCommitted {
		log.InfoContext(ctx, "the disk's session is already being committed; committing it again", "status", sess.Status)
	} else if sess.CBTDrift {
		// An agent before this one found CBT drift in this session and stopped while it read the
		// whole disk: CBT is still not trusted, and the rest of the disk is read.
		driftFound = true
		slots = grid.All()
		rest := withoutDone(slots, sess.Done)
		log.WarnContext(ctx, "CBT drift was found in this session before; reading the rest of the whole disk", "slots_to_read", len(rest))
		st.set(func(s *jobStatus) { s.total += int64(len(rest)-len(todo)) * chunkSize })
		if err := send(ctx, rest, false); err != nil {
			return err
		}
	} else if pl.typ != api.BackupIncremental {
		// Without an earlier backup of the disk in the repository the hub can answer "held" only
		// for copies within this session (the known-chunks rule): asking first would cost a round
		// trip and a hash per slot to find those, and sendMode turns back if they abound. A
		// resumed session asks first: the chunks the stopped agent sent last may be held.
		if err := send(ctx, todo, sess.KnownBackupID == "" && len(sess.Done) == 0); err != nil {
			return err
		}
	} else {
		// CBT can miss writes (known vSphere bugs); a backup built on such an answer would be
		// silently wrong. Re-read a sample of what CBT calls unchanged and compare it with the
		// parent — beside the upload of what CBT reported, which it does not change: on any
		// difference CBT is not trusted for this disk and every other slot is read too before
		// the commit, so the index this session commits is correct (the recorded slots replace
		// the parent's).
		sample := pickSample(grid.Slots(), slots, job.CBTSample, api.MinCBTSampleSlots, rand.Float64())
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error {
			var err error
			drift, err = r.checkSample(gctx, r.hub, sess.ID, rd, grid, sample)
			return err
		})
		g.Go(func() error { return send(gctx, todo, true) })
		if err := g.Wait(); err != nil {
			return err
		}
		log.InfoContext(ctx, "CBT checked", "slots_sampled", len(sample), "slots_drifted", len(drift))
		if driftFound = len(drift) > 0; driftFound {
			log.WarnContext(ctx, "CBT drift: slots CBT called unchanged have changed; reading the whole disk", "slots_drifted", len(drift),
				"slots", drift[:min(len(drift), api.MaxDriftSlots)])
			r.metrics.cbtDrift.Inc()
			slots = grid.All()
			rest := slices.DeleteFunc(slices.Clone(withoutDone(slots, sess.Done)), func(s int64) bool {
				_, sent := slices.BinarySearch(todo, s)
				return sent
			})
			st.set(func(s *jobStatus) { s.total += int64(len(rest)) * chunkSize })
			// What CBT called unchanged is mostly the parent's data: asked about first.
			if err := send(ctx, rest, false); err != nil {
				return err
			}
		}
	}
	bd, err := r.hub.Commit(ctx, sess.ID, api.CommitRequest{
		SlotsChanged: int64(len(slots)), BytesRead: dc.BytesRead.Load(), BytesSent: dc.BytesSent.Load(),
		BytesDeduplicated: dc.BytesDeduplicated.Load(), BytesZero: dc.BytesZero.Load(),
		CBTDrift: driftFound, DriftSlots: drift[:min(len(drift), api.MaxDriftSlots)], DriftCount: int64(len(drift)),
	})
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	c.remove(dc) // the hub counts the committed disk in the job's totals from now on
	log.InfoContext(ctx, "disk committed", "type", bd.Type, "bytes_read", bd.BytesRead, "bytes_sent", bd.BytesSent, "bytes_deduplicated", bd.BytesDeduplicated)
	return nil
}

func toExtents(in []vsphere.Extent) []chunk.Extent {
	out := make([]chunk.Extent, len(in))
	for i, e := range in {
		out[i] = chunk.Extent{Offset: e.Offset, Length: e.Length}
	}
	return out
}
