// Package restoretest proves that restore points restore: a restore test reads every disk of a
// VM's restore point in full through the hub's restore path (every chunk verified, damaged ones
// quarantined), checks that named paths exist in its filesystems (file-level restore) and
// boots it with instant recovery until its guest reports running (the RTO), records each check
// with its result and reason, the bytes read, the throughput and the time taken in the
// catalog, counts it in the metrics and records an event. Tests run
// in the background on the hub (queued through the catalog, so each runs once whatever the
// number of hubs) or at once in the CLI.
package restoretest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/fidx"
	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/shared/api"
)

// testCatalog is what this package needs from the catalog.
type testCatalog interface {
	ResolveVM(ctx context.Context, idOrName string) (*catalog.VMWithSource, error)
	VMs(ctx context.Context, f catalog.VMFilter) ([]catalog.VMWithSource, int, error)
	BackupByID(ctx context.Context, id string) (*catalog.BackupRow, error)
	Backups(ctx context.Context, f catalog.BackupFilter) ([]catalog.BackupRow, int, error)
	CreateRestoreTest(ctx context.Context, t *catalog.RestoreTest) error
	RestoreTestByID(ctx context.Context, id string) (*catalog.RestoreTest, error)
	RestoreTests(ctx context.Context, f catalog.RestoreTestFilter) ([]catalog.RestoreTest, int, error)
	ClaimRestoreTest(ctx context.Context) (*catalog.RestoreTest, error)
	RestoreTestProgress(ctx context.Context, id string, bytesRead int64) error
	FinishRestoreTest(ctx context.Context, t *catalog.RestoreTest) error
	FailStaleRestoreTests(ctx context.Context, cutoff time.Time, reason string) ([]catalog.RestoreTest, error)
	RestoreTestSummaries(ctx context.Context) ([]catalog.RestoreTestSummary, error)
	RecordEvents(ctx context.Context, evs []catalog.Event) error
}

// images opens the disks of restore points; restore.Service is one. Every read of an image is
// verified against the index's digests, and a damaged chunk fails the read.
type images interface {
	Disks(ctx context.Context, backupID string) ([]restore.Disk, error)
	Open(ctx context.Context, backupID, diskID string) (*restore.Image, restore.Disk, error)
	OpenIn(ctx context.Context, backupID, diskID, repo string) (*restore.Image, restore.Disk, error)
}

var _ images = (*restore.Service)(nil)

// Options tune the service; zero fields select the defaults.
type Options struct {
	// Parallel is the number of chunks one disk read reads ahead (default 4).
	Parallel int
	// HeartbeatInterval is how often a running test records its progress (default 5s); a test
	// whose hub has not recorded progress for StaleAfter (default 2m) is failed as stale.
	HeartbeatInterval, StaleAfter time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// BootPoll is how often the boot check reads its session from the catalog (default
	// 200ms: the RTO is measured to that); StartWait how long the agent has to claim, mount,
	// register and power on, on top of the guest's boot timeout (default 10m); CleanupWait
	// how long the check waits for the agent to stop the session (default 5m).
	BootPoll, StartWait, CleanupWait time.Duration
}

// Service starts, runs, lists and reports restore tests.
type Service struct {
	cat   testCatalog
	img   images
	files fileTrees
	log   *slog.Logger
	m     *metrics
	opts  Options
	wake  chan struct{}
	// ir and cfgs run the boot check (EnableBoot); nil: the hub cannot.
	ir   sessions
	cfgs vmConfigs
}

// New returns the service; its metrics are registered on reg unless reg is nil. The paths
// check reads the filesystems of img's disks through file-level restore.
func New(cat testCatalog, img images, log *slog.Logger, reg prometheus.Registerer, opts Options) *Service {
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 5 * time.Second
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = 2 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BootPoll <= 0 {
		opts.BootPoll = 200 * time.Millisecond
	}
	if opts.StartWait <= 0 {
		opts.StartWait = 10 * time.Minute
	}
	if opts.CleanupWait <= 0 {
		opts.CleanupWait = 5 * time.Minute
	}
	// The file trees' own metrics count operators' downloads: not registered for tests.
	s := &Service{cat: cat, img: img, files: files.NewService(img, nil), log: log, opts: opts, wake: make(chan struct{}, 1)}
	s.m = newMetrics(s, reg)
	return s
}

// Actors recorded for tests not started through the API.
const (
	ActorCLI    = "cli"
	ActorPolicy = "policy"
)

// prepare validates a request and returns the test row it asks for (not yet recorded); each
// problem of the request is an *api.FieldError naming the field, an unknown VM or backup
// wraps catalog.ErrNotFound, a VM without a successful backup restore.ErrNotRestorable.
func (s *Service) prepare(ctx context.Context, req api.StartRestoreTestRequest, actor string) (*catalog.RestoreTest, error) {
	if req.VM == "" {
		return nil, &api.FieldError{Field: "vm", Msg: "is required (a VM name or context id)"}
	}
	if len(req.VM) > api.MaxNameLen {
		return nil, &api.FieldError{Field: "vm", Msg: "too long"}
	}
	checks := req.Checks
	if len(checks) == 0 {
		checks = api.DefaultRestoreTestChecks
	}
	if err := api.ValidateChecks("checks", checks); err != nil {
		return nil, err
	}
	if err := api.ValidatePaths("paths", checks, req.Paths); err != nil {
		return nil, err
	}
	boot := req.RestoreTestBoot
	if err := boot.NormalizeBoot(checks); err != nil {
		return nil, err
	}
	if i := slices.Index(checks, api.CheckBoot); i >= 0 && s.ir == nil {
		return nil, &api.FieldError{Field: fmt.Sprintf("checks[%d]", i), Msg: errNoBoot}
	}
	if boot.Host != "" {
		if err := s.ir.CheckHost(ctx, boot.Host); err != nil {
			return nil, err
		}
	}
	vm, err := s.cat.ResolveVM(ctx, req.VM)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, &api.FieldError{Field: "vm", Msg: fmt.Sprintf("no VM named %q", req.VM)}
	}
	if err != nil {
		return nil, err
	}
	var bk *catalog.BackupRow
	if req.BackupID != "" {
		bk, err = s.cat.BackupByID(ctx, req.BackupID)
		switch {
		case errors.Is(err, catalog.ErrNotFound):
			return nil, &api.FieldError{Field: "backup_id", Msg: fmt.Sprintf("no backup %q", req.BackupID)}
		case err != nil:
			return nil, err
		case bk.VMContextID != vm.ContextID:
			return nil, &api.FieldError{Field: "backup_id", Msg: fmt.Sprintf("backup %s is of VM %s, not of %s", bk.ID, bk.VMName, vm.VMName)}
		case bk.Status != api.JobSucceeded:
			return nil, &api.FieldError{Field: "backup_id", Msg: fmt.Sprintf("backup %s is %s, not a successful restore point", bk.ID, bk.Status)}
		}
	} else {
		bk, err = s.latest(ctx, vm.ContextID, "")
		if err != nil {
			return nil, err
		}
	}
	return s.row(vm, bk, checks, req.Paths, bootOf(checks, boot), "", actor), nil
}

// latest returns the VM's newest successful backup (in repositoryID unless empty).
func (s *Service) latest(ctx context.Context, vmContextID, repositoryID string) (*catalog.BackupRow, error) {
	bks, _, err := s.cat.Backups(ctx, catalog.BackupFilter{VMContextID: vmContextID, RepositoryID: repositoryID, Status: api.JobSucceeded, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(bks) == 0 {
		return nil, fmt.Errorf("VM %s has no successful backup to test: %w", vmContextID, restore.ErrNotRestorable)
	}
	return &bks[0], nil
}

func (s *Service) row(vm *catalog.VMWithSource, bk *catalog.BackupRow, checks, paths []string, boot *api.RestoreTestBoot, policyID, actor string) *catalog.RestoreTest {
	return &catalog.RestoreTest{
		ID: catalog.NewID(api.RestoreTestIDPrefix, s.opts.Now()), VMContextID: vm.ContextID, VMName: vm.VMName,
		BackupID: bk.ID, BackupCreatedAt: bk.CreatedAt, RepositoryID: bk.RepositoryID, RepositoryName: bk.RepositoryName,
		PolicyID: policyID, Actor: actor, RequestedChecks: slices.Clone(checks), Paths: slices.Clone(paths), Boot: boot, Status: api.RestoreTestQueued,
	}
}

// bootOf is what a test records of the boot settings: nothing without the boot check.
func bootOf(checks []string, b api.RestoreTestBoot) *api.RestoreTestBoot {
	if !slices.Contains(checks, api.CheckBoot) {
		return nil
	}
	return &b
}

// Start validates a request and queues the test for the hub's runner (Run); it returns the
// queued test. A bad request records nothing.
func (s *Service) Start(ctx context.Context, req api.StartRestoreTestRequest, actor string) (api.RestoreTest, error) {
	t, err := s.prepare(ctx, req, actor)
	if err != nil {
		return api.RestoreTest{}, err
	}
	if err := s.cat.CreateRestoreTest(ctx, t); err != nil {
		return api.RestoreTest{}, err
	}
	s.log.InfoContext(ctx, "restore test queued", "restore_test_id", t.ID, "vm_name", t.VMName, "backup_id", t.BackupID, "actor", actor)
	s.poke()
	return Info(t), nil
}

// ErrQueued is returned by Queue for a VM that already has a test waiting to run: a policy
// whose runs come faster than the hub tests does not pile tests up.
var ErrQueued = errors.New("the VM already has a restore test waiting to run")

// Queue queues a test of the VM's newest successful backup in repositoryID for a policy's run,
// with the policy's checks, the paths of its paths check and the settings of its boot check
// (validated with the policy). A VM without one → restore.ErrNotRestorable, a VM with a test
// still queued → ErrQueued; in both cases nothing is queued.
func (s *Service) Queue(ctx context.Context, vm *catalog.VMWithSource, repositoryID, policyID string, checks, paths []string, boot *api.RestoreTestBoot) (string, error) {
	if len(checks) == 0 {
		checks = api.DefaultRestoreTestChecks
	}
	if _, n, err := s.cat.RestoreTests(ctx, catalog.RestoreTestFilter{VMContextID: vm.ContextID, Status: api.RestoreTestQueued, Limit: 1}); err != nil {
		return "", err
	} else if n > 0 {
		return "", fmt.Errorf("VM %s: %w", vm.VMName, ErrQueued)
	}
	bk, err := s.latest(ctx, vm.ContextID, repositoryID)
	if err != nil {
		return "", err
	}
	var b *api.RestoreTestBoot
	if boot != nil {
		b = bootOf(checks, *boot)
	}
	t := s.row(vm, bk, checks, paths, b, policyID, ActorPolicy)
	if err := s.cat.CreateRestoreTest(ctx, t); err != nil {
		return "", err
	}
	s.poke()
	return t.ID, nil
}

// RunNow validates a request and runs the test in the caller, returning its evidence. The test
// is recorded (as running) before it starts, so that it is visible and counted whatever happens.
func (s *Service) RunNow(ctx context.Context, req api.StartRestoreTestRequest, actor string) (api.RestoreTest, error) {
	t, err := s.prepare(ctx, req, actor)
	if err != nil {
		return api.RestoreTest{}, err
	}
	t.Status = api.RestoreTestRunning
	if err := s.cat.CreateRestoreTest(ctx, t); err != nil {
		return api.RestoreTest{}, err
	}
	if err := s.execute(ctx, t); err != nil {
		return Info(t), err
	}
	return Info(t), nil
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run runs queued tests, one at a time (a test reads whole disks: one at a time keeps the
// repository's disks and the hub's CPU for backups), and fails the tests of hubs that stopped
// while testing, until ctx ends. It looks for queued tests every interval and at once when this
// process queues one.
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.runQueued(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "restore tests", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.wake:
		}
	}
}

// runQueued fails stale tests, then claims and runs queued tests until none is left.
func (s *Service) runQueued(ctx context.Context) error {
	stale, err := s.cat.FailStaleRestoreTests(ctx, s.opts.Now().Add(-s.opts.StaleAfter), "the hub running the test stopped before it finished")
	if err != nil {
		return err
	}
	for i := range stale {
		s.finished(ctx, &stale[i])
	}
	s.stopOrphanSessions(ctx)
	for ctx.Err() == nil {
		t, err := s.cat.ClaimRestoreTest(ctx)
		if err != nil || t == nil {
			return err
		}
		if err := s.execute(ctx, t); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "restore test not recorded", "restore_test_id", t.ID, "err", err)
		}
	}
	return nil
}

// counter counts the bytes written through it; the heartbeat reads it concurrently.
type counter struct{ n atomic.Int64 }

func (c *counter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

var _ io.Writer = (*counter)(nil)

// execute runs the checks of a running test and records its evidence. A check that fails
// fails the test; it is not an error of execute, which fails only when the evidence cannot be
// recorded (or ctx ended, when the test is failed as cancelled if that can still be recorded).
func (s *Service) execute(ctx context.Context, t *catalog.RestoreTest) error {
	start := time.Now()
	var read counter
	var done atomic.Int64 // bytes of the disks finished, plus read of the current one
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		tk := time.NewTicker(s.opts.HeartbeatInterval)
		defer tk.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-tk.C:
				if err := s.cat.RestoreTestProgress(hbCtx, t.ID, done.Load()+read.n.Load()); err != nil && hbCtx.Err() == nil {
					s.log.WarnContext(hbCtx, "record restore test progress", "restore_test_id", t.ID, "err", err)
				}
			}
		}
	}()
	checks, total, runErr := s.runChecks(ctx, t, &read, &done)
	stopHB()
	<-hbDone

	t.Checks, t.BytesTotal = checks, total
	t.BytesRead = 0
	for _, c := range checks {
		t.BytesRead += c.BytesRead
	}
	t.Seconds = time.Since(start).Seconds()
	t.RTOSeconds = 0
	for _, c := range checks {
		if c.Name == api.CheckBoot && c.Passed {
			t.RTOSeconds = c.RTOSeconds
		}
	}
	t.Status, t.Error = api.RestoreTestPassed, ""
	var reasons []string
	for _, c := range checks {
		if !c.Passed {
			reasons = append(reasons, checkName(c)+": "+c.Error)
		}
	}
	if runErr != nil {
		reasons = append(reasons, runErr.Error())
	}
	if len(checks) == 0 && runErr == nil {
		reasons = append(reasons, "the restore point has no disks")
	}
	if len(reasons) > 0 {
		t.Status, t.Error = api.RestoreTestFailed, strings.Join(reasons, "; ")
	}
	// The evidence is recorded even when ctx ended (the hub is stopping): bounded, off ctx.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.cat.FinishRestoreTest(rctx, t); err != nil {
		return err
	}
	s.finished(rctx, t)
	return nil
}

func checkName(c api.RestoreTestCheck) string {
	if c.Path != "" {
		return c.Name + " " + c.Path
	}
	if c.DiskID != "" {
		return c.Name + " " + c.DiskID
	}
	return c.Name
}

// runChecks runs the requested checks; the error is one that prevented checking at all (the
// restore point's disks cannot be listed, or ctx ended).
func (s *Service) runChecks(ctx context.Context, t *catalog.RestoreTest, read *counter, done *atomic.Int64) ([]api.RestoreTestCheck, int64, error) {
	disks, err := s.img.Disks(ctx, t.BackupID)
	if err != nil {
		return nil, 0, fmt.Errorf("list the disks of backup %s: %w", t.BackupID, err)
	}
	var total int64
	for _, d := range disks {
		total += d.Size
	}
	var out []api.RestoreTestCheck
	for _, name := range t.RequestedChecks {
		switch name {
		case api.CheckRead:
			for _, d := range disks {
				if ctx.Err() != nil {
					return out, total, fmt.Errorf("cancelled before %s was read: %w", d.DiskID, ctx.Err())
				}
				c := s.readDisk(ctx, t, d, read)
				done.Add(read.n.Swap(0))
				out = append(out, c)
			}
		case api.CheckPaths:
			cs, err := s.checkPaths(ctx, t, disks, read, done)
			out = append(out, cs...)
			if err != nil {
				return out, total, err
			}
		case api.CheckBoot:
			out = append(out, s.checkBoot(ctx, t))
		default:
			// Requests are validated; a row from a newer hub may name a check this one lacks.
			out = append(out, api.RestoreTestCheck{Name: name, Error: "this hub cannot run the check"})
		}
	}
	return out, total, nil
}

// readDisk reads one disk of the restore point in full through the restore path.
func (s *Service) readDisk(ctx context.Context, t *catalog.RestoreTest, d restore.Disk, read *counter) api.RestoreTestCheck {
	start := time.Now()
	c := api.RestoreTestCheck{Name: api.CheckRead, DiskID: d.DiskID}
	img, _, err := s.img.Open(ctx, t.BackupID, d.DiskID)
	if err == nil {
		_, err = img.Stream(ctx, read, 0, img.Size(), s.opts.Parallel)
	}
	c.BytesRead = read.n.Load()
	if img != nil {
		c.DataBytes = dataBytes(img.Index(), c.BytesRead)
	}
	c.Seconds = time.Since(start).Seconds()
	if err != nil {
		c.Error = fmt.Sprintf("read failed after %d of %d bytes: %v", c.BytesRead, d.Size, err)
		s.log.WarnContext(ctx, "restore test: disk read failed", "restore_test_id", t.ID, "vm_name", t.VMName, "backup_id", t.BackupID, "disk_id", d.DiskID, "err", err)
		return c
	}
	c.Passed = true
	return c
}

// dataBytes counts the bytes of non-zero slots among the first n bytes of the index's disk.
func dataBytes(x *fidx.Index, n int64) int64 {
	var out int64
	for i := 0; i < x.SlotCount() && int64(i)*x.ChunkSize < n; i++ {
		if !x.IsZeroSlot(i) {
			out += min(int64(x.SlotLen(i)), n-int64(i)*x.ChunkSize)
		}
	}
	return out
}

// finished counts, logs and records the event of a finished test.
func (s *Service) finished(ctx context.Context, t *catalog.RestoreTest) {
	s.m.observe(t)
	info := Info(t)
	s.log.InfoContext(ctx, "restore test finished", "restore_test_id", t.ID, "vm_name", t.VMName, "backup_id", t.BackupID,
		"result", t.Status, "bytes", t.BytesRead, "duration_seconds", t.Seconds, "mb_per_s", info.MBPerS, "err", t.Error)
	e := events.RestoreTestFinished(t.ID, t.VMContextID, t.VMName, t.BackupID, t.Status, t.Error, t.BytesRead, t.Seconds, info.MBPerS)
	if err := s.cat.RecordEvents(ctx, []catalog.Event{events.Row(e)}); err != nil {
		s.log.WarnContext(ctx, "record restore test event", "restore_test_id", t.ID, "err", err)
	}
}

// Info converts a catalog row to the API form.
func Info(t *catalog.RestoreTest) api.RestoreTest {
	out := api.RestoreTest{
		ID: t.ID, VMName: t.VMName, VMContextID: t.VMContextID, BackupID: t.BackupID, BackupCreatedAt: t.BackupCreatedAt,
		Repository: t.RepositoryName, Policy: t.PolicyID, Actor: t.Actor, Status: t.Status, Passed: t.Status == api.RestoreTestPassed,
		RequestedChecks: t.RequestedChecks, Paths: t.Paths, Checks: t.Checks, BytesRead: t.BytesRead, BytesTotal: t.BytesTotal,
		Seconds: t.Seconds, RTOSeconds: t.RTOSeconds, Error: t.Error, CreatedAt: t.CreatedAt, StartedAt: t.StartedAt, FinishedAt: t.FinishedAt,
	}
	if out.Checks == nil {
		out.Checks = []api.RestoreTestCheck{}
	}
	for _, c := range out.Checks {
		out.DataBytes += c.DataBytes
	}
	if out.RequestedChecks == nil {
		out.RequestedChecks = []string{}
	}
	if t.Boot != nil {
		out.RestoreTestBoot = *t.Boot
	}
	if t.Seconds > 0 {
		out.MBPerS = float64(t.BytesRead) / 1e6 / t.Seconds
	}
	return out
}

// Get returns one restore test.
func (s *Service) Get(ctx context.Context, id string) (api.RestoreTest, error) {
	t, err := s.cat.RestoreTestByID(ctx, id)
	if err != nil {
		return api.RestoreTest{}, err
	}
	return Info(t), nil
}

// Filter selects restore tests. The zero Filter selects every test.
type Filter struct {
	VM     string    // a VM name or context id
	Result string    // queued, running, passed or failed
	Since  time.Time // created at or after
	Limit  int       // 0: all
	Offset int
}

// List returns the restore tests matching f, newest first. An unknown VM or result is an
// *api.FieldError.
func (s *Service) List(ctx context.Context, f Filter) (api.RestoreTestList, error) {
	cf := catalog.RestoreTestFilter{Since: f.Since, Limit: f.Limit, Offset: f.Offset}
	switch f.Result {
	case "", api.RestoreTestQueued, api.RestoreTestRunning, api.RestoreTestPassed, api.RestoreTestFailed:
		cf.Status = f.Result
	default:
		return api.RestoreTestList{}, &api.FieldError{Field: "result", Msg: "must be queued, running, passed or failed"}
	}
	if f.VM != "" {
		vm, err := s.cat.ResolveVM(ctx, f.VM)
		if errors.Is(err, catalog.ErrNotFound) {
			return api.RestoreTestList{}, &api.FieldError{Field: "vm", Msg: fmt.Sprintf("no VM named %q", f.VM)}
		}
		if err != nil {
			return api.RestoreTestList{}, err
		}
		cf.VMContextID = vm.ContextID
	}
	rows, total, err := s.cat.RestoreTests(ctx, cf)
	if err != nil {
		return api.RestoreTestList{}, err
	}
	out := api.RestoreTestList{RestoreTests: make([]api.RestoreTest, 0, len(rows)), Page: api.Page{Limit: f.Limit, Offset: f.Offset, Total: total}}
	for i := range rows {
		out.RestoreTests = append(out.RestoreTests, Info(&rows[i]))
	}
	return out, nil
}
