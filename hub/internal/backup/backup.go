// Package backup runs backup jobs on the hub side: operators start, list, cancel and delete
// backups; agents claim jobs by long polling, upload chunks into per-disk sessions and commit
// them; the hub turns every committed session into a fixed index, so that every backup is a full
// restore point.
package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
)

// Sentinel errors the API maps to status codes.
var (
	ErrInvalid      = errors.New("invalid request")
	ErrVMGone       = errors.New("the VM is gone from its vCenter")
	ErrNoDisks      = errors.New("the VM has no disk that can be backed up")
	ErrFullRequired = errors.New("an incremental is not possible")
)

// backupCatalog is what this package needs from the catalog.
type backupCatalog interface {
	VMByContextID(ctx context.Context, id string) (*catalog.VMWithSource, error)
	VMs(ctx context.Context, f catalog.VMFilter) ([]catalog.VMWithSource, int, error)
	VMDisks(ctx context.Context, contextID string) ([]catalog.VMDisk, error)
	RepositoryByName(ctx context.Context, name string) (*catalog.Repository, error)
	RepositoryByID(ctx context.Context, id string) (*catalog.Repository, error)

	CreateJob(ctx context.Context, j *catalog.BackupJob) error
	JobByID(ctx context.Context, id string) (*catalog.BackupJob, error)
	AgentJob(ctx context.Context, id, agentID string) (*catalog.BackupJob, error)
	ClaimJob(ctx context.Context, agentID string, busy []string) (*catalog.BackupJob, bool, error)
	JobProgress(ctx context.Context, id, agentID string, p catalog.JobCounters, snapshotRef string, snapshotAt time.Time) (*catalog.BackupJob, error)
	RequestCancel(ctx context.Context, id string) (*catalog.BackupJob, error)
	FinishJob(ctx context.Context, id, agentID, status, errMsg, notes string) (*catalog.BackupJob, []catalog.BackupDisk, error)
	FailStaleJobs(ctx context.Context, cutoff time.Time) ([]catalog.FailedJob, error)

	OpenSession(ctx context.Context, s *catalog.UploadSession) (*catalog.UploadSession, error)
	AgentSession(ctx context.Context, id, agentID string) (*catalog.UploadSession, error)
	RecordSlots(ctx context.Context, sessionID string, slots []catalog.UploadSlot) error
	SessionSlots(ctx context.Context, sessionID string) ([]catalog.UploadSlot, error)
	CommitSession(ctx context.Context, sessionID string, bd *catalog.BackupDisk) (*catalog.BackupDisk, error)
	LatestBackupDisk(ctx context.Context, vmContextID, diskID, repositoryID string) (*catalog.BackupDisk, error)
	BackupDisks(ctx context.Context, jobID string) ([]catalog.BackupDisk, error)

	Backups(ctx context.Context, f catalog.BackupFilter) ([]catalog.BackupRow, int, error)
	BackupByID(ctx context.Context, id string) (*catalog.BackupRow, error)
	Chain(ctx context.Context, vmContextID string) ([]catalog.ChainEntry, error)
	DeleteBackup(ctx context.Context, id string) (*catalog.BackupJob, []catalog.BackupDisk, error)
}

// repositories opens repositories by catalog id.
type repositories interface {
	Open(ctx context.Context, id string) (*repository.Repository, error)
}

var _ repositories = (*repository.Registry)(nil)

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
	repos   repositories
	log     *slog.Logger
	metrics *Metrics
	opts    Options

	mu      sync.Mutex
	waiters map[string][]chan struct{} // agent id → long polls to wake

	// OnFinished, when set, is called after a job an agent completed is recorded (for example to
	// prune after a scheduled backup). It must not block.
	OnFinished func(j catalog.BackupJob)
}

// New returns the backup service.
func New(cat backupCatalog, repos repositories, log *slog.Logger, m *Metrics, opts Options) *Service {
	if opts.JobTimeout <= 0 {
		opts.JobTimeout = 10 * time.Minute
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Service{cat: cat, repos: repos, log: log, metrics: m, opts: opts, waiters: map[string][]chan struct{}{}}
}

func newID(prefix string, now time.Time) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return prefix + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:]), nil
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

func (s *Service) waiter(agentID string) chan struct{} {
	ch := make(chan struct{})
	s.mu.Lock()
	s.waiters[agentID] = append(s.waiters[agentID], ch)
	s.mu.Unlock()
	return ch
}

// indexRef names the index of one disk of one backup.
func indexRef(instanceUUID, diskID, backupID string) repository.IndexRef {
	return repository.IndexRef{VMUUID: instanceUUID, DiskID: diskID, BackupID: backupID}
}
