package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/uptrace/bun"
)

// CreatePolicy records a policy; a policy with the same name → ErrConflict.
func (c *Catalog) CreatePolicy(ctx context.Context, p *Policy) error {
	now := c.now()
	p.CreatedAt, p.UpdatedAt = now, now
	if _, err := c.db.NewInsert().Model(p).Exec(ctx); err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("policy %q: %w", p.Name, ErrConflict)
		}
		return fmt.Errorf("insert policy %q: %w", p.Name, err)
	}
	return nil
}

// UpdatePolicy replaces a policy's settings (not its run times).
func (c *Catalog) UpdatePolicy(ctx context.Context, p *Policy) error {
	p.UpdatedAt = c.now()
	res, err := c.db.NewUpdate().Model(p).WherePK().ExcludeColumn("id", "created_at", "last_run_at").Exec(ctx)
	if err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("policy %q: %w", p.Name, ErrConflict)
		}
		return fmt.Errorf("update policy %q: %w", p.Name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("policy %s: %w", p.ID, ErrNotFound)
	}
	return nil
}

// PolicyByName returns a policy by name or id, or ErrNotFound.
func (c *Catalog) PolicyByName(ctx context.Context, nameOrID string) (*Policy, error) {
	p := new(Policy)
	q := c.db.NewSelect().Model(p).WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
		return q.Where("name = ?", nameOrID).WhereOr("id = ?", nameOrID)
	}).Limit(1)
	if err := scanOne(ctx, q, fmt.Sprintf("policy %q", nameOrID)); err != nil {
		return nil, err
	}
	return p, nil
}

// Policies lists policies by name.
func (c *Catalog) Policies(ctx context.Context) ([]Policy, error) {
	var ps []Policy
	if err := c.db.NewSelect().Model(&ps).Order("name ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	return ps, nil
}

// DeletePolicy removes a policy; its backups stay (their policy_id keeps the old id).
func (c *Catalog) DeletePolicy(ctx context.Context, id string) error {
	res, err := c.db.NewDelete().Model((*Policy)(nil)).Where("id = ?", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("delete policy %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("policy %s: %w", id, ErrNotFound)
	}
	return nil
}

// ClaimPolicyRun records that the run due for a policy is taken, with a conditional UPDATE on the
// last run time the caller saw: of several hub instances sharing the catalog, exactly one wins
// a due run. It reports whether this caller won.
func (c *Catalog) ClaimPolicyRun(ctx context.Context, id string, seenLastRun, runAt, nextRun time.Time) (bool, error) {
	q := c.db.NewUpdate().Model((*Policy)(nil)).
		Set("last_run_at = ?", runAt.UTC()).Set("next_run_at = ?", nextRun.UTC()).
		Where("id = ?", id).Where("enabled = ?", true)
	if seenLastRun.IsZero() {
		q = q.Where("last_run_at IS NULL")
	} else {
		q = q.Where("last_run_at = ?", seenLastRun.UTC())
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("claim run of policy %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// SetPolicyNextRun records when a policy runs next (for operators and metrics).
func (c *Catalog) SetPolicyNextRun(ctx context.Context, id string, next time.Time) error {
	_, err := c.db.NewUpdate().Model((*Policy)(nil)).Set("next_run_at = ?", next.UTC()).Where("id = ?", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record next run of policy %s: %w", id, err)
	}
	return nil
}

// PolicyRunStats summarises a policy's jobs: the last finished job's status and time, and the
// last success.
type PolicyRunStats struct {
	LastStatus    string
	LastFinished  time.Time
	LastSuccessAt time.Time
}

// PolicyStats returns the run statistics of a policy.
func (c *Catalog) PolicyStats(ctx context.Context, policyID string) (PolicyRunStats, error) {
	var out PolicyRunStats
	var last BackupJob
	err := c.db.NewSelect().Model(&last).Column("status", "finished_at").
		Where("policy_id = ?", policyID).Where("status IN (?)", bun.In([]string{api.JobSucceeded, api.JobFailed, api.JobCancelled})).
		Order("finished_at DESC").Limit(1).Scan(ctx)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return out, fmt.Errorf("last job of policy %s: %w", policyID, err)
	}
	out.LastStatus, out.LastFinished = last.Status, last.FinishedAt
	var ok BackupJob
	err = c.db.NewSelect().Model(&ok).Column("finished_at").
		Where("policy_id = ?", policyID).Where("status = ?", api.JobSucceeded).
		Order("finished_at DESC").Limit(1).Scan(ctx)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return out, fmt.Errorf("last success of policy %s: %w", policyID, err)
	}
	out.LastSuccessAt = ok.FinishedAt
	return out, nil
}

// VMBackupHistory returns the successful backups of a VM in a repository, newest first, for
// retention and full-backup cadence.
func (c *Catalog) VMBackupHistory(ctx context.Context, vmContextID, repositoryID string) ([]BackupJob, error) {
	var out []BackupJob
	err := c.db.NewSelect().Model(&out).
		Where("vm_context_id = ?", vmContextID).Where("repository_id = ?", repositoryID).Where("status = ?", api.JobSucceeded).
		Order("created_at DESC", "id DESC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("select backups of %s: %w", vmContextID, err)
	}
	return out, nil
}

// LastSuccessByVM returns, per VM, when its newest successful backup in the repository made at or
// before notAfter was made (a VM without one is absent).
func (c *Catalog) LastSuccessByVM(ctx context.Context, repositoryID string, notAfter time.Time) (map[string]time.Time, error) {
	var rows []struct {
		VMContextID string    `bun:"vm_context_id"`
		Last        time.Time `bun:"last"`
	}
	err := c.db.NewSelect().Model((*BackupJob)(nil)).Column("vm_context_id").ColumnExpr("MAX(created_at) AS last").
		Where("repository_id = ?", repositoryID).Where("status = ?", api.JobSucceeded).Where("created_at <= ?", notAfter.UTC()).
		Group("vm_context_id").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("last successful backups: %w", err)
	}
	out := make(map[string]time.Time, len(rows))
	for _, r := range rows {
		out[r.VMContextID] = r.Last
	}
	return out, nil
}
