package jobs

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func enroll(t *testing.T, c *catalog.Catalog, id string) {
	t.Helper()
	if err := c.CreateJoinToken(t.Context(), &catalog.JoinToken{ID: "jt-" + id, SecretHash: "h-" + id, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := c.RedeemJoinToken(t.Context(), "jt-"+id, "h-"+id, &catalog.Agent{ID: id, Name: id, Status: api.AgentActive, CertSerial: id, CertFingerprint: id, CertNotAfter: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

// A queued job whose agent was revoked, or has been silent as long as the job has waited, fails
// with the reason; a queued job of a live agent busy elsewhere waits.
func TestUnclaimedJobsFailWithTheReason(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		quiet := slog.New(slog.DiscardHandler)
		clk := &testClock{t: time.Now().UTC().Truncate(time.Second)}
		c.SetClock(clk.Now)
		ctx := t.Context()
		inv := inventory.New(c, quiet, nil)
		for i, a := range []string{"agent-live", "agent-silent", "agent-revoked"} {
			enroll(t, c, a)
			if _, err := inv.Apply(ctx, a, "127.0.0.1", &api.Inventory{
				Source: api.Source{Name: "vc-" + a, InstanceUUID: fmt.Sprintf("0ba3d9a4-0000-4000-8000-%012d", i)},
				VMs: []api.VM{{InstanceUUID: fmt.Sprintf("50120000-0000-4000-8000-%012d", i), Name: "vm-" + a,
					Disks: []api.Disk{{Key: 2000, DiskID: "disk-2000", CapacityBytes: 1 << 30, Backupable: true}}}},
			}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := repository.NewRegistry(c, nil, nil).Create(ctx, repository.DefaultName, t.TempDir(), 0); err != nil {
			t.Fatal(err)
		}
		s := New(c, repository.NewRegistry(c, nil, nil), quiet, nil, Options{Now: clk.Now, JobTimeout: 10 * time.Minute})
		var finished []string
		s.OnFinished = func(j catalog.BackupJob) { finished = append(finished, j.ID) }
		ids := map[string]string{}
		for _, a := range []string{"agent-live", "agent-silent", "agent-revoked"} {
			b, err := s.Start(ctx, api.StartBackupRequest{VM: "vm-" + a})
			if err != nil {
				t.Fatal(err)
			}
			ids[a] = b.ID
		}
		if err := c.RevokeAgent(ctx, "agent-revoked"); err != nil {
			t.Fatal(err)
		}
		s.reapStale(ctx)
		status := func(a string) api.Backup {
			b, err := s.Get(ctx, ids[a])
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		if b := status("agent-revoked"); b.Status != api.JobFailed || !strings.Contains(b.Error, "revoked") {
			t.Fatalf("job of a revoked agent: %s %q, want failed naming the revocation", b.Status, b.Error)
		}
		if status("agent-silent").Status != api.JobQueued || status("agent-live").Status != api.JobQueued {
			t.Fatal("a job that has waited less than the timeout was failed")
		}
		// Twenty minutes on, the live agent still heartbeats (busy with other jobs); the other
		// never showed up again.
		clk.Add(20 * time.Minute)
		if err := c.TouchAgent(ctx, "agent-live", "h", "v"); err != nil {
			t.Fatal(err)
		}
		s.reapStale(ctx)
		if b := status("agent-silent"); b.Status != api.JobFailed || !strings.Contains(b.Error, "not been seen") {
			t.Fatalf("job of a silent agent: %s %q, want failed naming the silence", b.Status, b.Error)
		}
		if b := status("agent-live"); b.Status != api.JobQueued {
			t.Fatalf("job of a live, busy agent: %s %q, want still queued", b.Status, b.Error)
		}
		if len(finished) != 2 {
			t.Fatalf("OnFinished saw %v, want the two failed jobs (the policy's run must learn of them)", finished)
		}
	})
}
