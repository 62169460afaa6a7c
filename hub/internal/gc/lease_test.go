package gc

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/lease"
)

// countHandler counts the finished collections logged.
type countHandler struct {
	slog.Handler
	n *atomic.Int32
}

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "garbage collection finished") {
		h.n.Add(1)
	}
	return nil
}

// Two hubs on one MariaDB catalog schedule garbage collection of one repository under the "gc"
// lease, as serve does: every scheduled collection runs on one hub only.
func TestScheduledCollectionOnOneHub(t *testing.T) {
	opts := catalogtest.Options(t, catalog.DriverMySQL)
	var cats [2]*catalog.Catalog
	for i := range cats {
		c, err := catalog.Open(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cats[i] = c
	}
	if _, err := cats[0].MigrateUp(t.Context(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	shared, _, _, _, _ := setup(t, nil)
	var runs [2]atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for i := range cats {
		log := slog.New(countHandler{Handler: slog.DiscardHandler, n: &runs[i]})
		col := New(shared.cat, shared.open, log, nil)
		col.now = shared.now
		col.settle = 0
		leases := lease.New(cats[i], log, nil, lease.Options{Holder: []string{"hub-a", "hub-b"}[i], TTL: 3 * time.Second})
		wg.Go(func() {
			_ = leases.Run(ctx, "gc", func(ctx context.Context) error { return col.Schedule(ctx, 100*time.Millisecond, time.Minute) })
		})
	}
	// Through two renewals at least, and until five collections have run (or long enough to
	// show they do not).
	time.Sleep(2 * time.Second)
	for deadline := time.Now().Add(30 * time.Second); runs[0].Load()+runs[1].Load() < 5 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	a, b := runs[0].Load(), runs[1].Load()
	if a+b < 5 || a != 0 && b != 0 {
		t.Fatalf("collections: hub A %d, hub B %d; want them all on one hub", a, b)
	}
	t.Logf("collections: hub A %d, hub B %d", a, b)
}
