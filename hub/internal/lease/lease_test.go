package lease_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/lease"
)

// twoHubs opens the same catalog twice, as two hubs sharing it do.
func twoHubs(t *testing.T, dialect string) (a, b *catalog.Catalog) {
	t.Helper()
	opts := catalogtest.Options(t, dialect)
	open := func() *catalog.Catalog {
		c, err := catalog.Open(t.Context(), opts)
		if err != nil {
			t.Fatalf("open catalog: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a = open()
	if _, err := a.MigrateUp(t.Context(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return a, open()
}

func forEachDialect(t *testing.T, fn func(t *testing.T, a, b *catalog.Catalog)) {
	for _, d := range catalogtest.Dialects {
		t.Run(d, func(t *testing.T) {
			a, b := twoHubs(t, d)
			fn(t, a, b)
		})
	}
}

// duty counts how often it was started and how many run at once.
type duty struct {
	starts, running, maxRunning atomic.Int32
	started                     chan string
}

func newDuty() *duty { return &duty{started: make(chan string, 16)} }

func (d *duty) fn(hub string) func(context.Context) error {
	return func(ctx context.Context) error {
		d.starts.Add(1)
		n := d.running.Add(1)
		for {
			m := d.maxRunning.Load()
			if n <= m || d.maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		d.started <- hub
		<-ctx.Done()
		d.running.Add(-1)
		return nil
	}
}

func manager(c *catalog.Catalog, holder string, ttl time.Duration) *lease.Manager {
	return lease.New(c, slog.New(slog.DiscardHandler), nil, lease.Options{Holder: holder, TTL: ttl})
}

func TestAcquireLeaseOneWinner(t *testing.T) {
	forEachDialect(t, func(t *testing.T, a, b *catalog.Catalog) {
		now := time.Now()
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			c := a
			if i%2 == 1 {
				c = b
			}
			wg.Go(func() {
				ok, err := c.AcquireLease(t.Context(), "gc", string(rune('a'+i)), now, time.Minute)
				if err != nil {
					t.Errorf("acquire: %v", err)
				}
				if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if got := wins.Load(); got != 1 {
			t.Fatalf("%d hubs took the same lease at once, want 1", got)
		}
		ls, err := a.Leases(t.Context())
		if err != nil || len(ls) != 1 {
			t.Fatalf("leases = %v, %v", ls, err)
		}
		// The holder renews; another cannot renew nor take it before it expires, and can after.
		if ok, err := a.RenewLease(t.Context(), "gc", ls[0].Holder, now, time.Minute); err != nil || !ok {
			t.Fatalf("holder renew = %v, %v", ok, err)
		}
		if ok, err := b.RenewLease(t.Context(), "gc", "other", now, time.Minute); err != nil || ok {
			t.Fatalf("non-holder renew = %v, %v", ok, err)
		}
		if ok, err := b.AcquireLease(t.Context(), "gc", "other", now.Add(59*time.Second), time.Minute); err != nil || ok {
			t.Fatalf("take before expiry = %v, %v", ok, err)
		}
		if ok, err := b.AcquireLease(t.Context(), "gc", "other", now.Add(61*time.Second), time.Minute); err != nil || !ok {
			t.Fatalf("take after expiry = %v, %v", ok, err)
		}
		if ok, err := a.RenewLease(t.Context(), "gc", ls[0].Holder, now.Add(62*time.Second), time.Minute); err != nil || ok {
			t.Fatalf("renew by the former holder after a takeover = %v, %v", ok, err)
		}
	})
}

// TestOneHubRunsTheDuty: two hubs run the same duty's lease loop for many renewal periods; the
// duty ran on exactly one of them, once, never on both at once.
func TestOneHubRunsTheDuty(t *testing.T) {
	forEachDialect(t, func(t *testing.T, a, b *catalog.Catalog) {
		// Long enough that a renewal stalled by a loaded machine (a commit's fsync, a
		// starved goroutine) does not let the lease expire: that would be a real handover.
		const ttl = 1500 * time.Millisecond
		d := newDuty()
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { _ = manager(a, "hub-a", ttl).Run(ctx, "scheduler", d.fn("hub-a")) })
		wg.Go(func() { _ = manager(b, "hub-b", ttl).Run(ctx, "scheduler", d.fn("hub-b")) })
		time.Sleep(4 * ttl)
		cancel()
		wg.Wait()
		if d.starts.Load() != 1 || d.maxRunning.Load() != 1 {
			t.Fatalf("duty started %d times, %d at once; want once on one hub", d.starts.Load(), d.maxRunning.Load())
		}
	})
}

// TestDeadHolderTakenOver: a hub killed while holding a lease neither renews nor releases it;
// another hub runs the duty only once the lease has expired, and then does.
func TestDeadHolderTakenOver(t *testing.T) {
	forEachDialect(t, func(t *testing.T, a, b *catalog.Catalog) {
		const ttl = 300 * time.Millisecond
		const deadTTL = 1500 * time.Millisecond
		taken := time.Now()
		if ok, err := a.AcquireLease(t.Context(), "gc", "killed-hub", taken, deadTTL); err != nil || !ok {
			t.Fatalf("acquire = %v, %v", ok, err)
		}
		d := newDuty()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() { _ = manager(b, "hub-b", ttl).Run(ctx, "gc", d.fn("hub-b")) }()
		select {
		case <-d.started:
		case <-time.After(deadTTL + 10*time.Second):
			t.Fatalf("duty not taken over %v after the dead holder's lease expired", 10*time.Second)
		}
		if waited := time.Since(taken); waited < deadTTL {
			t.Fatalf("duty taken over after %v, before the dead holder's lease expired (%v)", waited, deadTTL)
		}
	})
}

// TestStoppedHolderHandsOver: a hub stopped cleanly releases its leases; the other hub takes the
// duty within one polling period, not after a whole expiry.
func TestStoppedHolderHandsOver(t *testing.T) {
	forEachDialect(t, func(t *testing.T, a, b *catalog.Catalog) {
		const ttl = 3 * time.Second
		d := newDuty()
		actx, stopA := context.WithCancel(t.Context())
		aDone := make(chan struct{})
		go func() { defer close(aDone); _ = manager(a, "hub-a", ttl).Run(actx, "verify", d.fn("hub-a")) }()
		if hub := <-d.started; hub != "hub-a" {
			t.Fatalf("started on %s", hub)
		}
		bctx, stopB := context.WithCancel(t.Context())
		defer stopB()
		go func() { _ = manager(b, "hub-b", ttl).Run(bctx, "verify", d.fn("hub-b")) }()
		stopA()
		<-aDone
		stopped := time.Now()
		select {
		case hub := <-d.started:
			if hub != "hub-b" {
				t.Fatalf("started on %s", hub)
			}
		case <-time.After(ttl):
			t.Fatalf("duty not handed over within %v of a clean stop", ttl)
		}
		if d.maxRunning.Load() != 1 {
			t.Fatalf("duty ran on both hubs at once")
		}
		t.Logf("handed over after %v", time.Since(stopped))
	})
}

// TestLostLeaseStopsDuty: when another hub has taken the lease over (this one stalled past the
// expiry), the next renewal finds out and the duty is stopped.
func TestLostLeaseStopsDuty(t *testing.T) {
	forEachDialect(t, func(t *testing.T, a, b *catalog.Catalog) {
		const ttl = 600 * time.Millisecond
		d := newDuty()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() { _ = manager(a, "hub-a", ttl).Run(ctx, "reaper", d.fn("hub-a")) }()
		<-d.started
		// Another hub whose clock is past the expiry takes it.
		if ok, err := b.AcquireLease(t.Context(), "reaper", "hub-b", time.Now().Add(2*ttl), time.Hour); err != nil || !ok {
			t.Fatalf("take over = %v, %v", ok, err)
		}
		const wait = 10 * time.Second
		deadline := time.Now().Add(wait)
		for d.running.Load() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("duty still running %v after its lease was taken over", wait)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
