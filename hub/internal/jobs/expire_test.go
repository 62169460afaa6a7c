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

// A running restore whose agent stopped reporting is failed with the VM it made still named;
// a queued restore of a revoked agent is failed with the reason; a live one is left alone.
func TestStaleRestoresFail(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		quiet := slog.New(slog.DiscardHandler)
		clk := &testClock{t: time.Now().UTC().Truncate(time.Second)}
		c.SetClock(clk.Now)
		ctx := t.Context()
		inv := inventory.New(c, quiet, nil)
		enroll(t, c, "agent-1")
		enroll(t, c, "agent-2")
		if _, err := inv.Apply(ctx, "agent-1", "127.0.0.1", &api.Inventory{
			Source: api.Source{Name: "vc1", InstanceUUID: "0ba3d9a4-0000-4000-8000-000000000001"},
			VMs: []api.VM{{InstanceUUID: "50120000-0000-4000-8000-000000000001", Name: "vm1",
				Disks: []api.Disk{{Key: 2000, DiskID: "disk-2000", CapacityBytes: 1 << 30, Backupable: true}}}},
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := repository.NewRegistry(c, nil, nil).Create(ctx, repository.DefaultName, t.TempDir(), 0); err != nil {
			t.Fatal(err)
		}
		s := New(c, repository.NewRegistry(c, nil, nil), quiet, nil, Options{Now: clk.Now, JobTimeout: 10 * time.Minute})
		b, err := s.Start(ctx, api.StartBackupRequest{VM: "vm1"})
		if err != nil {
			t.Fatal(err)
		}
		mk := func(id, agent, name string) {
			if err := c.CreateRestoreJob(ctx, &catalog.RestoreJob{ID: id, BackupID: b.ID, AgentID: agent, SourceName: "vc1", TargetName: name, Spec: "{}"}); err != nil {
				t.Fatal(err)
			}
		}
		mk("rs-run", "agent-1", "a")
		mk("rs-revoked", "agent-2", "b")
		if j, _, err := c.ClaimRestoreJob(ctx, "agent-1", nil); err != nil || j.ID != "rs-run" {
			t.Fatalf("claim: %v %v", j, err)
		}
		if _, err := c.RestoreProgress(ctx, "rs-run", "agent-1", api.PhaseWriting, "vm-7", 1, 2); err != nil {
			t.Fatal(err)
		}
		mk("rs-queued", "agent-1", "c")
		if err := c.RevokeAgent(ctx, "agent-2"); err != nil {
			t.Fatal(err)
		}
		s.reapStale(ctx)
		get := func(id string) api.Restore {
			r, err := s.GetRestore(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		if r := get("rs-revoked"); r.Status != api.JobFailed || !strings.Contains(r.Error, "revoked") {
			t.Fatalf("restore of a revoked agent: %+v", r)
		}
		if get("rs-run").Status != api.JobRunning {
			t.Fatal("a restore that reported recently was failed")
		}
		clk.Add(11 * time.Minute)
		if err := c.TouchAgent(ctx, "agent-1", "h", "v"); err != nil {
			t.Fatal(err)
		}
		s.reapStale(ctx)
		if r := get("rs-run"); r.Status != api.JobFailed || r.VMRef != "vm-7" || !strings.Contains(r.Error, "stopped reporting") {
			t.Fatalf("stale restore: %+v", r)
		}
		if r := get("rs-queued"); r.Status != api.JobQueued {
			t.Fatalf("queued restore of a live agent: %+v", r)
		}
	})
}
