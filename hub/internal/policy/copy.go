package policy

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/copies"
	"github.com/sendense/sendense/hub/internal/retention"
	"github.com/sendense/sendense/hub/internal/schedule"
	"github.com/sendense/sendense/shared/api"
)

// copier copies backups between repositories (copies.Copier): only the chunks the target
// lacks, each verified on arrival; a backup copied before is skipped. It goes on past a backup
// that cannot be copied and reports it.
type copier interface {
	CopyBackups(ctx context.Context, fromID, toID string, ids []string) (copies.Report, error)
}

// copyDeleter removes a backup from one repository (jobs.Service): its copy there, or the
// backup itself when it moved there from the copy policy's source and has no further copy;
// protected or retained → catalog.ErrConflict; not there → catalog.ErrNotFound.
type copyDeleter interface {
	DeleteFrom(ctx context.Context, id, repositoryID string) error
}

// copyRetainer extends the Object Lock retention of a backup's copy in one repository
// (jobs.Service).
type copyRetainer interface {
	RetainCopy(ctx context.Context, id, repositoryID string) error
}

// copyCatalog is what copy policies need of the catalog besides policyCatalog.
type copyCatalog interface {
	Backups(ctx context.Context, f catalog.BackupFilter) ([]catalog.BackupRow, int, error)
	CopiesIn(ctx context.Context, repositoryID string) (map[string]catalog.BackupCopy, error)
	StartCopyRun(ctx context.Context, r *catalog.CopyRun) error
	FinishCopyRun(ctx context.Context, r *catalog.CopyRun) error
	RecordEvents(ctx context.Context, evs []catalog.Event) error
}

// Copy run statuses (catalog.CopyRun.Status).
const (
	CopyRunning   = "running"
	CopySucceeded = "succeeded"
	CopyFailed    = "failed"
)

// SetCopies gives the service what runs copy policies: without it, a due copy policy fails its
// run.
func (s *Service) SetCopies(c copier, d copyDeleter) {
	s.copier, s.copyDel = c, d
}

// copySelects reports whether a copy policy selects a backup by its VM. Unlike a backup
// policy, it also selects the backups of VMs gone from vCenter: their restore points are what a
// copy off site is for.
func copySelects(p *catalog.Policy, b *catalog.BackupRow) bool {
	if p.AgentID != "" && b.AgentID != p.AgentID {
		return false
	}
	if len(p.VMNames) == 0 && p.VMGlob == "" {
		return true
	}
	if slices.Contains(p.VMNames, b.VMName) || slices.Contains(p.VMNames, b.VMContextID) {
		return true
	}
	if p.VMGlob != "" {
		if ok, _ := path.Match(p.VMGlob, b.VMName); ok {
			return true
		}
	}
	return false
}

// copyPlan is what a copy policy wants of its target now.
type copyPlan struct {
	// Wanted are the selected successful backups of the source that the policy's retention
	// keeps (protected ones always), oldest first; Missing those of them the target holds no
	// sound copy of (none, or one its last verification found damaged).
	Wanted, Missing []catalog.BackupRow
	// Unwanted are copies in the target of selected backups that the retention no longer keeps,
	// and backups moved into the target from the source that it no longer keeps.
	Unwanted []catalog.BackupRow
}

// planCopy applies a copy policy's retention to the selected backups of its source, per VM: a
// backup it keeps belongs in the target, a copy of one it does not keep does not. Retention is
// decided on the source's backups, not on the copies, so that a copy pruned from the target is
// never copied again (a newer backup took its place) and a backup never copied because it was
// already out of the window is not behind. The source's backups include those pruned there
// since and moved to their copy in the target (origin_repository_id): they count for the
// retention, and go for good when it stops keeping them.
//
// A copy that another copy policy into the same target wants (enabled or not, as prune counts a
// disabled backup policy's retention) is not unwanted: policies sharing a target keep the union
// of what each keeps.
func (s *Service) planCopy(ctx context.Context, p *catalog.Policy) (copyPlan, error) {
	plan, err := s.planCopyAlone(ctx, p)
	if err != nil || len(plan.Unwanted) == 0 {
		return plan, err
	}
	ps, err := s.cat.Policies(ctx)
	if err != nil {
		return plan, err
	}
	others := map[string]string{} // backup id → the other policy that wants it
	for i := range ps {
		q := &ps[i]
		if !isCopy(q) || q.ID == p.ID || q.TargetRepositoryID != p.TargetRepositoryID {
			continue
		}
		qp, err := s.planCopyAlone(ctx, q)
		if err != nil {
			return plan, err
		}
		for _, b := range qp.Wanted {
			others[b.ID] = q.Name
		}
	}
	unwanted := plan.Unwanted[:0]
	for _, b := range plan.Unwanted {
		if q, ok := others[b.ID]; ok {
			s.log.InfoContext(ctx, "copy kept: another copy policy into the same repository keeps it", "policy", p.Name, "other_policy", q, "job_id", b.ID)
			continue
		}
		unwanted = append(unwanted, b)
	}
	plan.Unwanted = unwanted
	return plan, nil
}

// planCopyAlone is planCopy by p's retention alone.
func (s *Service) planCopyAlone(ctx context.Context, p *catalog.Policy) (copyPlan, error) {
	var plan copyPlan
	loc, err := time.LoadLocation(p.Timezone)
	if err != nil {
		return plan, fmt.Errorf("policy %s: time zone %q: %w", p.Name, p.Timezone, err)
	}
	rows, _, err := s.cat.Backups(ctx, catalog.BackupFilter{RepositoryID: p.RepositoryID, Status: api.JobSucceeded})
	if err != nil {
		return plan, err
	}
	moved, _, err := s.cat.Backups(ctx, catalog.BackupFilter{RepositoryID: p.TargetRepositoryID, Status: api.JobSucceeded})
	if err != nil {
		return plan, err
	}
	for _, b := range moved {
		if b.OriginRepositoryID == p.RepositoryID {
			rows = append(rows, b)
		}
	}
	// Newest first, as Backups lists them, over both.
	slices.SortStableFunc(rows, func(a, b catalog.BackupRow) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(b.ID, a.ID))
	})
	held, err := s.cat.CopiesIn(ctx, p.TargetRepositoryID)
	if err != nil {
		return plan, err
	}
	byVM := map[string][]retention.Backup{}
	for i := range rows {
		if copySelects(p, &rows[i]) {
			b := &rows[i]
			byVM[b.VMContextID] = append(byVM[b.VMContextID], retention.Backup{ID: b.ID, Time: b.CreatedAt, Protected: b.Protected})
		}
	}
	keep := map[string]bool{}
	for _, in := range byVM {
		for _, d := range retention.Apply(rule(p), in, loc) {
			keep[d.Backup.ID] = d.Keep
		}
	}
	for i := len(rows) - 1; i >= 0; i-- { // oldest first
		b := rows[i]
		kept, selected := keep[b.ID]
		cp, copied := held[b.ID]
		// A copy verification found damaged is missing until copied again.
		sound := copied && cp.VerifyStatus != api.VerifyDamaged
		copied = copied || b.RepositoryID == p.TargetRepositoryID // moved there: the copy is the backup
		sound = sound || b.RepositoryID == p.TargetRepositoryID
		switch {
		case !selected:
		case kept:
			plan.Wanted = append(plan.Wanted, b)
			if !sound {
				plan.Missing = append(plan.Missing, b)
			}
		case copied:
			plan.Unwanted = append(plan.Unwanted, b)
		}
	}
	return plan, nil
}

// RunCopy runs a copy policy now, whatever its schedule, and returns the run's record.
func (s *Service) RunCopy(ctx context.Context, nameOrID string) (catalog.CopyRun, error) {
	p, err := s.cat.PolicyByName(ctx, nameOrID)
	if err != nil {
		return catalog.CopyRun{}, err
	}
	if !isCopy(p) {
		return catalog.CopyRun{}, &api.FieldError{Field: "policy", Msg: fmt.Sprintf("policy %s is a %s policy, not a copy policy", p.Name, kind(p))}
	}
	return s.runCopy(ctx, p)
}

// runCopy copies the backups the policy wants in its target and lacks there, oldest first,
// then removes the copies its retention no longer keeps — only when every copy of the run
// succeeded, so that a failing target never loses the copies it still has. The run is recorded
// (copy_runs) and ends with a copy_run event.
func (s *Service) runCopy(ctx context.Context, p *catalog.Policy) (catalog.CopyRun, error) {
	if s.copier == nil || s.copyDel == nil {
		return catalog.CopyRun{}, fmt.Errorf("policy %s: this process runs no copies", p.Name)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return catalog.CopyRun{}, err
	}
	run := catalog.CopyRun{ID: "cr-" + hex.EncodeToString(b[:]), PolicyID: p.ID, FromRepositoryID: p.RepositoryID, ToRepositoryID: p.TargetRepositoryID, Status: CopyRunning}
	if err := s.cat.StartCopyRun(ctx, &run); err != nil {
		return run, err
	}
	start := s.now()
	var errs []string
	plan, err := s.planCopy(ctx, p)
	if err != nil {
		errs = append(errs, err.Error())
	} else {
		ids := make([]string, 0, len(plan.Missing))
		for _, m := range plan.Missing {
			ids = append(ids, m.ID)
		}
		rep, err := s.copier.CopyBackups(ctx, p.RepositoryID, p.TargetRepositoryID, ids)
		run.BackupsCopied, run.BackupsPresent, run.BackupsFailed = rep.Backups, len(plan.Wanted)-len(plan.Missing)+rep.Present, rep.Failed
		run.ChunksCopied, run.BytesCopied = rep.Chunks, rep.Bytes
		errs = append(errs, rep.Errors...)
		if err != nil {
			errs = append(errs, err.Error())
		}
		// The copies the policy keeps stay locked in a target with Object Lock for another lock
		// period (a no-op elsewhere); only there: the source's own policy retains it at home.
		if rt, ok := s.copyDel.(copyRetainer); ok {
			held, err := s.cat.CopiesIn(ctx, p.TargetRepositoryID)
			if err != nil {
				errs = append(errs, err.Error())
			}
			for _, w := range plan.Wanted {
				if _, there := held[w.ID]; !there && w.RepositoryID != p.TargetRepositoryID {
					continue // not copied (its failure is reported above)
				}
				if err := rt.RetainCopy(ctx, w.ID, p.TargetRepositoryID); err != nil && !errors.Is(err, catalog.ErrNotFound) {
					errs = append(errs, fmt.Sprintf("retain copy of %s: %v", w.ID, err))
				}
			}
		}
		if len(errs) == 0 {
			for _, u := range plan.Unwanted {
				// A copy goes from the target; a backup moved into the target goes for good
				// (unless it has a further copy elsewhere, which it then moves to).
				err := s.copyDel.DeleteFrom(ctx, u.ID, p.TargetRepositoryID)
				switch {
				case errors.Is(err, catalog.ErrConflict):
					s.log.InfoContext(ctx, "copy kept: it cannot be removed", "policy", p.Name, "job_id", u.ID, "err", err)
				case errors.Is(err, catalog.ErrNotFound): // removed meanwhile
				case err != nil:
					errs = append(errs, fmt.Sprintf("remove copy of %s: %v", u.ID, err))
				default:
					run.CopiesPruned++
					s.log.InfoContext(ctx, "copy pruned", "policy", p.Name, "job_id", u.ID, "vm_name", u.VMName)
				}
			}
		} else if len(plan.Unwanted) > 0 {
			s.log.WarnContext(ctx, "copies not pruned: the run copied not everything", "policy", p.Name, "unwanted", len(plan.Unwanted))
		}
	}
	run.Status = CopySucceeded
	if len(errs) > 0 {
		run.Status, run.Error = CopyFailed, strings.Join(errs, "; ")
	}
	seconds := s.now().Sub(start).Seconds()
	// The outcome is recorded even when the run was stopped (SIGTERM, the lease lost).
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.cat.FinishCopyRun(rctx, &run); err != nil {
		return run, err
	}
	d := map[string]string{
		"policy": p.Name, "copy_run_id": run.ID, "from": p.RepositoryID, "to": p.TargetRepositoryID,
		"backups_copied": strconv.Itoa(run.BackupsCopied), "backups_present": strconv.Itoa(run.BackupsPresent),
		"backups_failed": strconv.Itoa(run.BackupsFailed), "copies_pruned": strconv.Itoa(run.CopiesPruned),
		"chunks": strconv.FormatInt(run.ChunksCopied, 10), "bytes": strconv.FormatInt(run.BytesCopied, 10),
		"seconds": strconv.FormatFloat(seconds, 'f', 3, 64),
	}
	if from, err := s.cat.RepositoryByID(rctx, p.RepositoryID); err == nil {
		d["from"] = from.Name
	}
	if to, err := s.cat.RepositoryByID(rctx, p.TargetRepositoryID); err == nil {
		d["to"] = to.Name
	}
	if run.Error != "" {
		d["error"] = run.Error
	}
	if err := s.cat.RecordEvents(rctx, []catalog.Event{{Type: api.EventCopyRun, Actor: "policy", Outcome: run.Status, Details: d}}); err != nil {
		s.log.WarnContext(ctx, "record copy run event", "policy", p.Name, "err", err)
	}
	s.log.InfoContext(ctx, "copy policy run", "policy", p.Name, "copy_run_id", run.ID, "status", run.Status, "backups_copied", run.BackupsCopied,
		"backups_present", run.BackupsPresent, "backups_failed", run.BackupsFailed, "copies_pruned", run.CopiesPruned,
		"chunks", run.ChunksCopied, "bytes", run.BytesCopied, "duration_seconds", seconds, "err", run.Error)
	if run.Status == CopyFailed {
		return run, fmt.Errorf("copy policy %s: %s", p.Name, run.Error)
	}
	return run, nil
}

// copyLag reports how far a copy policy's target is behind: the age of the oldest backup the
// policy keeps that the target lacks (0 when none), how many it lacks, and the lag the policy
// tolerates — two periods of its schedule, as for overdue backups: a backup waits up to one
// period for the next run, and the run takes a while.
func (s *Service) copyLag(ctx context.Context, p *catalog.Policy) (lag time.Duration, behind int, allowed time.Duration, err error) {
	sched, err := schedule.Parse(p.Schedule, p.Timezone)
	if err != nil {
		return 0, 0, 0, err
	}
	now := s.now()
	n1 := sched.Next(now)
	allowed = 2 * sched.Next(n1).Sub(n1)
	plan, err := s.planCopy(ctx, p)
	if err != nil {
		return 0, 0, 0, err
	}
	if len(plan.Missing) > 0 {
		lag = max(now.Sub(plan.Missing[0].CreatedAt), 0)
	}
	return lag, len(plan.Missing), allowed, nil
}
