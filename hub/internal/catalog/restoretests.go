package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/sendense/sendense/shared/api"
)

// RestoreTest is one restore test of a restore point and its evidence. The VM's and the
// repository's names and the backup's time are copied in, so that the evidence stays readable
// after the backup is pruned (backup_id keeps its value, without a foreign key).
type RestoreTest struct {
	bun.BaseModel `bun:"table:restore_tests,alias:rt"`

	ID              string                 `bun:"id,pk"`
	VMContextID     string                 `bun:"vm_context_id,notnull"`
	VMName          string                 `bun:"vm_name,notnull"`
	BackupID        string                 `bun:"backup_id,notnull"`
	BackupCreatedAt time.Time              `bun:"backup_created_at,notnull"`
	RepositoryID    string                 `bun:"repository_id,notnull"`
	RepositoryName  string                 `bun:"repository_name,notnull"`
	PolicyID        string                 `bun:"policy_id,nullzero"`
	Actor           string                 `bun:"actor,notnull"`
	RequestedChecks []string               `bun:"requested_checks,type:text,notnull"` // JSON
	Paths           []string               `bun:"paths,type:text,nullzero"`           // JSON, the paths check's paths
	Boot            *api.RestoreTestBoot   `bun:"boot,type:text,nullzero"`            // JSON, the boot check's settings
	Checks          []api.RestoreTestCheck `bun:"checks,type:text,nullzero"`          // JSON, once finished
	Status          string                 `bun:"status,notnull"`
	BytesRead       int64                  `bun:"bytes_read,notnull"`
	BytesTotal      int64                  `bun:"bytes_total,notnull"`
	Seconds         float64                `bun:"seconds,notnull"`
	RTOSeconds      float64                `bun:"rto_seconds,nullzero"` // of a passed boot check
	Error           string                 `bun:"error,nullzero"`
	CreatedAt       time.Time              `bun:"created_at,notnull"`
	StartedAt       time.Time              `bun:"started_at,nullzero"`
	HeartbeatAt     time.Time              `bun:"heartbeat_at,nullzero"`
	FinishedAt      time.Time              `bun:"finished_at,nullzero"`
}

// RestoreTestFilter selects restore tests for listing.
type RestoreTestFilter struct {
	VMContextID string
	Status      string    // queued, running, passed or failed
	Since       time.Time // created at or after
	Limit       int       // 0: all
	Offset      int
}

// CreateRestoreTest records a restore test (queued, or running when the caller runs it at once).
func (c *Catalog) CreateRestoreTest(ctx context.Context, t *RestoreTest) error {
	now := c.now()
	t.CreatedAt = now
	if t.Status == api.RestoreTestRunning {
		t.StartedAt, t.HeartbeatAt = now, now
	}
	if _, err := c.db.NewInsert().Model(t).Exec(ctx); err != nil {
		return fmt.Errorf("insert restore test %s: %w", t.ID, err)
	}
	return nil
}

// RestoreTestByID returns one restore test, or ErrNotFound.
func (c *Catalog) RestoreTestByID(ctx context.Context, id string) (*RestoreTest, error) {
	t := new(RestoreTest)
	if err := scanOne(ctx, c.db.NewSelect().Model(t).Where("id = ?", id), fmt.Sprintf("restore test %q", id)); err != nil {
		return nil, err
	}
	return t, nil
}

// RestoreTests lists restore tests matching f, newest first, with the total number matching.
func (c *Catalog) RestoreTests(ctx context.Context, f RestoreTestFilter) ([]RestoreTest, int, error) {
	var out []RestoreTest
	q := c.db.NewSelect().Model(&out)
	if f.VMContextID != "" {
		q = q.Where("rt.vm_context_id = ?", f.VMContextID)
	}
	if f.Status != "" {
		q = q.Where("rt.status = ?", f.Status)
	}
	if !f.Since.IsZero() {
		q = q.Where("rt.created_at >= ?", f.Since.UTC())
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit)).Offset(int64(f.Offset))
	}
	n, err := q.Order("rt.created_at DESC", "rt.id DESC").ScanAndCount(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list restore tests: %w", err)
	}
	return out, int(n), nil
}

// ClaimRestoreTest takes the oldest queued restore test for the caller to run: a conditional
// UPDATE, so that of several hubs exactly one runs it. It returns nil when none is queued.
func (c *Catalog) ClaimRestoreTest(ctx context.Context) (*RestoreTest, error) {
	for range 5 { // another hub may win a candidate; try the next
		cand := new(RestoreTest)
		err := c.db.NewSelect().Model(cand).Column("id").Where("status = ?", api.RestoreTestQueued).Order("created_at ASC", "id ASC").Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("find queued restore tests: %w", err)
		}
		now := c.now()
		res, err := c.db.NewUpdate().Model((*RestoreTest)(nil)).
			Set("status = ?", api.RestoreTestRunning).Set("started_at = ?", now).Set("heartbeat_at = ?", now).
			Where("id = ?", cand.ID).Where("status = ?", api.RestoreTestQueued).Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("claim restore test %s: %w", cand.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return c.RestoreTestByID(ctx, cand.ID)
		}
	}
	return nil, nil
}

// RestoreTestProgress records a running test's bytes read and heartbeat.
func (c *Catalog) RestoreTestProgress(ctx context.Context, id string, bytesRead int64) error {
	_, err := c.db.NewUpdate().Model((*RestoreTest)(nil)).
		Set("bytes_read = ?", bytesRead).Set("heartbeat_at = ?", c.now()).
		Where("id = ?", id).Where("status = ?", api.RestoreTestRunning).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record progress of restore test %s: %w", id, err)
	}
	return nil
}

// FinishRestoreTest records the evidence and final status of a running test. A test that is no
// longer running (failed as stale meanwhile) → ErrConflict.
func (c *Catalog) FinishRestoreTest(ctx context.Context, t *RestoreTest) error {
	now := c.now()
	t.FinishedAt, t.HeartbeatAt = now, now
	res, err := c.db.NewUpdate().Model(t).
		Column("checks", "status", "bytes_read", "bytes_total", "seconds", "rto_seconds", "error", "finished_at", "heartbeat_at").
		WherePK().Where("status = ?", api.RestoreTestRunning).Exec(ctx)
	if err != nil {
		return fmt.Errorf("finish restore test %s: %w", t.ID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("restore test %s is no longer running: %w", t.ID, ErrConflict)
	}
	return nil
}

// FailStaleRestoreTests fails running restore tests whose hub has not reported since before
// cutoff (it stopped or crashed while testing) and returns them.
func (c *Catalog) FailStaleRestoreTests(ctx context.Context, cutoff time.Time, reason string) ([]RestoreTest, error) {
	cutoff = cutoff.UTC()
	var cands []RestoreTest
	if err := c.db.NewSelect().Model(&cands).Where("status = ?", api.RestoreTestRunning).Where("heartbeat_at < ?", cutoff).Scan(ctx); err != nil {
		return nil, fmt.Errorf("find stale restore tests: %w", err)
	}
	var failed []RestoreTest
	for _, t := range cands {
		now := c.now()
		res, err := c.db.NewUpdate().Model((*RestoreTest)(nil)).
			Set("status = ?", api.RestoreTestFailed).Set("error = ?", reason).Set("finished_at = ?", now).
			Where("id = ?", t.ID).Where("status = ?", api.RestoreTestRunning).Where("heartbeat_at < ?", cutoff).Exec(ctx)
		if err != nil {
			return failed, fmt.Errorf("fail stale restore test %s: %w", t.ID, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			continue // it reported or finished meanwhile
		}
		t.Status, t.Error, t.FinishedAt = api.RestoreTestFailed, reason, now
		failed = append(failed, t)
	}
	return failed, nil
}

// RestoreTestSummary is, for one VM, when its restore tests last passed and last failed.
type RestoreTestSummary struct {
	VMContextID  string
	VMName       string
	LastPassedAt time.Time
	LastFailedAt time.Time
}

// RestoreTestSummaries returns the summary of every VM that has finished restore tests.
func (c *Catalog) RestoreTestSummaries(ctx context.Context) ([]RestoreTestSummary, error) {
	var rows []struct {
		VMContextID string    `bun:"vm_context_id"`
		VMName      string    `bun:"vm_name"`
		Status      string    `bun:"status"`
		Last        time.Time `bun:"last"`
	}
	err := c.db.NewSelect().Model((*RestoreTest)(nil)).
		ColumnExpr("rt.vm_context_id AS vm_context_id").ColumnExpr("vmc.vm_name AS vm_name").ColumnExpr("rt.status AS status").ColumnExpr("MAX(rt.finished_at) AS last").
		Join("JOIN vm_contexts AS vmc ON vmc.context_id = rt.vm_context_id").
		Where("rt.status IN (?)", bun.In([]string{api.RestoreTestPassed, api.RestoreTestFailed})).
		Group("rt.vm_context_id", "vmc.vm_name", "rt.status").Order("rt.vm_context_id").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("summarise restore tests: %w", err)
	}
	var out []RestoreTestSummary
	for _, r := range rows {
		if len(out) == 0 || out[len(out)-1].VMContextID != r.VMContextID {
			out = append(out, RestoreTestSummary{VMContextID: r.VMContextID, VMName: r.VMName})
		}
		s := &out[len(out)-1]
		if r.Status == api.RestoreTestPassed {
			s.LastPassedAt = r.Last
		} else {
			s.LastFailedAt = r.Last
		}
	}
	return out, nil
}

// RestoreTestPolicyStats summarises the finished restore tests a policy started like
// PolicyStats does its backups: the last one's status and time, and the last that passed.
func (c *Catalog) RestoreTestPolicyStats(ctx context.Context, policyID string) (PolicyRunStats, error) {
	var out PolicyRunStats
	var last RestoreTest
	err := c.db.NewSelect().Model(&last).Column("status", "finished_at").
		Where("policy_id = ?", policyID).Where("status IN (?)", bun.In([]string{api.RestoreTestPassed, api.RestoreTestFailed})).
		Order("finished_at DESC").Limit(1).Scan(ctx)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return out, fmt.Errorf("last restore test of policy %s: %w", policyID, err)
	}
	out.LastStatus, out.LastFinished = last.Status, last.FinishedAt
	var ok RestoreTest
	err = c.db.NewSelect().Model(&ok).Column("finished_at").
		Where("policy_id = ?", policyID).Where("status = ?", api.RestoreTestPassed).
		Order("finished_at DESC").Limit(1).Scan(ctx)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return out, fmt.Errorf("last passed restore test of policy %s: %w", policyID, err)
	}
	out.LastSuccessAt = ok.FinishedAt
	return out, nil
}
