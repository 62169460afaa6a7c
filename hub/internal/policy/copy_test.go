package policy_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/copies"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// countingCopier counts the copy runs that reached it (the copying itself is tested against
// real repositories in the agent's end-to-end tests).
type countingCopier struct{ calls atomic.Int32 }

func (c *countingCopier) CopyBackups(ctx context.Context, fromID, toID string, ids []string) (copies.Report, error) {
	c.calls.Add(1)
	return copies.Report{}, nil
}

type noDeletes struct{}

func (noDeletes) DeleteFrom(ctx context.Context, id, repositoryID string) error { return nil }

// A copy policy is due once per slot however many hubs tick at once: 8 concurrent ticks on two
// hubs sharing one catalog run it once per hour, each run recorded with its outcome and an event.
func TestCopyPolicyRunsOnceAcrossHubs(t *testing.T) {
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
	if _, err := repository.NewRegistry(a, nil, nil).Create(t.Context(), "offsite", t.TempDir(), 0); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)}
	cp := &countingCopier{}
	pa, pb := services(a, clk), services(b, clk)
	pa.SetCopies(cp, noDeletes{})
	pb.SetCopies(cp, noDeletes{})
	p, err := pa.Create(t.Context(), api.Policy{Name: "offsite", Kind: api.PolicyCopy, Enabled: true, Schedule: "@hourly", To: "offsite", Retention: api.Retention{KeepLast: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if p.From != "default" || p.To != "offsite" || p.Repository != "default" || p.CBTSample != nil {
		t.Fatalf("copy policy shows %+v", p)
	}
	for hour := 1; hour <= 3; hour++ {
		clk.Set(time.Date(2026, 11, 2, hour, 0, 1, 0, time.UTC))
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				svc := pa
				if i%2 == 1 {
					svc = pb
				}
				if _, err := svc.Tick(t.Context()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		pa.WaitCopies()
		pb.WaitCopies()
		if n := cp.calls.Load(); n != int32(hour) {
			t.Fatalf("hour %d: %d copy runs, want %d", hour, n, hour)
		}
	}
	runs, err := a.CopyRuns(t.Context(), p.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 {
		t.Fatalf("%d copy runs recorded, want 3", len(runs))
	}
	for _, r := range runs {
		if r.Status != policy.CopySucceeded || r.FinishedAt.IsZero() || r.ToRepositoryID == r.FromRepositoryID {
			t.Fatalf("copy run %+v", r)
		}
	}
	evs, _, err := a.Events(t.Context(), catalog.EventFilter{Type: api.EventCopyRun})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].Details["policy"] != "offsite" || evs[0].Details["to"] != "offsite" || evs[0].Outcome != policy.CopySucceeded {
		t.Fatalf("copy run events: %+v", evs)
	}
	got, err := pa.Get(t.Context(), "offsite")
	if err != nil {
		t.Fatal(err)
	}
	if got.LastStatus != policy.CopySucceeded || got.LastSuccessAt.IsZero() {
		t.Fatalf("copy policy after its runs: %+v", got)
	}
}

func TestCopyPolicyValidation(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		seed(t, c)
		if _, err := repository.NewRegistry(c, nil, nil).Create(t.Context(), "offsite", t.TempDir(), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := repository.NewRegistry(c, nil, nil).Create(t.Context(), "big", t.TempDir(), 8<<20); err != nil {
			t.Fatal(err)
		}
		ps := services(c, &clock{t: time.Now()})
		copyPolicy := func(mod func(*api.Policy)) api.Policy {
			p := api.Policy{Name: "x", Kind: api.PolicyCopy, Schedule: "@daily", From: "default", To: "offsite"}
			mod(&p)
			return p
		}
		for _, tc := range []struct {
			field string
			p     api.Policy
		}{
			{"to", copyPolicy(func(p *api.Policy) { p.To = "" })},
			{"to", copyPolicy(func(p *api.Policy) { p.To = "nope" })},
			{"to", copyPolicy(func(p *api.Policy) { p.To = "default" })},
			{"to", copyPolicy(func(p *api.Policy) { p.To = "big" })},
			{"repository", copyPolicy(func(p *api.Policy) { p.From = "nope" })},
			{"from", copyPolicy(func(p *api.Policy) { p.Repository = "offsite" })},
			{"cbt_sample", copyPolicy(func(p *api.Policy) { p.CBTSample = ptr(0.1) })},
			{"checks", copyPolicy(func(p *api.Policy) { p.Checks = []string{"read"} })},
			{"full_every_incrementals", copyPolicy(func(p *api.Policy) { p.FullEveryDays = 7 })},
			{"retention", copyPolicy(func(p *api.Policy) { p.Retention.KeepLast = -1 })},
			{"to", api.Policy{Name: "x", Schedule: "@daily", To: "offsite"}},
		} {
			_, err := ps.Create(t.Context(), tc.p)
			fe, ok := err.(*api.FieldError)
			if !ok || fe.Field != tc.field {
				t.Errorf("%s: err %v", tc.field, err)
			}
		}
		if _, err := ps.Create(t.Context(), copyPolicy(func(p *api.Policy) { p.Retention.KeepDaily = 7 })); err != nil {
			t.Fatal(err)
		}
		// A copy policy protects no VM: every VM stays unprotected without a backup policy.
		un, err := ps.Unprotected(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(un) != 3 {
			t.Fatalf("%d unprotected VMs with only a copy policy, want 3", len(un))
		}
	})
}
