package policy_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/copies"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// rig is a seeded SQLite catalog (seed) with its policy service, and a second connection to the
// same file to set job states that only an agent reaches.
type rig struct {
	c   *catalog.Catalog
	raw *sql.DB
	clk *clock
	ps  *policy.Service
}

func newRig(t *testing.T) *rig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	c, err := catalog.Open(t.Context(), catalog.Options{SQLitePath: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.MigrateUp(t.Context(), quiet); err != nil {
		t.Fatal(err)
	}
	seed(t, c)
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return &rig{c: c, raw: raw, clk: clk, ps: services(c, clk)}
}

// backup records a successful backup of vm in the default repository, taken at at.
func (r *rig) backup(t *testing.T, vm string, at time.Time) string {
	t.Helper()
	v, err := r.c.ResolveVM(t.Context(), vm)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := r.c.RepositoryByName(t.Context(), "default")
	if err != nil {
		t.Fatal(err)
	}
	r.clk.Set(at)
	j := &catalog.BackupJob{ID: catalog.NewID("bk-", at), VMContextID: v.ContextID, AgentID: "agent-1", RepositoryID: repo.ID,
		Type: api.BackupFull, RequestedType: api.BackupFull}
	if err := r.c.CreateJob(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	if _, err := r.raw.Exec("UPDATE backup_jobs SET status = ? WHERE id = ?", api.JobSucceeded, j.ID); err != nil {
		t.Fatal(err)
	}
	return j.ID
}

func (r *rig) left(t *testing.T) map[string]bool {
	t.Helper()
	rows, _, err := r.c.Backups(t.Context(), catalog.BackupFilter{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, row := range rows {
		out[row.ID] = true
	}
	return out
}

// Two policies cover db-1 in one repository, keeping 7 daily and 12 monthly restore points:
// pruning by one of them (`prune --policy daily`) still keeps what the other keeps, and so does
// a disabled policy's retention; a policy that takes no backups cannot be pruned by.
func TestPruneByOnePolicyKeepsWhatAnotherKeeps(t *testing.T) {
	r := newRig(t)
	start := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	var ids []string
	for d := range 70 {
		ids = append(ids, r.backup(t, "db-1", start.AddDate(0, 0, d)))
	}
	ctx := t.Context()
	if _, err := r.ps.Create(ctx, api.Policy{Name: "daily", Enabled: true, VMs: []string{"db-1"}, Schedule: "@daily",
		Retention: api.Retention{KeepDaily: 7}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ps.Create(ctx, api.Policy{Name: "monthly", Enabled: true, VMGlob: "db-*", Schedule: "@monthly",
		Retention: api.Retention{KeepMonthly: 12}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ps.Create(ctx, api.Policy{Name: "paused", Enabled: false, VMs: []string{"db-1"}, Schedule: "@daily",
		Retention: api.Retention{KeepLast: 20}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ps.Create(ctx, api.Policy{Name: "drill", Kind: api.PolicyRestoreTest, Enabled: true, VMs: []string{"db-1"},
		Schedule: "@weekly"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"paused", "drill"} {
		var fe *api.FieldError
		if _, err := r.ps.Prune(ctx, policy.PruneOptions{Policy: name}); !errors.As(err, &fe) || fe.Field != "policy" {
			t.Fatalf("prune by policy %s: %v, want a policy field error", name, err)
		}
	}
	rep, err := r.ps.Prune(ctx, policy.PruneOptions{Policy: "daily"})
	if err != nil || len(rep.Errors) != 0 {
		t.Fatalf("prune --policy daily: %v, %v", rep.Errors, err)
	}
	left := r.left(t)
	// Kept: the last 20 (paused: days 50–69, which hold the last 7 days), and the month ends
	// January 31 and February 28 (monthly; March's is day 69).
	want := map[string]bool{ids[30]: true, ids[58]: true}
	for _, id := range ids[50:] {
		want[id] = true
	}
	if rep.Removed != len(ids)-len(want) || len(left) != len(want) {
		t.Fatalf("removed %d, left %d; want %d removed and %d left", rep.Removed, len(left), len(ids)-len(want), len(want))
	}
	for id := range want {
		if !left[id] {
			t.Fatalf("backup %s, kept by a policy, was removed", id)
		}
	}
}

// A VM being restored in place gets no scheduled backup, and the VMs after it still get theirs.
func TestScheduledRunGoesOnPastABusyVM(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	bk := r.backup(t, "db-1", time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC))
	v, err := r.c.ResolveVM(ctx, "db-1")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 1, 4, 0, 0, 0, time.UTC)
	if _, err := r.raw.Exec(`INSERT INTO restore_jobs (id, backup_id, agent_id, source_name, target_name, spec, status, created_at, updated_at, vm_context_id)
		VALUES ('rj-1', ?, 'agent-1', 'db-1', 'db-1', '{}', 'queued', ?, ?, ?)`, bk, at, at, v.ContextID); err != nil {
		t.Fatal(err)
	}
	r.clk.Set(time.Date(2026, 11, 2, 1, 0, 0, 0, time.UTC))
	if _, err := r.ps.Create(ctx, api.Policy{Name: "nightly", Enabled: true, VMGlob: "db-*", Schedule: "0 3 * * *",
		Retention: api.Retention{KeepDaily: 7}}); err != nil {
		t.Fatal(err)
	}
	r.clk.Set(time.Date(2026, 11, 2, 3, 0, 5, 0, time.UTC))
	queued, err := r.ps.Tick(ctx)
	if err != nil || len(queued) != 1 {
		t.Fatalf("tick: queued %v, %v", queued, err)
	}
	if n := jobCount(t, r.c); n["db-1"] != 1 || n["db-2"] != 1 {
		t.Fatalf("jobs per VM after the run: %v (db-1: its earlier backup only; db-2: the scheduled one)", n)
	}
}

// recordingCopier records the copies it is asked for, without copying any bytes.
type recordingCopier struct{ c *catalog.Catalog }

func (r recordingCopier) CopyBackups(ctx context.Context, _, toID string, ids []string) (copies.Report, error) {
	for _, id := range ids {
		if err := r.c.RecordCopy(ctx, &catalog.BackupCopy{BackupID: id, RepositoryID: toID}); err != nil {
			return copies.Report{}, err
		}
	}
	return copies.Report{Backups: len(ids)}, nil
}

// Two copy policies into one repository keep 12 monthly and 3 daily copies: a run of either
// keeps the copies the other keeps — a copy, and a backup moved into that repository when its
// home pruned it.
func TestCopyPoliciesIntoOneRepositoryKeepWhatEachKeeps(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	if _, err := repository.NewRegistry(r.c, nil, nil).Create(ctx, "offsite", t.TempDir(), 0); err != nil {
		t.Fatal(err)
	}
	js := jobs.New(r.c, repository.NewRegistry(r.c, nil, nil), quiet, nil, jobs.Options{Now: r.clk.Now})
	r.ps = policy.New(r.c, js, nil, quiet, nil, r.clk.Now)
	r.ps.SetCopies(recordingCopier{r.c}, js)
	start := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	var ids []string
	for d := range 40 {
		ids = append(ids, r.backup(t, "db-1", start.AddDate(0, 0, d)))
	}
	for _, p := range []api.Policy{
		{Name: "off-monthly", Kind: api.PolicyCopy, Enabled: true, Schedule: "@daily", To: "offsite", Retention: api.Retention{KeepMonthly: 12}},
		{Name: "off-daily", Kind: api.PolicyCopy, Enabled: true, Schedule: "@daily", To: "offsite", Retention: api.Retention{KeepDaily: 3}},
		{Name: "local", Enabled: true, VMs: []string{"db-1"}, Schedule: "@daily", Retention: api.Retention{KeepDaily: 3}},
	} {
		if _, err := r.ps.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	copiesOf := func(id string) int {
		t.Helper()
		cps, err := r.c.BackupCopies(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return len(cps)
	}
	jan31 := ids[30]
	for _, name := range []string{"off-monthly", "off-daily"} {
		if run, err := r.ps.RunCopy(ctx, name); err != nil || run.Status != policy.CopySucceeded || run.CopiesPruned != 0 {
			t.Fatalf("copy run of %s: %+v, %v", name, run, err)
		}
	}
	if copiesOf(jan31) != 1 || copiesOf(ids[39]) != 1 {
		t.Fatalf("after both runs: %d copies of January 31, %d of the newest", copiesOf(jan31), copiesOf(ids[39]))
	}
	// The backup policy prunes at home: January 31 moves to its copy in offsite.
	if _, err := r.ps.Prune(ctx, policy.PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, err := r.c.BackupByID(ctx, jan31); err != nil || b.RepositoryName != "offsite" {
		t.Fatalf("January 31 after the prune at home: %+v, %v", b, err)
	}
	for _, name := range []string{"off-daily", "off-monthly"} {
		if run, err := r.ps.RunCopy(ctx, name); err != nil || run.Status != policy.CopySucceeded || run.CopiesPruned != 0 {
			t.Fatalf("second copy run of %s: %+v, %v", name, run, err)
		}
	}
	if b, err := r.c.BackupByID(ctx, jan31); err != nil || b.RepositoryName != "offsite" {
		t.Fatalf("January 31, kept by off-monthly, after off-daily ran: %+v, %v", b, err)
	}
}
