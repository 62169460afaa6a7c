package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/atomicfile"
)

// Source produces the complete inventory of one vCenter/ESXi endpoint. Inventory may be called
// again after an error; implementations reconnect as needed.
type Source interface {
	Name() string
	Inventory(ctx context.Context) (api.Inventory, error)
}

// inventoryPusher sends an inventory to the hub (idempotent; retried by the client).
type inventoryPusher interface {
	PutInventory(ctx context.Context, inv *api.Inventory) (api.InventoryResult, error)
}

// DiscoveryMetrics are the discovery loop's metrics; the source label takes configured source
// names only, a bounded set.
type DiscoveryMetrics struct {
	Runs     *prometheus.CounterVec // result: ok, source_error, hub_error
	Up       *prometheus.GaugeVec   // 1 when the last inventory was read
	VMs      *prometheus.GaugeVec
	Duration *prometheus.HistogramVec
}

// NewDiscoveryMetrics returns the discovery metrics and registers them on reg; a nil reg
// registers nothing (tests).
func NewDiscoveryMetrics(reg prometheus.Registerer) *DiscoveryMetrics {
	m := &DiscoveryMetrics{
		Runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_agent_discovery_runs_total", Help: "Discovery runs by source and result (ok, source_error, hub_error)."}, []string{"source", "result"}),
		Up:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sendense_agent_source_up", Help: "1 when the last inventory of the source was read, 0 when vCenter/ESXi could not be reached."}, []string{"source"}),
		VMs:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sendense_agent_inventory_vms", Help: "VMs in the last inventory of the source."}, []string{"source"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sendense_agent_discovery_duration_seconds", Help: "Time to read the inventory of a source.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}, []string{"source"}),
	}
	if reg != nil {
		reg.MustRegister(m.Runs, m.Up, m.VMs, m.Duration)
	}
	return m
}

// SourceStatus is what `sendense-agent status` shows about one source.
type SourceStatus struct {
	Name          string    `json:"name"`
	Reachable     bool      `json:"reachable"`
	LastAttempt   time.Time `json:"last_attempt"`
	LastSuccess   time.Time `json:"last_success,omitzero"`
	LastPushed    time.Time `json:"last_pushed,omitzero"`
	VMs           int       `json:"vms"`
	Error         string    `json:"error,omitempty"`
	PushPending   bool      `json:"push_pending"`
	HubLastError  string    `json:"hub_error,omitempty"`
	IntervalSecs  float64   `json:"interval_seconds"`
	NextAttemptAt time.Time `json:"next_attempt,omitzero"`
}

// StatusFile is where the daemon records source status for `sendense-agent status`.
func StatusFile(stateDir string) string { return filepath.Join(stateDir, "sources.json") }

// Discovery reads every source each interval and pushes its inventory to the hub. A source that
// cannot be read is retried with backoff (starting at 5s, at most the interval) without stopping
// the others. An inventory the hub did not take is kept, and the newest one is pushed as soon as
// the hub answers again. Runs until ctx ends.
func Discovery(ctx context.Context, sources []Source, hub inventoryPusher, interval time.Duration, stateDir string, m *DiscoveryMetrics, log *slog.Logger) error {
	st := &statusBook{path: StatusFile(stateDir), all: map[string]*SourceStatus{}}
	var wg sync.WaitGroup
	for _, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			discoverLoop(ctx, src, hub, interval, st, m, log.With("source", src.Name()))
		}()
	}
	wg.Wait()
	return nil
}

// DiscoverOnce reads one source and pushes its inventory, for the one-shot `discover` command.
func DiscoverOnce(ctx context.Context, src Source, hub inventoryPusher) (api.Inventory, api.InventoryResult, error) {
	inv, err := src.Inventory(ctx)
	if err != nil {
		return api.Inventory{}, api.InventoryResult{}, err
	}
	res, err := hub.PutInventory(ctx, &inv)
	return inv, res, err
}

func discoverLoop(ctx context.Context, src Source, hub inventoryPusher, interval time.Duration, st *statusBook, m *DiscoveryMetrics, log *slog.Logger) {
	name := src.Name()
	firstBackoff := min(5*time.Second, interval)
	backoff := firstBackoff
	var pending *api.Inventory
	s := &SourceStatus{Name: name}
	for {
		s.IntervalSecs = interval.Seconds()
		s.LastAttempt = time.Now().UTC()
		start := time.Now()
		inv, err := src.Inventory(ctx)
		if ctx.Err() != nil {
			return
		}
		m.Duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		wait := interval
		if err != nil {
			m.Runs.WithLabelValues(name, "source_error").Inc()
			m.Up.WithLabelValues(name).Set(0)
			s.Reachable, s.Error = false, err.Error()
			log.WarnContext(ctx, "cannot read the inventory of the source; retrying", "retry_in_seconds", backoff.Seconds(), "err", err)
			wait = backoff
			backoff = min(backoff*2, interval)
		} else {
			backoff = firstBackoff
			m.Up.WithLabelValues(name).Set(1)
			m.VMs.WithLabelValues(name).Set(float64(len(inv.VMs)))
			s.Reachable, s.Error, s.LastSuccess, s.VMs = true, "", time.Now().UTC(), len(inv.VMs)
			pending = &inv // the newest inventory replaces any unsent one
		}
		if pending != nil {
			res, perr := hub.PutInventory(ctx, pending)
			if ctx.Err() != nil {
				return
			}
			if perr != nil {
				m.Runs.WithLabelValues(name, "hub_error").Inc()
				s.PushPending, s.HubLastError = true, perr.Error()
				log.WarnContext(ctx, "hub did not take the inventory; the newest one is sent when it answers", "err", perr)
				wait = min(wait, 30*time.Second)
			} else {
				if err == nil {
					m.Runs.WithLabelValues(name, "ok").Inc()
				}
				pending = nil
				s.PushPending, s.HubLastError, s.LastPushed = false, "", time.Now().UTC()
				log.InfoContext(ctx, "inventory pushed", "vms", res.VMs, "disks", res.Disks, "changes", len(res.Events))
			}
		}
		s.NextAttemptAt = time.Now().Add(wait).UTC()
		st.put(*s)
		st.save(log)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

type statusBook struct {
	path string
	mu   sync.Mutex
	all  map[string]*SourceStatus
}

func (b *statusBook) put(s SourceStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all[s.Name] = &s
}

func (b *statusBook) save(log *slog.Logger) {
	b.mu.Lock()
	defer b.mu.Unlock() // also serialises the file writes
	out := make([]SourceStatus, 0, len(b.all))
	for _, s := range b.all {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	data, err := json.MarshalIndent(out, "", "  ")
	if err == nil {
		err = atomicfile.WriteFile(b.path, append(data, '\n'), 0o600)
	}
	if err != nil {
		log.Warn("record source status", "err", err)
	}
}
