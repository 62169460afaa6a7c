package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/hub/internal/schedule"
	"github.com/sendense/sendense/shared/api"
)

// Run ticks the scheduler every interval until ctx ends.
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	defer s.runs.Wait() // the lease is given up only once no copy run is left
	for {
		if _, err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "scheduler tick failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick starts the runs that are due now: for each enabled policy whose schedule has a slot
// between its last run (or creation) and now, it claims the run in the catalog — one claim per
// due run whatever the number of hubs, and one run however many slots passed while the hub was
// down — and queues a backup of every covered VM that has none queued or running. It returns
// the ids of the jobs it queued.
func (s *Service) Tick(ctx context.Context) ([]string, error) {
	ps, err := s.cat.Policies(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var queued []string
	var errs []error
	for i := range ps {
		p := &ps[i]
		if !p.Enabled {
			continue
		}
		sched, err := schedule.Parse(p.Schedule, p.Timezone)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if isCopy(p) && s.isCopying(p.ID) {
			continue // the previous run still copies; this one is claimed once it ends
		}
		last := p.LastRunAt
		if last.IsZero() {
			last = p.CreatedAt // a new policy waits for its first scheduled time
		}
		due, next := schedule.Due(sched, last, now)
		if !due {
			if !next.Equal(p.NextRunAt) {
				_ = s.cat.SetPolicyNextRun(ctx, p.ID, next)
			}
			continue
		}
		won, err := s.cat.ClaimPolicyRun(ctx, p.ID, p.LastRunAt, now, next)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !won {
			continue // another hub instance took this run
		}
		if isCopy(p) {
			s.startCopy(ctx, *p)
			continue
		}
		ids, err := s.runPolicy(ctx, p, now)
		queued = append(queued, ids...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return queued, errors.Join(errs...)
}

// startCopy runs a copy policy in the background: a copy may take hours and must not hold up
// the other policies. It runs under ctx (the scheduler's lease).
func (s *Service) startCopy(ctx context.Context, p catalog.Policy) {
	s.mu.Lock()
	s.copying[p.ID] = true
	s.mu.Unlock()
	s.runs.Add(1)
	go func() {
		defer s.runs.Done()
		defer func() {
			s.mu.Lock()
			delete(s.copying, p.ID)
			s.mu.Unlock()
		}()
		if _, err := s.runCopy(ctx, &p); err != nil {
			s.log.WarnContext(ctx, "copy policy run failed", "policy", p.Name, "err", err)
		}
	}()
}

func (s *Service) isCopying(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copying[id]
}

// WaitCopies waits for the copy runs the scheduler started to end.
func (s *Service) WaitCopies() { s.runs.Wait() }

// runPolicy queues a backup of every VM the policy covers. A VM that cannot get one (it has a
// job or an in-place restore already, or its queueing fails) does not keep the VMs after it from
// theirs: each failure is logged and all of them are returned together.
func (s *Service) runPolicy(ctx context.Context, p *catalog.Policy, now time.Time) ([]string, error) {
	vms, err := s.Covered(ctx, p)
	if err != nil {
		return nil, err
	}
	if isRestoreTest(p) {
		return s.runRestoreTests(ctx, p, vms)
	}
	var ids []string
	var errs []error
	skipped := 0
	for i := range vms {
		vm := &vms[i]
		typ, err := s.backupType(ctx, p, vm, now)
		if err == nil {
			var id string
			if id, err = s.jobs.Queue(ctx, vm, p.RepositoryID, p.ID, typ, p.CBTSample); err == nil {
				ids = append(ids, id)
				continue
			}
		}
		skipped++
		switch {
		case errors.Is(err, catalog.ErrJobActive):
			// A VM never has two backup jobs at once.
			s.log.InfoContext(ctx, "scheduled backup skipped: the VM already has a job", "policy", p.Name, "vm_name", vm.VMName)
		case errors.Is(err, catalog.ErrInPlaceRestoreActive):
			s.log.WarnContext(ctx, "scheduled backup skipped: the VM is being restored in place", "policy", p.Name, "vm_name", vm.VMName)
		default:
			s.log.WarnContext(ctx, "scheduled backup not queued", "policy", p.Name, "vm_name", vm.VMName, "err", err)
			errs = append(errs, fmt.Errorf("policy %s, VM %s: %w", p.Name, vm.VMName, err))
		}
	}
	s.log.InfoContext(ctx, "policy run", "policy", p.Name, "vms", len(vms), "queued", len(ids), "skipped", skipped)
	return ids, errors.Join(errs...)
}

// runRestoreTests queues a restore test of the latest restore point of every covered VM; a VM
// without a successful backup in the policy's repository, or whose previous test still waits to
// run, is skipped (and logged). Like runPolicy, it goes on past a VM whose test cannot be queued.
func (s *Service) runRestoreTests(ctx context.Context, p *catalog.Policy, vms []catalog.VMWithSource) ([]string, error) {
	if s.tests == nil {
		return nil, fmt.Errorf("policy %s: this process runs no restore tests", p.Name)
	}
	var ids []string
	var errs []error
	skipped := 0
	for i := range vms {
		vm := &vms[i]
		id, err := s.tests.Queue(ctx, vm, p.RepositoryID, p.ID, p.Checks, p.Paths, p.Boot)
		if err == nil {
			ids = append(ids, id)
			continue
		}
		skipped++
		switch {
		case errors.Is(err, restore.ErrNotRestorable):
			s.log.WarnContext(ctx, "scheduled restore test skipped: the VM has no successful backup", "policy", p.Name, "vm_name", vm.VMName)
		case errors.Is(err, restoretest.ErrQueued):
			s.log.WarnContext(ctx, "scheduled restore test skipped: the VM's previous test has not run yet", "policy", p.Name, "vm_name", vm.VMName)
		default:
			s.log.WarnContext(ctx, "scheduled restore test not queued", "policy", p.Name, "vm_name", vm.VMName, "err", err)
			errs = append(errs, fmt.Errorf("policy %s, VM %s: %w", p.Name, vm.VMName, err))
		}
	}
	s.log.InfoContext(ctx, "restore-test policy run", "policy", p.Name, "vms", len(vms), "queued", len(ids), "skipped", skipped)
	return ids, errors.Join(errs...)
}

// backupType applies the policy's full-backup cadence: a full after FullEveryIncrementals
// incrementals in a row, or when the last full is FullEveryDays old; otherwise auto.
func (s *Service) backupType(ctx context.Context, p *catalog.Policy, vm *catalog.VMWithSource, now time.Time) (string, error) {
	if p.FullEveryIncrementals == 0 && p.FullEveryDays == 0 {
		return api.BackupAuto, nil
	}
	hist, err := s.cat.VMBackupHistory(ctx, vm.ContextID, p.RepositoryID)
	if err != nil {
		return "", err
	}
	incrementals := 0
	var lastFull time.Time
	for _, j := range hist {
		if j.Type == api.BackupFull {
			lastFull = j.CreatedAt
			break
		}
		incrementals++
	}
	if len(hist) == 0 {
		return api.BackupAuto, nil
	}
	if p.FullEveryIncrementals > 0 && incrementals >= p.FullEveryIncrementals {
		return api.BackupFull, nil
	}
	if p.FullEveryDays > 0 && (lastFull.IsZero() || now.Sub(lastFull) >= time.Duration(p.FullEveryDays)*24*time.Hour) {
		return api.BackupFull, nil
	}
	return api.BackupAuto, nil
}

// overdue counts the covered VMs whose last successful backup is older than two schedule periods
// (a policy's own window: a nightly policy tolerates one missed night), or that never had one
// although the policy is older than that.
func (s *Service) overdue(ctx context.Context, p *catalog.Policy, covered []catalog.VMWithSource) (int, error) {
	ids, err := s.overdueVMs(ctx, p, covered)
	return len(ids), err
}

// overdueVMs lists the context ids of the VMs overdue counts.
func (s *Service) overdueVMs(ctx context.Context, p *catalog.Policy, covered []catalog.VMWithSource) ([]string, error) {
	if !p.Enabled || len(covered) == 0 || !takesBackups(p) {
		return nil, nil
	}
	sched, err := schedule.Parse(p.Schedule, p.Timezone)
	if err != nil {
		return nil, err
	}
	now := s.now()
	n1 := sched.Next(now)
	window := 2 * sched.Next(n1).Sub(n1)
	// A backup recorded further ahead than a clock correction steps (schedule.StepBack) was
	// dated by a clock that was wrong: when it was taken is unknown, and trusting its date would
	// keep its VM off this list, whatever happens to its backups, until the clock catches up.
	last, err := s.cat.LastSuccessByVM(ctx, p.RepositoryID, now.Add(schedule.StepBack))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, vm := range covered {
		t, ok := last[vm.ContextID]
		switch {
		case ok && now.Sub(t) > window:
			out = append(out, vm.ContextID)
		case !ok && (now.Sub(p.CreatedAt) > window || p.CreatedAt.After(now.Add(schedule.StepBack))):
			// A policy dated ahead, by the same wrong clock, is as old as its date is unknown.
			out = append(out, vm.ContextID)
		}
	}
	return out, nil
}

// OverdueVMs lists the context ids of the VMs that some enabled policy covers and whose last
// successful backup is older than two of that policy's periods (see overdue), each once.
func (s *Service) OverdueVMs(ctx context.Context) ([]string, error) {
	ps, err := s.cat.Policies(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for i := range ps {
		covered, err := s.Covered(ctx, &ps[i])
		if err != nil {
			return nil, err
		}
		ids, err := s.overdueVMs(ctx, &ps[i], covered)
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", ps[i].Name, err)
		}
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out, nil
}
