package daemon

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A nil registerer registers nothing (and does not panic); a registry gets every series.
func TestMetricsRegistration(t *testing.T) {
	NewMetrics(nil, nil).Heartbeats.Inc()
	NewDiscoveryMetrics(nil).Runs.WithLabelValues("vc1", "ok").Inc()

	reg := prometheus.NewRegistry()
	d := NewDiscoveryMetrics(reg)
	d.Runs.WithLabelValues("vc1", "ok").Inc()
	d.Up.WithLabelValues("vc1").Set(1)
	d.VMs.WithLabelValues("vc1").Set(3)
	d.Duration.WithLabelValues("vc1").Observe(0.1)
	names := []string{"sendense_agent_discovery_runs_total", "sendense_agent_source_up", "sendense_agent_inventory_vms", "sendense_agent_discovery_duration_seconds"}
	if n, err := testutil.GatherAndCount(reg, names...); err != nil || n != len(names) {
		t.Fatalf("discovery series registered: %d, %v; want %d", n, err, len(names))
	}
}
