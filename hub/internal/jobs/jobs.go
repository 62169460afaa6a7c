// Package jobs owns the life of backup and restore jobs on the hub: operators (and the scheduler) queue,
// list, cancel, protect and delete backups; agents claim jobs by long polling, report progress
// and complete them; jobs whose agent went silent are failed. The data of a job arrives through
// package ingest.
package jobs

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
)

// Sentinel errors the API maps to status codes.
var (
	ErrVMGone  = errors.New("the VM is gone from its vCenter")
	ErrNoDisks = errors.New("the VM has no disk that can be backed up")
)

// backupCatalog is what this package needs from the catalog.
type backupCatalog interface {
	VMByContextID(ctx context.Context, id string) (*catalog.VMWithSource, error)
	ResolveVM(ctx context.Context, idOrName string) (*catalog.VMWithSource, error)
	VMDisks(ctx context.Context, contextID string) ([]catalog.VMDisk, error)
	RepositoryByName(ctx context.Context, name string) (*catalog.Repository, error)
	RepositoryByID(ctx context.Context, id string) (*catalog.Repository, error)

	CreateJob(ctx context.Context, j *catalog.BackupJob) error
	JobByID(ctx context.Context, id string) (*catalog.BackupJob, error)
	AgentJob(ctx context.Context, id, agentID string) (*catalog.BackupJob, error)
	ClaimJob(ctx context.Context, agentID string, busy []string) (*catalog.BackupJob, bool, error)
	JobProgress(ctx context.Context, id, agentID string, p catalog.JobProgress) (*catalog.BackupJob, error)
	RequestCancel(ctx context.Context, id string) (*catalog.BackupJob, error)
	FinishJob(ctx context.Context, id, agentID, status, errMsg, notes string) (*catalog.BackupJob, []catalog.BackupDisk, error)
	SetJobVMConfig(ctx context.Context, id, agentID, digest string) error
	FailStaleJobs(ctx context.Context, cutoff time.Time) ([]catalog.FailedJob, error)
	FailUnclaimedJobs(ctx context.Context, cutoff time.Time) ([]catalog.BackupJob, error)

	LatestBackupDisk(ctx context.Context, vmContextID, diskID, repositoryID string) (*catalog.BackupDisk, error)
	InPlaceRestoredAfter(ctx context.Context, contextID, backupID string) (string, error)
	BackupDisks(ctx context.Context, jobID string) ([]catalog.BackupDisk, error)

	Backups(ctx context.Context, f catalog.BackupFilter) ([]catalog.BackupRow, int, error)
	BackupByID(ctx context.Context, id string) (*catalog.BackupRow, error)
	Chain(ctx context.Context, vmContextID string) ([]catalog.ChainEntry, error)
	DeleteBackup(ctx context.Context, id string) (*catalog.BackupJob, []catalog.BackupDisk, error)
	SetProtected(ctx context.Context, id string, protected bool) error
	BackupRows(ctx context.Context, id string) (*catalog.BackupRows, error)
	BackupCopies(ctx context.Context, backupID string) ([]catalog.BackupCopy, error)
	DeleteCopy(ctx context.Context, backupID, repositoryID string) error
	RehomeBackup(ctx context.Context, id, toRepositoryID string) (*catalog.BackupJob, []catalog.BackupDisk, error)
	CountJobsByStatus(ctx context.Context) (map[string]int, error)

	restoreCatalog
}

// Repository is what the service needs of a job's repository (*repository.Repository): it
// removes the indexes of discarded disk results, and keeps the VM configuration of each backup.
type Repository interface {
	// RemoveIndex deletes the index of one disk of one backup (repository.ErrIndexNotFound when
	// there is none).
	RemoveIndex(ctx context.Context, ref repository.IndexRef) error
	// WriteVMConfig stores a backup's VM configuration durably and returns its SHA-256; the same
	// content again is not an error, different content repository.ErrVMConfigExists.
	WriteVMConfig(ctx context.Context, vmUUID, backupID string, data []byte) (string, error)
	// ReadVMConfig returns the stored configuration when it matches digest
	// (repository.ErrVMConfigNotFound, repository.ErrVMConfigDamaged).
	ReadVMConfig(ctx context.Context, vmUUID, backupID, digest string) ([]byte, error)
	// RemoveVMConfig deletes it durably; none is not an error.
	RemoveVMConfig(ctx context.Context, vmUUID, backupID string) error
	// WriteBackupRecord stores or replaces the record that describes a successful backup,
	// durably; RemoveBackupRecord deletes it (none is not an error).
	WriteBackupRecord(ctx context.Context, rec *repository.BackupRecord) error
	RemoveBackupRecord(ctx context.Context, vmUUID, backupID string) error
}

// Opener opens a repository by catalog id (a registry of repositories).
type Opener[R Repository] interface {
	Open(ctx context.Context, id string) (R, error)
}

// Options tune the service.
type Options struct {
	// JobTimeout fails a running job whose agent has not reported for this long (default 10m).
	JobTimeout time.Duration
	// PollInterval is how often a waiting agent's long poll looks for new jobs created by other
	// hub instances or the CLI (default 250ms); jobs created by this instance wake it at once.
	PollInterval time.Duration
	Now          func() time.Time
}

// Service is the hub's side of backups.
type Service struct {
	cat     backupCatalog
	open    func(ctx context.Context, id string) (Repository, error)
	log     *slog.Logger
	metrics *metrics
	opts    Options

	mu      sync.Mutex
	waiters map[string][]chan struct{} // agent id → long polls to wake

	// OnFinished, when set, is called after a job an agent completed is recorded (for example to
	// prune after a scheduled backup). It must not block.
	OnFinished func(j catalog.BackupJob)
}

// New returns the job service; its metrics, and a collector counting jobs by status in the
// catalog, are registered on reg (nil: not registered).
func New[R Repository](cat backupCatalog, repos Opener[R], log *slog.Logger, reg prometheus.Registerer, opts Options) *Service {
	if opts.JobTimeout <= 0 {
		opts.JobTimeout = 10 * time.Minute
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := newMetrics(reg)
	if reg != nil {
		reg.MustRegister(newJobsCollector(cat, log))
		reg.MustRegister(newRestoresCollector(cat, log))
	}
	open := func(ctx context.Context, id string) (Repository, error) {
		r, err := repos.Open(ctx, id)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	return &Service{cat: cat, open: open, log: log, metrics: m, opts: opts, waiters: map[string][]chan struct{}{}}
}

func (s *Service) wake(agentID string) {
	s.mu.Lock()
	ws := s.waiters[agentID]
	delete(s.waiters, agentID)
	s.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
}

// waiter registers a long poll of the agent to be woken by the next job queued for it; the poll
// unregisters when it stops waiting, so an idle agent's polls leave nothing behind.
func (s *Service) waiter(agentID string) (woken <-chan struct{}, unregister func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.waiters[agentID] = append(s.waiters[agentID], ch)
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		ws := s.waiters[agentID]
		if i := slices.Index(ws, ch); i >= 0 {
			ws = slices.Delete(ws, i, i+1)
		}
		if len(ws) == 0 {
			delete(s.waiters, agentID)
		} else {
			s.waiters[agentID] = ws
		}
	}
}

// waiting counts the long polls registered for an agent.
func (s *Service) waiting(agentID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters[agentID])
}

// Poll long-polls for other work of an agent with the jobs' wake-ups: claim runs at once, then
// whenever Wake is called for the agent and every PollInterval, for up to wait. It returns nil
// when nothing came or ctx ended.
func (s *Service) Poll(ctx context.Context, agentID string, wait time.Duration, claim func() (bool, error)) error {
	return s.poll(ctx, agentID, wait, claim)
}

// Wake ends the agent's waiting long polls so that they look for work again.
func (s *Service) Wake(agentID string) { s.wake(agentID) }
