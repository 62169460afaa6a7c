package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/retention"
	"github.com/sendense/sendense/shared/api"
)

// PruneOptions select what prune looks at.
type PruneOptions struct {
	Policy string // only VMs of this policy (name or id); empty: every enabled policy
	VM     string // only this VM (name or context id)
	DryRun bool   // decide and report, delete nothing
}

// PruneReport lists every decision, kept and removed, with its reasons.
type PruneReport struct {
	Decisions []api.PruneDecision
	Removed   int
	Errors    []string
}

type group struct {
	vm    catalog.VMWithSource
	repo  string
	rules []named
}

type named struct {
	policy string
	rule   retention.Rule
	loc    *time.Location
}

// Prune applies retention per VM and repository. When several policies cover a VM in one
// repository, a backup is kept if any of them keeps it — also when only one policy's VMs are
// pruned (o.Policy), and also the rules of a disabled policy (paused, its retention still
// keeps), though only enabled policies choose what is pruned. Protected backups are never
// removed. Backups of VMs no enabled policy covers any more are left alone.
func (s *Service) Prune(ctx context.Context, o PruneOptions) (PruneReport, error) {
	ps, err := s.cat.Policies(ctx)
	if err != nil {
		return PruneReport{}, err
	}
	only := ""
	if o.Policy != "" {
		p, err := s.cat.PolicyByName(ctx, o.Policy)
		if err != nil {
			return PruneReport{}, err
		}
		switch {
		case !takesBackups(p):
			return PruneReport{}, &api.FieldError{Field: "policy", Msg: fmt.Sprintf("policy %s is a %s policy: it keeps no backups (a copy policy prunes its copies in its own runs)", p.Name, p.Kind)}
		case !p.Enabled:
			return PruneReport{}, &api.FieldError{Field: "policy", Msg: fmt.Sprintf("policy %s is disabled: enable it to prune by it", p.Name)}
		}
		only = p.ID
	}
	groups := map[[2]string]*group{}
	var order [][2]string
	chosen := map[[2]string]bool{}
	// Enabled policies first: they make the groups; disabled ones then only add their rules.
	slices.SortStableFunc(ps, func(a, b catalog.Policy) int {
		switch {
		case a.Enabled == b.Enabled:
			return 0
		case a.Enabled:
			return -1
		}
		return 1
	})
	for i := range ps {
		p := &ps[i]
		if !takesBackups(p) {
			// A restore-test policy keeps nothing: it must not keep backups from prune either. A
			// copy policy's retention is of its copies, applied by its own runs.
			continue
		}
		loc, err := time.LoadLocation(p.Timezone)
		if err != nil {
			return PruneReport{}, fmt.Errorf("policy %s: time zone %q: %w", p.Name, p.Timezone, err)
		}
		vms, err := s.selected(ctx, p, selects)
		if err != nil {
			return PruneReport{}, err
		}
		for _, vm := range vms {
			if o.VM != "" && vm.VMName != o.VM && vm.ContextID != o.VM {
				continue
			}
			k := [2]string{vm.ContextID, p.RepositoryID}
			g := groups[k]
			if g == nil {
				if !p.Enabled {
					continue
				}
				g = &group{vm: vm, repo: p.RepositoryID}
				groups[k] = g
				order = append(order, k)
			}
			if p.Enabled && (only == "" || p.ID == only) {
				chosen[k] = true
			}
			g.rules = append(g.rules, named{policy: p.Name, rule: rule(p), loc: loc})
		}
	}
	var rep PruneReport
	for _, k := range order {
		if !chosen[k] {
			continue
		}
		if err := s.pruneGroup(ctx, groups[k], o.DryRun, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func (s *Service) pruneGroup(ctx context.Context, g *group, dryRun bool, rep *PruneReport) error {
	hist, err := s.cat.VMBackupHistory(ctx, g.vm.ContextID, g.repo)
	if err != nil {
		return err
	}
	if len(hist) == 0 {
		return nil
	}
	in := make([]retention.Backup, 0, len(hist))
	for _, j := range hist {
		if j.OriginRepositoryID == "" {
			in = append(in, retention.Backup{ID: j.ID, Time: j.CreatedAt, Protected: j.Protected})
		}
	}
	keep := map[string][]string{}
	for _, r := range g.rules {
		for _, d := range retention.Apply(r.rule, in, r.loc) {
			if d.Keep {
				for _, reason := range d.Reasons {
					keep[d.Backup.ID] = append(keep[d.Backup.ID], r.policy+": "+reason)
				}
			}
		}
	}
	for _, j := range hist {
		reasons, kept := keep[j.ID]
		slices.Sort(reasons)
		reasons = slices.Compact(reasons)
		d := api.PruneDecision{BackupID: j.ID, VMName: g.vm.VMName, CreatedAt: j.CreatedAt, Keep: kept, Reasons: reasons}
		if j.OriginRepositoryID != "" {
			// Moved here from its home when that pruned it: it is the copy a copy policy keeps,
			// under that policy's retention, not this one's.
			origin := j.OriginRepositoryID
			if r, err := s.cat.RepositoryByID(ctx, origin); err == nil {
				origin = r.Name
			}
			d.Keep, d.Reasons = true, []string{"moved here from repository " + origin + ": its copy policy's retention applies"}
			rep.Decisions = append(rep.Decisions, d)
			continue
		}
		if rt, ok := s.jobs.(retainer); ok && kept && !dryRun {
			// Kept by retention: its objects stay locked for another lock period.
			if err := rt.Retain(ctx, j.ID); err != nil {
				rep.Errors = append(rep.Errors, fmt.Sprintf("%s: extend retention: %v", j.ID, err))
			}
		}
		if !kept {
			d.Reasons = []string{"no rule keeps it"}
			if !dryRun {
				// Only from this repository: a backup with a copy moves to it and lives on there
				// under the copy policy's retention.
				if err := s.jobs.DeleteFrom(ctx, j.ID, g.repo); err != nil {
					if errors.Is(err, catalog.ErrConflict) {
						d.Keep, d.Reasons = true, []string{"not removed: " + err.Error()}
					} else {
						rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", j.ID, err))
					}
				} else {
					rep.Removed++
					s.log.InfoContext(ctx, "backup pruned", "job_id", j.ID, "vm_name", g.vm.VMName)
				}
			}
		}
		rep.Decisions = append(rep.Decisions, d)
	}
	return nil
}

// retainer extends the S3 Object Lock retention of a kept backup's objects (jobs.Service); a
// repository without Object Lock makes it a no-op.
type retainer interface {
	Retain(ctx context.Context, id string) error
}

// PruneVM prunes one VM in one repository after a scheduled backup of it finished.
func (s *Service) PruneVM(ctx context.Context, vmContextID string) {
	rep, err := s.Prune(ctx, PruneOptions{VM: vmContextID})
	if err != nil {
		s.log.WarnContext(ctx, "prune after backup failed", "vm_context_id", vmContextID, "err", err)
		return
	}
	for _, e := range rep.Errors {
		s.log.WarnContext(ctx, "prune could not remove a backup", "err", e)
	}
}
