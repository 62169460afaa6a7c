// Package restore runs restore jobs on the agent: a backup restored as a new VM, imported into
// the target vCenter (ImportVApp) with the backup's configuration, each disk streamed from the
// hub's verified image into the import lease as a stream-optimized VMDK without its zero
// grains, the VM removed again when the restore does not finish; or restored in place, over
// the disks of the VM it was taken of, which is never removed.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/vmdk"
	"github.com/sendense/sendense/agent/internal/vsphere"
	"github.com/sendense/sendense/shared/api"
)

// ErrCancelled is the cause of a restore stopped by the operator.
var ErrCancelled = errors.New("cancelled by the operator")

// errHubEnded: the hub no longer considers the restore running (the reaper failed it).
var errHubEnded = errors.New("the hub ended the restore")

// restoreHub is what a restore needs from the hub (*hubclient.Client). Every call may be
// retried by the caller; progress and completion are idempotent on the hub.
type restoreHub interface {
	// RestoreProgress records the phase, the VM made so far and the bytes written, and answers
	// whether the operator asked to cancel.
	RestoreProgress(ctx context.Context, id string, p api.RestoreProgress) (api.JobState, error)
	CompleteRestore(ctx context.Context, id string, done api.RestoreCompletion) error
	// OpenRestoreImage streams a disk image of the restore's backup from offset; a body that
	// ends early reads as an error, never as a short image.
	OpenRestoreImage(ctx context.Context, id, diskID string, offset int64) (io.ReadCloser, int64, error)
}

var _ restoreHub = (*hubclient.Client)(nil)

// Target is one connected vCenter as a restore uses it (*vsphere.Client). Calls may run
// concurrently for parallel restores.
type Target interface {
	// ResolveRestore finds and checks everything the restore names, creating nothing.
	ResolveRestore(ctx context.Context, job *api.RestoreJob) (*vsphere.Placement, error)
	// DestroyRestoredVM removes a VM this restore made; a VM already gone is not an error.
	DestroyRestoredVM(ctx context.Context, moref, jobID string) error
	// ResolveInPlace finds and checks the original VM of an in-place restore, changing nothing.
	ResolveInPlace(ctx context.Context, job *api.RestoreJob) (*vsphere.InPlaceVM, error)
	// DatastoreHTTP gives the /folder URL of a datastore file and a client that may write it.
	DatastoreHTTP(ctx context.Context, dcPath, datastore, path string) (string, *http.Client, error)
}

var _ Target = (*vsphere.Client)(nil)

// Options tune restores.
type Options struct {
	ProgressInterval time.Duration // default 5s
	// CleanupTimeout bounds removing a half-made VM and reporting the outcome after the agent
	// was told to stop (default 2m).
	CleanupTimeout time.Duration
	// StallTimeout fails a restore that wrote no byte for that long while writing disks (an
	// ESXi host that stopped taking the upload, a hub that stopped sending): default 10m.
	StallTimeout time.Duration
}

// errStalled fails a restore whose writing made no progress for Options.StallTimeout.
var errStalled = errors.New("the restore stalled")

// Runner runs restore jobs. It is safe for concurrent use.
type Runner struct {
	hub     restoreHub
	targets func(ctx context.Context, source string) (Target, error)
	log     *slog.Logger
	opts    Options

	mu     sync.Mutex
	active map[string]bool
}

// NewRunner returns a restore runner; targets resolves a job's agent-local source name.
func NewRunner(hub restoreHub, targets func(ctx context.Context, source string) (Target, error), log *slog.Logger, opts Options) *Runner {
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 5 * time.Second
	}
	if opts.CleanupTimeout <= 0 {
		opts.CleanupTimeout = 2 * time.Minute
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 10 * time.Minute
	}
	return &Runner{hub: hub, targets: targets, log: log, opts: opts, active: map[string]bool{}}
}

// Busy lists the restores running now (for the hub's long poll).
func (r *Runner) Busy() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.active))
	for id := range r.active {
		out = append(out, id)
	}
	return out
}

// state is what the progress reports carry.
type state struct {
	mu      sync.Mutex
	phase   string
	vmRef   string
	wasOn   *bool // in place: the VM's power state before the restore
	total   int64
	written atomic.Int64
}

func (s *state) progress() api.RestoreProgress {
	s.mu.Lock()
	defer s.mu.Unlock()
	return api.RestoreProgress{Phase: s.phase, VMRef: s.vmRef, BytesWritten: s.written.Load(), BytesTotal: s.total, VMWasOn: s.wasOn}
}

func (s *state) set(phase, vmRef string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase = phase
	if vmRef != "" {
		s.vmRef = vmRef
	}
}

func (s *state) forgetVM() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vmRef = ""
}

// Run runs one restore to its end and reports the outcome to the hub. A VM it made is removed
// unless the restore succeeded, also when ctx is cancelled (SIGTERM); a resumed restore first
// removes the VM its earlier run made and starts over. It returns the restore's error.
func (r *Runner) Run(ctx context.Context, job *api.RestoreJob) error {
	start := time.Now()
	r.mu.Lock()
	r.active[job.ID] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.active, job.ID)
		r.mu.Unlock()
	}()
	log := r.log.With("restore_id", job.ID, "backup_id", job.BackupID, "vm_name", job.Target.Name)
	log.InfoContext(ctx, "restore started", "source", job.Source, "resumed", job.Resumed, "vm_ref", job.VMRef, "disks", len(job.Disks))

	st := &state{phase: api.PhaseChecking}
	for _, d := range job.Disks {
		st.total += d.CapacityBytes
	}
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := r.reportProgress(jctx, job.ID, st, cancel, log)
	target, err := r.targets(jctx, job.Source)
	var vmRef string
	if err == nil {
		if job.InPlace {
			vmRef, err = r.runInPlace(jctx, job, target, st, log)
		} else {
			vmRef, err = r.run(jctx, job, target, st, log)
		}
	}
	stop()

	done := api.RestoreCompletion{Status: api.JobSucceeded}
	switch {
	case err == nil:
		done.VMRef, done.BytesWritten = vmRef, st.written.Load()
	case errors.Is(err, ErrCancelled) || errors.Is(context.Cause(jctx), ErrCancelled):
		done.Status, done.Error = api.JobCancelled, "cancelled by the operator"
	case errors.Is(context.Cause(jctx), errStalled):
		done.Status, done.Error = api.JobFailed, context.Cause(jctx).Error()
	case ctx.Err() != nil:
		done.Status, done.Error = api.JobFailed, "the agent was stopped during the restore"
	default:
		done.Status, done.Error = api.JobFailed, err.Error()
	}
	if err != nil && job.InPlace && done.Error != err.Error() {
		done.Error += ": " + err.Error() // what state the original VM is left in
	}
	// Cleanup and the outcome must happen even when ctx is already cancelled (SIGTERM).
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.CleanupTimeout)
	defer ccancel()
	if err != nil {
		if ref := st.progress().VMRef; ref != "" && target != nil {
			st.set(api.PhaseCleanup, "")
			_, _ = r.hub.RestoreProgress(cctx, job.ID, st.progress())
			if derr := target.DestroyRestoredVM(cctx, ref, job.ID); derr != nil {
				log.ErrorContext(cctx, "could not remove the half-made vm; remove it by hand", "vm_ref", ref, "err", derr)
				done.VMRef = ref
				done.Error += "; removing the half-made vm " + ref + " failed: " + derr.Error()
			} else {
				log.InfoContext(cctx, "half-made vm removed", "vm_ref", ref)
			}
		}
	}
	if err == nil {
		// The hub takes the bytes written from progress reports: the last disk's end is in none yet.
		st.set(api.PhaseFinished, "")
		_, _ = r.hub.RestoreProgress(cctx, job.ID, st.progress())
	}
	if cerr := r.hub.CompleteRestore(cctx, job.ID, done); cerr != nil {
		log.ErrorContext(cctx, "could not report the end of the restore", "status", done.Status, "err", cerr)
		if err == nil {
			err = cerr
		}
	}
	log.InfoContext(ctx, "restore finished", "status", done.Status, "vm_ref", done.VMRef, "bytes_written", st.written.Load(),
		"duration_seconds", time.Since(start).Seconds(), "err", done.Error)
	return err
}

// run does the restore; on an error the caller removes the VM recorded in st.
func (r *Runner) run(ctx context.Context, job *api.RestoreJob, target Target, st *state, log *slog.Logger) (_ string, retErr error) {
	if job.VMRef != "" {
		// The simplest correct resume: what an earlier run wrote cannot be trusted to be
		// complete, so its VM goes and the restore starts over.
		st.set(api.PhaseCleanup, job.VMRef) // kept (and retried once) when the removal fails
		if err := target.DestroyRestoredVM(ctx, job.VMRef, job.ID); err != nil {
			return "", fmt.Errorf("remove the vm of the earlier run: %w", err)
		}
		st.forgetVM()
		log.InfoContext(ctx, "vm of the earlier run removed", "vm_ref", job.VMRef)
	}
	st.set(api.PhaseChecking, "")
	p, err := target.ResolveRestore(ctx, job)
	if err != nil {
		return "", err
	}
	st.set(api.PhaseCreating, "")
	vm, err := p.ImportVM(ctx, job)
	if vm != nil {
		st.set(api.PhaseCreating, vm.MoRef())
	}
	if err != nil {
		return "", err
	}
	// From here on a failure aborts the import lease first; Run then removes the VM.
	defer func() {
		if retErr != nil {
			if aerr := vm.Abort(ctx, retErr); aerr != nil {
				log.WarnContext(ctx, "could not abort the import lease", "vm_ref", vm.MoRef(), "err", aerr)
			}
		}
	}()
	// The hub must know the VM before any byte goes into it: a crash from here on leaves a VM
	// that the restarted agent (or the operator) finds by this reference.
	st.set(api.PhaseWriting, "")
	if err := r.report(ctx, job.ID, st); err != nil {
		return "", fmt.Errorf("record the new vm %s on the hub: %w", vm.MoRef(), err)
	}
	log.InfoContext(ctx, "vm created, import lease ready", "vm_ref", vm.MoRef(), "lease_timeout_seconds", vm.LeaseTimeout().Seconds())
	stopLease := r.keepLease(ctx, vm, st, log)
	defer stopLease()
	adapter := map[string]string{}
	for _, d := range job.VM.Disks {
		adapter[d.DiskID] = d.Controller.Type
	}
	for _, d := range job.Disks {
		rd, ok := vm.Disks[d.DiskID]
		if !ok {
			return "", fmt.Errorf("the new vm has no disk for %s", d.DiskID)
		}
		if err := r.importDisk(ctx, job.ID, d, rd, adapter[d.DiskID], vm, st, log); err != nil {
			return "", err
		}
	}
	stopLease()
	if err := vm.Complete(ctx); err != nil {
		return "", err
	}
	if job.PowerOn {
		if err := vm.PowerOn(ctx); err != nil {
			return "", err
		}
	}
	return vm.MoRef(), nil
}

// keepLease renews the import lease with the share of the image written so far, five times per
// lease timeout and at least every 2 s (one small call; vSphere's timeout is 300 s), until stop
// (idempotent) is called. A failed renewal is logged: the lease then expires and the upload
// fails with vSphere's error.
func (r *Runner) keepLease(ctx context.Context, vm *vsphere.ImportedVM, st *state, log *slog.Logger) (stop func()) {
	every := min(max(vm.LeaseTimeout()/5, 100*time.Millisecond), 2*time.Second)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			p := st.progress()
			pct := int32(0)
			if p.BytesTotal > 0 {
				pct = int32(p.BytesWritten * 100 / p.BytesTotal)
			}
			if err := vm.Progress(ctx, pct); err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "import lease renewal failed", "vm_ref", vm.MoRef(), "err", err)
			}
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// errUploadEnded stops the VMDK writer when the upload stopped reading its stream.
var errUploadEnded = errors.New("the upload into the import lease ended")

// importDisk streams a disk image from the hub through the stream-optimized VMDK writer into
// the import lease: zero grains are left out of the stream, so vSphere allocates only the
// disk's data on a thin disk. The hub's image is read whole (it carries the zeros too).
func (r *Runner) importDisk(ctx context.Context, jobID string, d api.RestoreDiskSpec, rd vsphere.RestoredDisk, controller string, vm *vsphere.ImportedVM, st *state, log *slog.Logger) error {
	start := time.Now()
	if d.CapacityBytes != rd.Capacity {
		return fmt.Errorf("disk %s: the image has %d bytes, the new disk %d", d.DiskID, d.CapacityBytes, rd.Capacity)
	}
	img := newImageReader(ctx, r.hub, jobID, d.DiskID, rd.Capacity, log)
	defer img.close()
	n := rd.Capacity
	adapter := "lsilogic"
	if controller == "ide" {
		adapter = "ide"
	}
	pr, pw := io.Pipe()
	var stats vmdk.Stats
	var werr error
	written := make(chan struct{})
	go func() {
		defer close(written)
		stats, werr = vmdk.Write(ctx, pw, &countingReader{r: img, n: &st.written}, n, vmdk.Options{AdapterType: adapter})
		pw.CloseWithError(werr) // nil: the upload sees the end of the stream
	}()
	uerr := vm.UploadDisk(ctx, d.DiskID, pr)
	pr.CloseWithError(errUploadEnded)
	<-written
	switch {
	case werr != nil && !errors.Is(werr, errUploadEnded):
		return fmt.Errorf("disk %s: %w", d.DiskID, werr)
	case uerr != nil:
		return uerr
	case werr != nil:
		return fmt.Errorf("disk %s: %w", d.DiskID, werr)
	}
	secs := time.Since(start).Seconds()
	log.InfoContext(ctx, "disk imported", "disk_id", d.DiskID, "datastore", rd.Datastore, "file", rd.DataFile, "bytes", n,
		"stream_bytes", stats.StreamSize, "data_bytes", stats.DataBytes, "data_grains", stats.DataGrains, "grains", stats.Grains,
		"duration_seconds", secs, "bytes_per_second", float64(n)/max(secs, 1e-9))
	return nil
}

// runInPlace overwrites the disks of the VM the backup was taken of: checks it (its name is the
// confirmed one, no snapshots, the backup's disks), records its power state on the hub, powers
// it off, writes every disk, resets CBT and powers it on again if it was on before the first
// run of the restore (or PowerOn asks). The VM is never removed: on an
// error it stays powered off with disks that may be partly written, and the error says so.
func (r *Runner) runInPlace(ctx context.Context, job *api.RestoreJob, target Target, st *state, log *slog.Logger) (string, error) {
	st.set(api.PhaseChecking, "")
	vm, err := target.ResolveInPlace(ctx, job)
	if err != nil {
		return "", err
	}
	log = log.With("vm_ref", vm.MoRef())
	// A resumed run finds the VM off (the earlier run powered it off): the state to come back
	// to is the one the first run found, which the hub kept. It is recorded on the hub before
	// the VM is powered off, so a run killed after that is resumed with it.
	wasOn := vm.WasOn
	if job.VMWasOn != nil {
		wasOn = *job.VMWasOn
	}
	st.mu.Lock()
	st.wasOn = &wasOn
	st.mu.Unlock()
	if err := r.report(ctx, job.ID, st); err != nil {
		return "", fmt.Errorf("record the power state of vm %s on the hub: %w", vm.Name, err)
	}
	if err := vm.PowerOff(ctx); err != nil {
		return "", err
	}
	log.InfoContext(ctx, "vm powered off for an in-place restore", "was_on", wasOn, "on_now", vm.WasOn, "resumed", job.Resumed)
	// The data files are checked once the VM is off, as ESXi refuses datastore reads of a
	// running VM's disks. When one is missing, nothing was written: a VM this run found on is
	// powered on again.
	for _, d := range job.Disks {
		if err := checkDataFile(ctx, d.DiskID, vm.Disks[d.DiskID], vm.DatacenterPath(), target); err != nil {
			if !vm.WasOn {
				return "", err
			}
			if perr := vm.PowerOn(ctx); perr != nil {
				return "", fmt.Errorf("%w; vm %s is left powered off: %w", err, vm.Name, perr)
			}
			return "", fmt.Errorf("%w; vm %s was powered on again", err, vm.Name)
		}
	}
	st.set(api.PhaseWriting, "")
	for _, d := range job.Disks {
		if err := r.writeDisk(ctx, job.ID, d, vm.Disks[d.DiskID], vm.DatacenterPath(), target, st, log); err != nil {
			return "", fmt.Errorf("%w; vm %s is left powered off, its disks partly restored: run the restore again", err, vm.Name)
		}
	}
	if err := vm.ResetCBT(ctx); err != nil {
		return "", fmt.Errorf("%w; the disks are restored, but the next backup must be a full one", err)
	}
	if wasOn || job.PowerOn {
		if err := vm.PowerOn(ctx); err != nil {
			return "", fmt.Errorf("%w; the disks are restored", err)
		}
	}
	return vm.MoRef(), nil
}

// checkDataFile (in-place restores) makes sure a disk's data file is there, as large as the disk,
// before anything is written: a PUT to a path that is not the disk's data would create a new
// file, and the restore would succeed while the VM keeps its old bytes.
func checkDataFile(ctx context.Context, diskID string, rd vsphere.RestoredDisk, dcPath string, target Target) error {
	url, client, err := target.DatastoreHTTP(ctx, dcPath, rd.Datastore, rd.DataFile)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return fmt.Errorf("check the data file of disk %s: %w", diskID, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("check the data file of disk %s, [%s] %s: %w", diskID, rd.Datastore, rd.DataFile, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("disk %s: its data file [%s] %s: the datastore answered %s; nothing was written: %w", diskID, rd.Datastore, rd.DataFile, resp.Status, vsphere.ErrDiskMismatch)
	case resp.ContentLength >= 0 && resp.ContentLength != rd.Capacity: // -1: not said
		return fmt.Errorf("disk %s: its data file [%s] %s has %d bytes, the disk %d; nothing was written: %w", diskID, rd.Datastore, rd.DataFile, resp.ContentLength, rd.Capacity, vsphere.ErrDiskMismatch)
	}
	return nil
}

// writeDisk (in-place restores) streams a disk image from the hub into a VM's flat file with
// one PUT of the whole file: the datastore /folder interface cannot write at an offset, and an
// import lease only ever creates a new VM. The PUT writes every byte, zeros too: a thin disk
// ends up fully allocated (in the simulator, and on ESXi, whose /folder upload does not punch
// holes).
func (r *Runner) writeDisk(ctx context.Context, jobID string, d api.RestoreDiskSpec, rd vsphere.RestoredDisk, dcPath string, target Target, st *state, log *slog.Logger) error {
	start := time.Now()
	if d.CapacityBytes != rd.Capacity {
		return fmt.Errorf("disk %s: the image has %d bytes, the new disk %d", d.DiskID, d.CapacityBytes, rd.Capacity)
	}
	img := newImageReader(ctx, r.hub, jobID, d.DiskID, rd.Capacity, log)
	defer img.close()
	n := rd.Capacity
	url, client, err := target.DatastoreHTTP(ctx, dcPath, rd.Datastore, rd.DataFile)
	if err != nil {
		return err
	}
	before := st.written.Load()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, &countingReader{r: img, n: &st.written})
	if err != nil {
		return fmt.Errorf("write disk %s: %w", d.DiskID, err)
	}
	req.ContentLength = n
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("write disk %s to [%s] %s: %w", d.DiskID, rd.Datastore, rd.DataFile, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("write disk %s to [%s] %s: datastore answered %s", d.DiskID, rd.Datastore, rd.DataFile, resp.Status)
	}
	if got := st.written.Load() - before; got != n {
		return fmt.Errorf("write disk %s: sent %d of %d bytes", d.DiskID, got, n)
	}
	secs := time.Since(start).Seconds()
	log.InfoContext(ctx, "disk written", "disk_id", d.DiskID, "datastore", rd.Datastore, "file", rd.DataFile, "bytes", n,
		"duration_seconds", secs, "bytes_per_second", float64(n)/max(secs, 1e-9))
	return nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// report sends one progress report and turns the hub's answer into an error when the restore
// is to stop.
func (r *Runner) report(ctx context.Context, id string, st *state) error {
	s, err := r.hub.RestoreProgress(ctx, id, st.progress())
	switch {
	case err != nil:
		return err
	case s.CancelRequested:
		return ErrCancelled
	case s.Status != api.JobRunning:
		return fmt.Errorf("%w (%s)", errHubEnded, s.Status)
	}
	return nil
}

// reportProgress sends the state every interval (the restore's heartbeat) and cancels the
// restore when the operator asked for it or the hub no longer considers it running.
func (r *Runner) reportProgress(ctx context.Context, id string, st *state, cancel context.CancelCauseFunc, log *slog.Logger) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(r.opts.ProgressInterval)
		defer t.Stop()
		var last int64
		moved := time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// Only disk writing is watched: once every byte is written, completing the import,
			// resetting CBT and powering on take what vSphere's tasks take.
			p := st.progress()
			if p.Phase != api.PhaseWriting || p.BytesWritten != last || p.BytesWritten >= p.BytesTotal {
				last, moved = p.BytesWritten, time.Now()
			} else if stalled := time.Since(moved); stalled >= r.opts.StallTimeout {
				log.ErrorContext(ctx, "the restore wrote nothing for too long; failing it", "bytes_written", last, "stalled", stalled)
				cancel(fmt.Errorf("%w: no byte written for %s, %d of %d bytes written", errStalled, stalled.Round(time.Second), last, p.BytesTotal))
				return
			}
			err := r.report(ctx, id, st)
			switch code := hubclient.StatusOf(err); {
			case err == nil:
			case errors.Is(err, ErrCancelled):
				log.InfoContext(ctx, "the operator cancelled the restore")
				cancel(ErrCancelled)
				return
			case code == http.StatusNotFound || code == http.StatusConflict:
				cancel(fmt.Errorf("the hub no longer runs the restore: %w", err))
				return
			case errors.Is(err, errHubEnded):
				cancel(err)
				return
			case ctx.Err() == nil:
				log.WarnContext(ctx, "progress report failed", "err", err)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
