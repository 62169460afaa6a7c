package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestProcessMetricsRegistration(t *testing.T) {
	newProcessMetrics(nil).hubRetries.Inc() // nil registers nothing, and the counter still works

	reg := prometheus.NewRegistry()
	m := newProcessMetrics(reg)
	m.hubRetries.Add(2)
	if n, err := testutil.GatherAndCount(reg, "sendense_agent_build_info", "sendense_agent_hub_request_retries_total", "go_goroutines"); err != nil || n != 3 {
		t.Fatalf("registered series: %d, %v; want build info, retries and the Go collector", n, err)
	}
	if v := testutil.ToFloat64(m.hubRetries); v != 2 {
		t.Fatalf("retries = %v", v)
	}
}
