package catalog_test

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"
)

// Of many claims of one due run, from two hub instances on one catalog at once, exactly one
// wins, round after round, with run times as precise as the clock gives them; a claim that saw
// an older run loses, and a disabled policy is never claimed. The scheduler's own tests cannot
// show this: one active job per VM hides a second claim of a run there.
func TestClaimPolicyRunOnce(t *testing.T) {
	for _, dialect := range catalogtest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			ctx := t.Context()
			opts := catalogtest.Options(t, dialect)
			var hubs [2]*catalog.Catalog
			for i := range hubs {
				c, err := catalog.Open(ctx, opts)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Close() })
				hubs[i] = c
			}
			a := hubs[0]
			if _, err := a.MigrateUp(ctx, slog.New(slog.DiscardHandler)); err != nil {
				t.Fatal(err)
			}
			if err := a.CreateRepository(ctx, &catalog.Repository{ID: "repo-1", Name: "default", Kind: api.RepositoryLocal, Path: "/srv/r", ChunkSize: 4 << 20}); err != nil {
				t.Fatal(err)
			}
			p := &catalog.Policy{ID: "pol-1", Name: "hourly", Kind: api.PolicyBackup, Enabled: true, RepositoryID: "repo-1", Schedule: "@hourly", Timezone: "UTC"}
			if err := a.CreatePolicy(ctx, p); err != nil {
				t.Fatal(err)
			}
			base := time.Date(2026, 12, 4, 1, 0, 0, 123456789, time.UTC)
			var seen time.Time // never run
			for round := range 5 {
				runAt := base.Add(time.Duration(round) * time.Hour)
				var won atomic.Int32
				var wg sync.WaitGroup
				for i := range 16 {
					wg.Go(func() {
						ok, err := hubs[i%2].ClaimPolicyRun(ctx, p.ID, seen, runAt.Add(time.Duration(i)*time.Microsecond), runAt.Add(time.Hour))
						if err != nil {
							t.Error(err)
						}
						if ok {
							won.Add(1)
						}
					})
				}
				wg.Wait()
				if n := won.Load(); n != 1 {
					t.Fatalf("round %d: %d of 16 claims won, want exactly one", round, n)
				}
				if ok, err := a.ClaimPolicyRun(ctx, p.ID, seen, runAt, runAt.Add(time.Hour)); ok || err != nil {
					t.Fatalf("round %d: a claim that saw the run before won again (%v)", round, err)
				}
				got, err := hubs[round%2].PolicyByName(ctx, p.Name)
				if err != nil {
					t.Fatal(err)
				}
				if got.LastRunAt.Before(runAt.Truncate(time.Microsecond)) || got.LastRunAt.After(runAt.Add(16*time.Microsecond)) {
					t.Fatalf("round %d: last run recorded %v, want the winner's, from %v", round, got.LastRunAt, runAt)
				}
				seen = got.LastRunAt
			}
			p.Enabled = false
			if err := a.UpdatePolicy(ctx, p); err != nil {
				t.Fatal(err)
			}
			if ok, err := a.ClaimPolicyRun(ctx, p.ID, seen, base.Add(24*time.Hour), base.Add(25*time.Hour)); ok || err != nil {
				t.Fatalf("claim of a disabled policy: %v %v", ok, err)
			}
		})
	}
}
