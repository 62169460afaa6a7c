package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// flakySource fails while down is set, else returns an inventory numbered by the call.
type flakySource struct {
	mu    sync.Mutex
	down  bool
	calls int
}

func (s *flakySource) Name() string { return "vc1" }

func (s *flakySource) Inventory(context.Context) (api.Inventory, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.down {
		return api.Inventory{}, errors.New("dial tcp: connection refused")
	}
	return api.Inventory{Source: api.Source{Name: "vc1"}, VMs: make([]api.VM, s.calls)}, nil
}

func (s *flakySource) set(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

// flakyHub refuses pushes while down is set and remembers what it took.
type flakyHub struct {
	mu     sync.Mutex
	down   bool
	pushed []int // VM counts of accepted inventories
}

func (h *flakyHub) PutInventory(_ context.Context, inv *api.Inventory) (api.InventoryResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return api.InventoryResult{}, errors.New("hub answered 503")
	}
	h.pushed = append(h.pushed, len(inv.VMs))
	return api.InventoryResult{VMs: len(inv.VMs)}, nil
}

func (h *flakyHub) set(down bool) { h.mu.Lock(); h.down = down; h.mu.Unlock() }

func (h *flakyHub) got() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.pushed...)
}

func readStatus(t *testing.T, dir string) []SourceStatus {
	t.Helper()
	b, err := os.ReadFile(StatusFile(dir))
	if err != nil {
		return nil
	}
	var st []SourceStatus
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// vCenter unreachable: the loop keeps running, reports it in status and metrics, and recovers.
// Hub unreachable: the newest inventory is pushed once the hub answers again.
func TestDiscoveryLoopSurvivesOutages(t *testing.T) {
	src := &flakySource{down: true}
	hub := &flakyHub{}
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	m := NewDiscoveryMetrics(reg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	// A short interval: the backoff of an unreachable source starts at 5s, capped by it.
	go func() {
		done <- Discovery(ctx, []Source{src}, hub, 200*time.Millisecond, dir, m, slog.New(slog.DiscardHandler))
	}()

	testenv.WaitFor(t, 30*time.Second, "the outage to be recorded", func() bool {
		st := readStatus(t, dir)
		return len(st) == 1 && !st[0].Reachable && st[0].Error != ""
	})
	if v := testutil.ToFloat64(m.Up.WithLabelValues("vc1")); v != 0 {
		t.Fatalf("source_up = %v while vCenter is down", v)
	}
	src.set(false)
	testenv.WaitFor(t, 30*time.Second, "a push after vCenter came back", func() bool { return len(hub.got()) > 0 })
	if v := testutil.ToFloat64(m.Up.WithLabelValues("vc1")); v != 1 {
		t.Fatalf("source_up = %v after recovery", v)
	}

	hub.set(true)
	testenv.WaitFor(t, 30*time.Second, "a pending push to be recorded", func() bool {
		st := readStatus(t, dir)
		return len(st) == 1 && st[0].PushPending
	})
	before := len(hub.got())
	hub.set(false)
	testenv.WaitFor(t, 30*time.Second, "the push after the hub came back", func() bool { return len(hub.got()) > before })
	// What reached the hub after the outage is the newest inventory, not a stale one.
	got := hub.got()
	src.mu.Lock()
	newest := src.calls
	src.mu.Unlock()
	if last := got[len(got)-1]; last < got[before-1] || last > newest {
		t.Fatalf("pushed %v; the newest inventory had %d VMs", got, newest)
	}
	if v := testutil.ToFloat64(m.Runs.WithLabelValues("vc1", "hub_error")); v == 0 {
		t.Fatal("hub errors not counted")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
