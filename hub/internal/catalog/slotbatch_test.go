package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"
)

// Slot records that arrive while another is being written share the next transaction, and
// each call still gets its own session's outcome: in that one transaction the slots of an open
// session are recorded and those of a session that began its commit are refused. A caller that
// stops waiting gets its context's error at once, and its slots are recorded all the same.
func TestRecordSlotsShareTransactions(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		job := catalog.SeedJobForTest(t, c, catalog.SeedVMForTest(t, c))
		for _, s := range []string{"us-open", "us-done"} {
			if _, err := c.OpenSession(ctx, &catalog.UploadSession{ID: s, JobID: job, DiskID: "disk-" + s, AgentID: "agent-seed", RepositoryID: "repo-seed",
				Type: api.BackupFull, CapacityBytes: 256 << 20, ChunkSize: 4 << 20, SlotCount: 64}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.BeginCommit(ctx, "us-done"); err != nil {
			t.Fatal(err)
		}
		digest := func(slot int64) string { return fmt.Sprintf("%064x", slot+1) }
		record := func(ctx context.Context, session string, slot int64) error {
			return c.RecordSlots(ctx, session, []catalog.UploadSlot{{Slot: slot, Digest: digest(slot)}})
		}
		session := func(i int) string {
			if i%4 == 3 {
				return "us-done"
			}
			return "us-open"
		}

		// A transaction of the test's own holds us-open's row: the first call's transaction
		// waits for it, and every call made meanwhile queues behind.
		release := catalog.HoldSessionForTest(t, c, "us-open")
		const calls = 20
		var wg sync.WaitGroup
		errs := make([]error, calls)
		call := func(i int) {
			defer wg.Done()
			errs[i] = record(ctx, session(i), int64(i))
		}
		wg.Add(1)
		go call(0)
		waitFor(t, func() bool { b, _, _ := catalog.SlotBatchesForTest(c); return b == 1 })
		for i := 1; i < calls; i++ {
			wg.Add(1)
			go call(i)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := record(cctx, "us-open", calls); !errors.Is(err, context.Canceled) {
			t.Fatalf("a call whose context ended: %v, want context.Canceled", err)
		}
		waitFor(t, func() bool { _, _, q := catalog.SlotBatchesForTest(c); return q == calls })
		release()
		wg.Wait()
		if batches, records, _ := catalog.SlotBatchesForTest(c); batches != 2 || records != calls+1 {
			t.Fatalf("%d calls took %d transactions (%d calls in them), want 2: the held one, then the queue", calls+1, batches, records)
		}
		for i, err := range errs {
			if want := session(i) == "us-done"; errors.Is(err, catalog.ErrConflict) != want || (!want && err != nil) {
				t.Fatalf("call %d to %s: %v, want ErrConflict=%v", i, session(i), err, want)
			}
		}
		for s, want := range map[string]int{"us-open": calls - calls/4 + 1, "us-done": 0} {
			slots, err := c.SessionSlots(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			if len(slots) != want {
				t.Fatalf("%s has %d slots recorded, want %d", s, len(slots), want)
			}
			for _, sl := range slots {
				if sl.Digest != digest(sl.Slot) || (sl.Slot < calls && session(int(sl.Slot)) != s) {
					t.Fatalf("%s slot %d recorded as %s", s, sl.Slot, sl.Digest)
				}
			}
		}
	})
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
