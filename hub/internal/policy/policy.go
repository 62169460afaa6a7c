// Package policy runs Sendense unattended: backup policies say which VMs are backed up when, to
// which repository and for how long; the scheduler turns due policies into jobs (claimed through
// the catalog, so several hubs on one database run each due run once), and prune applies the
// retention rules.
package policy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/retention"
	"github.com/sendense/sendense/hub/internal/schedule"
	"github.com/sendense/sendense/shared/api"
)

// policyCatalog is what this package needs from the catalog.
type policyCatalog interface {
	CreatePolicy(ctx context.Context, p *catalog.Policy) error
	UpdatePolicy(ctx context.Context, p *catalog.Policy) error
	PolicyByName(ctx context.Context, nameOrID string) (*catalog.Policy, error)
	Policies(ctx context.Context) ([]catalog.Policy, error)
	DeletePolicy(ctx context.Context, id string) error
	ClaimPolicyRun(ctx context.Context, id string, seenLastRun, runAt, nextRun time.Time) (bool, error)
	SetPolicyNextRun(ctx context.Context, id string, next time.Time) error
	PolicyStats(ctx context.Context, policyID string) (catalog.PolicyRunStats, error)
	RestoreTestPolicyStats(ctx context.Context, policyID string) (catalog.PolicyRunStats, error)
	VMBackupHistory(ctx context.Context, vmContextID, repositoryID string) ([]catalog.BackupJob, error)
	LastSuccessByVM(ctx context.Context, repositoryID string, notAfter time.Time) (map[string]time.Time, error)
	VMs(ctx context.Context, f catalog.VMFilter) ([]catalog.VMWithSource, int, error)
	RepositoryByName(ctx context.Context, name string) (*catalog.Repository, error)
	RepositoryByID(ctx context.Context, id string) (*catalog.Repository, error)
	AgentByID(ctx context.Context, id string) (*catalog.Agent, error)
	CopyPolicyStats(ctx context.Context, policyID string) (catalog.PolicyRunStats, error)
	copyCatalog
}

// jobs queues backups and removes them from a repository.
type jobs interface {
	Queue(ctx context.Context, vm *catalog.VMWithSource, repositoryID, policyID, typ string, cbtSample float64) (string, error)
	// DeleteFrom removes a backup from one repository: a copy there goes; a backup at home
	// there moves to its oldest copy, or goes when it has none. Protected, running or
	// retained → catalog.ErrConflict.
	DeleteFrom(ctx context.Context, id, repositoryID string) error
}

// restoreTests queues restore tests.
type restoreTests interface {
	// Queue queues a test of the VM's newest successful backup in repositoryID with checks
	// (and the paths of a paths check, the settings of a boot check); a VM without one →
	// restore.ErrNotRestorable, and nothing is queued.
	Queue(ctx context.Context, vm *catalog.VMWithSource, repositoryID, policyID string, checks, paths []string, boot *api.RestoreTestBoot) (string, error)
}

// Service manages policies, runs the scheduler and prunes.
type Service struct {
	cat   policyCatalog
	jobs  jobs
	tests restoreTests
	log   *slog.Logger
	now   func() time.Time

	copier  copier
	copyDel copyDeleter
	// copying holds the copy policies whose run is under way in this process; runs waits for
	// them when the scheduler stops.
	mu      sync.Mutex
	copying map[string]bool
	runs    sync.WaitGroup
}

// New returns the service, registering its collector (per-policy run state, unprotected VMs) on
// reg unless reg is nil; now is the clock (nil: time.Now). tests runs the restore-test
// policies (nil: a due restore-test policy fails its run).
func New(cat policyCatalog, jobs jobs, tests restoreTests, log *slog.Logger, reg prometheus.Registerer, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	s := &Service{cat: cat, jobs: jobs, tests: tests, log: log, now: now, copying: map[string]bool{}}
	if reg != nil {
		reg.MustRegister(newCollector(s, log))
	}
	return s
}

func rule(p *catalog.Policy) retention.Rule {
	return retention.Rule{KeepLast: p.KeepLast, KeepHourly: p.KeepHourly, KeepDaily: p.KeepDaily, KeepWeekly: p.KeepWeekly, KeepMonthly: p.KeepMonthly, KeepYearly: p.KeepYearly}
}

func (s *Service) info(ctx context.Context, p *catalog.Policy) (api.Policy, error) {
	repo, err := s.cat.RepositoryByID(ctx, p.RepositoryID)
	if err != nil {
		return api.Policy{}, err
	}
	stats := s.cat.PolicyStats
	switch {
	case isRestoreTest(p):
		stats = s.cat.RestoreTestPolicyStats // last_status: passed or failed
	case isCopy(p):
		stats = s.cat.CopyPolicyStats // last_status: succeeded or failed
	}
	st, err := stats(ctx, p.ID)
	if err != nil {
		return api.Policy{}, err
	}
	out := api.Policy{
		ID: p.ID, Name: p.Name, Kind: kind(p), Enabled: p.Enabled, VMs: p.VMNames, VMGlob: p.VMGlob, Agent: p.AgentID, Repository: repo.Name,
		Schedule: p.Schedule, Timezone: p.Timezone,
		Retention:             api.Retention{KeepLast: p.KeepLast, KeepHourly: p.KeepHourly, KeepDaily: p.KeepDaily, KeepWeekly: p.KeepWeekly, KeepMonthly: p.KeepMonthly, KeepYearly: p.KeepYearly},
		FullEveryIncrementals: p.FullEveryIncrementals, FullEveryDays: p.FullEveryDays, CBTSample: &p.CBTSample,
		LastRunAt: p.LastRunAt, NextRunAt: p.NextRunAt, LastStatus: st.LastStatus, LastSuccessAt: st.LastSuccessAt, CreatedAt: p.CreatedAt,
	}
	if isRestoreTest(p) {
		out.Checks, out.Paths, out.CBTSample = p.Checks, p.Paths, nil
		if p.Boot != nil {
			out.RestoreTestBoot = *p.Boot
		}
	}
	if isCopy(p) {
		to, err := s.cat.RepositoryByID(ctx, p.TargetRepositoryID)
		if err != nil {
			return api.Policy{}, err
		}
		out.From, out.To, out.CBTSample = repo.Name, to.Name, nil
	}
	return out, nil
}

// kind is a policy's kind; rows from before kinds existed are backup policies.
func kind(p *catalog.Policy) string {
	if p.Kind == "" {
		return api.PolicyBackup
	}
	return p.Kind
}

func isRestoreTest(p *catalog.Policy) bool { return p.Kind == api.PolicyRestoreTest }

func isCopy(p *catalog.Policy) bool { return p.Kind == api.PolicyCopy }

// takesBackups reports whether a policy backs VMs up (and so protects them, and prunes them).
func takesBackups(p *catalog.Policy) bool { return !isRestoreTest(p) && !isCopy(p) }

// fromAPI validates an API policy into a catalog row; each error names the field.
func (s *Service) fromAPI(ctx context.Context, in api.Policy) (*catalog.Policy, error) {
	switch {
	case in.Name == "" || len(in.Name) > 128 || strings.ContainsAny(in.Name, " /\\?#%") ||
		strings.IndexFunc(in.Name, api.UnsafeRune) >= 0:
		// A name goes into URL paths (the API's and the console's) as it is.
		return nil, &api.FieldError{Field: "name", Msg: "must be a non-empty name of at most 128 characters, without spaces, control characters or any of / \\ ? # %"}
	case strings.HasPrefix(in.Name, "pol-"):
		// Policies are looked up by name or id: a name of an id's form could shadow another
		// policy's id.
		return nil, &api.FieldError{Field: "name", Msg: `must not start with "pol-", the prefix of policy ids`}
	case len(in.VMs) > 10000:
		return nil, &api.FieldError{Field: "vms", Msg: "at most 10000 entries"}
	}
	k := in.Kind
	if k == "" {
		k = api.PolicyBackup
	}
	var checks []string
	var boot *api.RestoreTestBoot
	switch k {
	case api.PolicyBackup:
		if len(in.Checks) > 0 {
			return nil, &api.FieldError{Field: "checks", Msg: "only a restore_test policy has checks"}
		}
		if len(in.Paths) > 0 {
			return nil, &api.FieldError{Field: "paths", Msg: "only a restore_test policy has paths"}
		}
		if fe := new(api.FieldError); errors.As(in.NormalizeBoot(nil), &fe) {
			return nil, &api.FieldError{Field: fe.Field, Msg: "only a restore_test policy with the boot check has it"}
		}
	case api.PolicyRestoreTest:
		checks = in.Checks
		if len(checks) == 0 {
			checks = api.DefaultRestoreTestChecks
		}
		if err := api.ValidateChecks("checks", checks); err != nil {
			return nil, err
		}
		if err := api.ValidatePaths("paths", checks, in.Paths); err != nil {
			return nil, err
		}
		if err := in.NormalizeBoot(checks); err != nil {
			return nil, err
		}
		if slices.Contains(checks, api.CheckBoot) {
			b := in.RestoreTestBoot
			boot = &b
		}
		switch {
		case in.Retention != (api.Retention{}):
			return nil, &api.FieldError{Field: "retention", Msg: "a restore_test policy keeps no backups: leave retention empty"}
		case in.FullEveryIncrementals != 0 || in.FullEveryDays != 0:
			return nil, &api.FieldError{Field: "full_every_incrementals", Msg: "a restore_test policy takes no backups: leave the full-backup cadences empty"}
		case in.CBTSample != nil:
			return nil, &api.FieldError{Field: "cbt_sample", Msg: "a restore_test policy takes no backups: leave cbt_sample empty"}
		}
	case api.PolicyCopy:
		switch {
		case len(in.Checks) > 0:
			return nil, &api.FieldError{Field: "checks", Msg: "only a restore_test policy has checks"}
		case len(in.Paths) > 0:
			return nil, &api.FieldError{Field: "paths", Msg: "only a restore_test policy has paths"}
		case in.FullEveryIncrementals != 0 || in.FullEveryDays != 0:
			return nil, &api.FieldError{Field: "full_every_incrementals", Msg: "a copy policy takes no backups: leave the full-backup cadences empty"}
		case in.CBTSample != nil:
			return nil, &api.FieldError{Field: "cbt_sample", Msg: "a copy policy takes no backups: leave cbt_sample empty"}
		case in.To == "":
			return nil, &api.FieldError{Field: "to", Msg: "a copy policy needs the repository it copies to"}
		case in.From != "" && in.Repository != "" && in.From != in.Repository:
			return nil, &api.FieldError{Field: "from", Msg: "from and repository name the same thing for a copy policy: give one"}
		}
		if in.From != "" {
			in.Repository = in.From
		}
	default:
		return nil, &api.FieldError{Field: "kind", Msg: "must be backup, restore_test or copy"}
	}
	if k != api.PolicyCopy && (in.From != "" || in.To != "") {
		return nil, &api.FieldError{Field: "to", Msg: "only a copy policy has from and to: a " + k + " policy uses repository"}
	}
	for i, v := range in.VMs {
		if v == "" || len(v) > api.MaxNameLen {
			return nil, &api.FieldError{Field: fmt.Sprintf("vms[%d]", i), Msg: "must be a VM name or context id"}
		}
	}
	if in.VMGlob != "" {
		if _, err := path.Match(in.VMGlob, ""); err != nil || len(in.VMGlob) > 255 {
			return nil, &api.FieldError{Field: "vm_glob", Msg: "not a valid pattern (path.Match syntax: *, ?, [a-z])"}
		}
	}
	if in.Agent != "" {
		if _, err := s.cat.AgentByID(ctx, in.Agent); err != nil {
			return nil, &api.FieldError{Field: "agent", Msg: fmt.Sprintf("no agent %q", in.Agent)}
		}
	}
	tz := in.Timezone
	if tz == "" {
		tz = "UTC"
	}
	if _, err := schedule.Parse(in.Schedule, tz); err != nil {
		field := "schedule"
		if strings.Contains(err.Error(), "zone") {
			field = "timezone"
		}
		return nil, &api.FieldError{Field: field, Msg: err.Error()}
	}
	r := retention.Rule{KeepLast: in.Retention.KeepLast, KeepHourly: in.Retention.KeepHourly, KeepDaily: in.Retention.KeepDaily,
		KeepWeekly: in.Retention.KeepWeekly, KeepMonthly: in.Retention.KeepMonthly, KeepYearly: in.Retention.KeepYearly}
	if err := r.Validate(); err != nil {
		return nil, &api.FieldError{Field: "retention", Msg: err.Error()}
	}
	if in.FullEveryIncrementals < 0 {
		return nil, &api.FieldError{Field: "full_every_incrementals", Msg: "must not be negative"}
	}
	if in.FullEveryDays < 0 {
		return nil, &api.FieldError{Field: "full_every_days", Msg: "must not be negative"}
	}
	sample := api.DefaultCBTSample
	if in.CBTSample != nil {
		sample = *in.CBTSample
	}
	if !(sample >= 0 && sample <= 1) {
		return nil, &api.FieldError{Field: "cbt_sample", Msg: "must be a fraction between 0 and 1"}
	}
	repoName := in.Repository
	if repoName == "" {
		repoName = repository.DefaultName
	}
	repo, err := s.cat.RepositoryByName(ctx, repoName)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, &api.FieldError{Field: "repository", Msg: fmt.Sprintf("no repository named %q", repoName)}
	}
	if err != nil {
		return nil, err
	}
	target := ""
	if k == api.PolicyCopy {
		to, err := s.cat.RepositoryByName(ctx, in.To)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil, &api.FieldError{Field: "to", Msg: fmt.Sprintf("no repository named %q", in.To)}
		}
		if err != nil {
			return nil, err
		}
		if to.ID == repo.ID {
			return nil, &api.FieldError{Field: "to", Msg: fmt.Sprintf("a copy policy copies into another repository than its source %q", repoName)}
		}
		if to.ChunkSize != repo.ChunkSize {
			return nil, &api.FieldError{Field: "to", Msg: fmt.Sprintf("repository %q has %d-byte chunks and %q %d-byte chunks: indexes cannot be copied between them", in.To, to.ChunkSize, repoName, repo.ChunkSize)}
		}
		target, sample = to.ID, 0
	}
	return &catalog.Policy{
		Name: in.Name, Kind: k, Checks: checks, Paths: in.Paths, Boot: boot, Enabled: in.Enabled, VMNames: in.VMs, VMGlob: in.VMGlob, AgentID: in.Agent, RepositoryID: repo.ID, TargetRepositoryID: target,
		Schedule: in.Schedule, Timezone: tz, KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily,
		KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly,
		FullEveryIncrementals: in.FullEveryIncrementals, FullEveryDays: in.FullEveryDays, CBTSample: sample,
	}, nil
}

// Create validates and records a policy. Its first run is the first scheduled time after now.
func (s *Service) Create(ctx context.Context, in api.Policy) (api.Policy, error) {
	p, err := s.fromAPI(ctx, in)
	if err != nil {
		return api.Policy{}, err
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return api.Policy{}, err
	}
	p.ID = "pol-" + hex.EncodeToString(b[:])
	sched, _ := schedule.Parse(p.Schedule, p.Timezone)
	p.NextRunAt = sched.Next(s.now())
	if err := s.cat.CreatePolicy(ctx, p); err != nil {
		return api.Policy{}, err
	}
	s.log.InfoContext(ctx, "policy created", "policy", p.Name, "schedule", p.Schedule, "timezone", p.Timezone, "next_run", p.NextRunAt)
	return s.info(ctx, p)
}

// Update replaces a policy's settings; its run history stays.
func (s *Service) Update(ctx context.Context, nameOrID string, in api.Policy) (api.Policy, error) {
	old, err := s.cat.PolicyByName(ctx, nameOrID)
	if err != nil {
		return api.Policy{}, err
	}
	p, err := s.fromAPI(ctx, in)
	if err != nil {
		return api.Policy{}, err
	}
	p.ID, p.CreatedAt, p.LastRunAt = old.ID, old.CreatedAt, old.LastRunAt
	sched, _ := schedule.Parse(p.Schedule, p.Timezone)
	p.NextRunAt = sched.Next(s.now())
	if err := s.cat.UpdatePolicy(ctx, p); err != nil {
		return api.Policy{}, err
	}
	return s.info(ctx, p)
}

// Get returns one policy by name or id.
func (s *Service) Get(ctx context.Context, nameOrID string) (api.Policy, error) {
	p, err := s.cat.PolicyByName(ctx, nameOrID)
	if err != nil {
		return api.Policy{}, err
	}
	return s.info(ctx, p)
}

// List returns every policy.
func (s *Service) List(ctx context.Context) ([]api.Policy, error) {
	ps, err := s.cat.Policies(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Policy, 0, len(ps))
	for i := range ps {
		p, err := s.info(ctx, &ps[i])
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Delete removes a policy; its backups stay until deleted or pruned by another policy.
func (s *Service) Delete(ctx context.Context, nameOrID string) error {
	p, err := s.cat.PolicyByName(ctx, nameOrID)
	if err != nil {
		return err
	}
	if err := s.cat.DeletePolicy(ctx, p.ID); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "policy deleted", "policy", p.Name)
	return nil
}

// covers reports whether an enabled policy selects a VM.
func covers(p *catalog.Policy, vm *catalog.VMWithSource) bool {
	return p.Enabled && selects(p, vm)
}

// selects reports whether a policy, enabled or not, selects a VM.
func selects(p *catalog.Policy, vm *catalog.VMWithSource) bool {
	if vm.CurrentStatus == api.VMGone || vm.IsTemplate {
		return false
	}
	if p.AgentID != "" && vm.AgentID != p.AgentID {
		return false
	}
	if len(p.VMNames) == 0 && p.VMGlob == "" {
		return true
	}
	if slices.Contains(p.VMNames, vm.VMName) || slices.Contains(p.VMNames, vm.ContextID) {
		return true
	}
	if p.VMGlob != "" {
		if ok, _ := path.Match(p.VMGlob, vm.VMName); ok {
			return true
		}
	}
	return false
}

// Covered lists the VMs a policy selects (none while it is disabled).
func (s *Service) Covered(ctx context.Context, p *catalog.Policy) ([]catalog.VMWithSource, error) {
	return s.selected(ctx, p, covers)
}

// selected lists the VMs for which pick(p, vm) holds.
func (s *Service) selected(ctx context.Context, p *catalog.Policy, pick func(*catalog.Policy, *catalog.VMWithSource) bool) ([]catalog.VMWithSource, error) {
	vms, _, err := s.cat.VMs(ctx, catalog.VMFilter{AgentID: p.AgentID})
	if err != nil {
		return nil, err
	}
	var out []catalog.VMWithSource
	for i := range vms {
		if pick(p, &vms[i]) {
			out = append(out, vms[i])
		}
	}
	return out, nil
}

// Unprotected lists the VMs (not gone, not templates) that no enabled backup policy covers.
func (s *Service) Unprotected(ctx context.Context) ([]api.VMContext, error) {
	ps, err := s.cat.Policies(ctx)
	if err != nil {
		return nil, err
	}
	vms, _, err := s.cat.VMs(ctx, catalog.VMFilter{})
	if err != nil {
		return nil, err
	}
	var out []api.VMContext
	for i := range vms {
		vm := &vms[i]
		if vm.CurrentStatus == api.VMGone || vm.IsTemplate {
			continue
		}
		if !slices.ContainsFunc(ps, func(p catalog.Policy) bool { return takesBackups(&p) && covers(&p, vm) }) {
			out = append(out, inventory.VMInfo(vm, nil))
		}
	}
	return out, nil
}
