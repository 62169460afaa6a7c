package policy_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

var quiet = slog.New(slog.DiscardHandler)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// seed records an agent with VMs db-1, db-2, web-1 and a template, and the default repository.
func seed(t *testing.T, c *catalog.Catalog) {
	t.Helper()
	ctx := t.Context()
	if err := c.CreateJoinToken(ctx, &catalog.JoinToken{ID: "jt-1", SecretHash: "h", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := c.RedeemJoinToken(ctx, "jt-1", "h", &catalog.Agent{ID: "agent-1", Name: "a1", Status: api.AgentActive, CertSerial: "1", CertFingerprint: "f", CertNotAfter: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	inv := &api.Inventory{Source: api.Source{Name: "vc1", InstanceUUID: "0ba3d9a4-0000-4000-8000-0000000000aa"}}
	for i, n := range []string{"db-1", "db-2", "web-1", "golden"} {
		inv.VMs = append(inv.VMs, api.VM{InstanceUUID: fmt.Sprintf("50120000-0000-4000-8000-%012d", i), Name: n, Template: n == "golden",
			Disks: []api.Disk{{Key: 2000, DiskID: "disk-2000", CapacityBytes: 1 << 30, Backupable: true}}})
	}
	if _, err := inventory.New(c, quiet, nil).Apply(ctx, "agent-1", "192.0.2.1", inv); err != nil {
		t.Fatal(err)
	}
	if _, err := repository.NewRegistry(c, nil, nil).Create(ctx, repository.DefaultName, t.TempDir(), 0); err != nil {
		t.Fatal(err)
	}
}

func services(c *catalog.Catalog, clk *clock) *policy.Service {
	c.SetClock(clk.Now)
	b := jobs.New(c, repository.NewRegistry(c, nil, nil), quiet, nil, jobs.Options{Now: clk.Now})
	return policy.New(c, b, nil, quiet, nil, clk.Now)
}

func jobCount(t *testing.T, c *catalog.Catalog) map[string]int {
	t.Helper()
	rows, _, err := c.Backups(t.Context(), catalog.BackupFilter{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range rows {
		out[r.VMName]++
	}
	return out
}

// finishAll marks every queued job finished (the jobs' agent is not part of these tests).
func finishAll(t *testing.T, c *catalog.Catalog) {
	t.Helper()
	rows, _, _ := c.Backups(t.Context(), catalog.BackupFilter{Status: api.JobQueued})
	for _, r := range rows {
		if _, err := c.RequestCancel(t.Context(), r.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSchedulerRunsDueRunsOnce(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		seed(t, c)
		clk := &clock{t: time.Date(2026, 11, 2, 1, 0, 0, 0, time.UTC)}
		ps := services(c, clk)
		p, err := ps.Create(t.Context(), api.Policy{Name: "nightly", Enabled: true, VMGlob: "db-*", Schedule: "0 3 * * *", Retention: api.Retention{KeepDaily: 7}, CBTSample: ptr(0.25)})
		if err != nil {
			t.Fatal(err)
		}
		if !p.NextRunAt.Equal(time.Date(2026, 11, 2, 3, 0, 0, 0, time.UTC)) {
			t.Fatalf("next run %v", p.NextRunAt)
		}
		// Before 03:00 nothing is due.
		if q, err := ps.Tick(t.Context()); err != nil || len(q) != 0 {
			t.Fatalf("tick before the slot: %v %v", q, err)
		}
		clk.Set(time.Date(2026, 11, 2, 3, 0, 5, 0, time.UTC))
		q, err := ps.Tick(t.Context())
		if err != nil || len(q) != 2 {
			t.Fatalf("tick at the slot queued %v (%v); want db-1 and db-2", q, err)
		}
		// The policy's drift-check sample goes with its jobs.
		for _, id := range q {
			if j, err := c.JobByID(t.Context(), id); err != nil || j.CBTSample != 0.25 {
				t.Fatalf("job %s of the policy: cbt_sample %v (%v), want 0.25", id, j.CBTSample, err)
			}
		}
		// The same slot again: nothing (and a VM never gets a second job).
		if q, _ := ps.Tick(t.Context()); len(q) != 0 {
			t.Fatalf("second tick in the slot queued %v", q)
		}
		finishAll(t, c)
		// The hub was down for three days: one run, not three.
		clk.Set(time.Date(2026, 11, 5, 9, 0, 0, 0, time.UTC))
		q, _ = ps.Tick(t.Context())
		if len(q) != 2 {
			t.Fatalf("after 3 days down: queued %v, want one run (2 jobs)", q)
		}
		if n := jobCount(t, c); n["db-1"] != 2 || n["db-2"] != 2 || n["web-1"] != 0 || n["golden"] != 0 {
			t.Fatalf("jobs per VM %v", n)
		}
		got, _ := ps.Get(t.Context(), "nightly")
		if !got.NextRunAt.Equal(time.Date(2026, 11, 6, 3, 0, 0, 0, time.UTC)) {
			t.Fatalf("next run after catching up: %v", got.NextRunAt)
		}
		// web-1 is unprotected; the template is not counted.
		un, _ := ps.Unprotected(t.Context())
		if len(un) != 1 || un[0].VMName != "web-1" {
			t.Fatalf("unprotected %v", un)
		}
	})
}

// Two hub instances on one MariaDB catalog: each due run creates its jobs exactly once.
func TestTwoHubsShareOneCatalog(t *testing.T) {
	dsn := catalogtest.NewMySQLDatabase(t)
	open := func() *catalog.Catalog {
		c, err := catalog.Open(t.Context(), catalog.Options{MySQLDSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := open(), open()
	if _, err := a.MigrateUp(t.Context(), quiet); err != nil {
		t.Fatal(err)
	}
	seed(t, a)
	clk := &clock{t: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)}
	pa, pb := services(a, clk), services(b, clk)
	if _, err := pa.Create(t.Context(), api.Policy{Name: "hourly", Enabled: true, Schedule: "@hourly"}); err != nil {
		t.Fatal(err)
	}
	for hour := 1; hour <= 5; hour++ {
		clk.Set(time.Date(2026, 11, 2, hour, 0, 1, 0, time.UTC))
		var wg sync.WaitGroup
		results := make([][]string, 8)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				svc := pa
				if i%2 == 1 {
					svc = pb
				}
				q, err := svc.Tick(context.Background())
				if err != nil {
					t.Error(err)
				}
				results[i] = q
			}()
		}
		wg.Wait()
		total := 0
		for _, r := range results {
			total += len(r)
		}
		if total != 3 { // db-1, db-2, web-1
			t.Fatalf("hour %d: %d jobs queued by 8 concurrent ticks on two hubs, want 3", hour, total)
		}
		finishAll(t, a)
	}
	if n := jobCount(t, a); n["db-1"] != 5 || n["web-1"] != 5 {
		t.Fatalf("jobs per VM over 5 hours: %v", n)
	}
}

func TestPolicyValidation(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		seed(t, c)
		ps := services(c, &clock{t: time.Now()})
		for _, tc := range []struct {
			field string
			p     api.Policy
		}{
			{"name", api.Policy{Schedule: "@daily"}},
			{"schedule", api.Policy{Name: "x", Schedule: "0 25 * * *"}},
			{"timezone", api.Policy{Name: "x", Schedule: "@daily", Timezone: "Mars/Olympus"}},
			{"retention", api.Policy{Name: "x", Schedule: "@daily", Retention: api.Retention{KeepDaily: -1}}},
			{"vm_glob", api.Policy{Name: "x", Schedule: "@daily", VMGlob: "[db"}},
			{"repository", api.Policy{Name: "x", Schedule: "@daily", Repository: "nope"}},
			{"agent", api.Policy{Name: "x", Schedule: "@daily", Agent: "agent-nope"}},
			{"cbt_sample", api.Policy{Name: "x", Schedule: "@daily", CBTSample: ptr(1.5)}},
			{"cbt_sample", api.Policy{Name: "x", Schedule: "@daily", CBTSample: ptr(-0.1)}},
			{"name", api.Policy{Name: "pol-6832e26e32f0", Schedule: "@daily"}},
			{"name", api.Policy{Name: "a?b", Schedule: "@daily"}},
			{"name", api.Policy{Name: "a#b", Schedule: "@daily"}},
			{"name", api.Policy{Name: "a%2fb", Schedule: "@daily"}},
			{"name", api.Policy{Name: "a\x1bb", Schedule: "@daily"}},
			{"full_every_days", api.Policy{Name: "x", Schedule: "@daily", FullEveryDays: -5}},
			{"full_every_incrementals", api.Policy{Name: "x", Schedule: "@daily", FullEveryIncrementals: -1}},
		} {
			_, err := ps.Create(t.Context(), tc.p)
			fe, ok := err.(*api.FieldError)
			if !ok || fe.Field != tc.field {
				t.Errorf("%s: err %v", tc.field, err)
			}
		}
		ok, err := ps.Create(t.Context(), api.Policy{Name: "ok", Schedule: "@daily"})
		if err != nil {
			t.Fatal(err)
		}
		if ok.CBTSample == nil || *ok.CBTSample != api.DefaultCBTSample {
			t.Fatalf("a policy without cbt_sample shows %v, want the default %v", ok.CBTSample, api.DefaultCBTSample)
		}
		if _, err := ps.Create(t.Context(), api.Policy{Name: "ok", Schedule: "@daily"}); err == nil {
			t.Fatal("a second policy with the same name was accepted")
		}
	})
}

func ptr[T any](v T) *T { return &v }

// A backup dated a year ahead (by a hub clock that was wrong, since corrected) does not keep its
// VM off the overdue list: when it was taken is unknown. Before, its date kept the VM protected
// in the metrics for a year, whatever happened to the VM's backups since.
func TestOverdueIgnoresBackupsDatedAhead(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	if _, err := r.ps.Create(ctx, api.Policy{Name: "daily", Enabled: true, VMs: []string{"db-1"}, Schedule: "@daily", Retention: api.Retention{KeepLast: 30}}); err != nil {
		t.Fatal(err)
	}
	v, err := r.c.ResolveVM(ctx, "db-1")
	if err != nil {
		t.Fatal(err)
	}
	overdue := func(at time.Time) bool {
		t.Helper()
		r.clk.Set(at)
		ids, err := r.ps.OverdueVMs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(ids, v.ContextID)
	}
	day := func(d int) time.Time { return time.Date(2026, 1, d, 12, 0, 0, 0, time.UTC) }
	r.backup(t, "db-1", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	if !overdue(day(10)) {
		t.Fatal("db-1, whose only backup is dated a year ahead, is not overdue")
	}
	r.backup(t, "db-1", day(10))
	if overdue(day(10).Add(time.Hour)) {
		t.Fatal("db-1 is overdue an hour after a backup")
	}
	if !overdue(day(13)) {
		t.Fatal("db-1 is not overdue three days after its last backup of a daily policy")
	}
	// A backup dated a little ahead (a clock stepped back by NTP) still counts.
	r.backup(t, "db-1", day(13).Add(30*time.Minute))
	if overdue(day(13)) {
		t.Fatal("a backup dated 30 minutes ahead does not count")
	}

	// A policy created by the same wrong clock does not give its VMs a year's grace either.
	r.clk.Set(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	if _, err := r.ps.Create(ctx, api.Policy{Name: "ahead", Enabled: true, VMs: []string{"db-2"}, Schedule: "@daily", Retention: api.Retention{KeepLast: 30}}); err != nil {
		t.Fatal(err)
	}
	v2, err := r.c.ResolveVM(ctx, "db-2")
	if err != nil {
		t.Fatal(err)
	}
	r.clk.Set(day(14))
	ids, err := r.ps.OverdueVMs(ctx)
	if err != nil || !slices.Contains(ids, v2.ContextID) {
		t.Fatalf("overdue %v (%v): db-2, never backed up under a policy dated a year ahead, is not", ids, err)
	}
}
