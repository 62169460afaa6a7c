package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sendense/sendense/shared/version"
)

// processMetrics are the agent's series that no internal package owns: build information, the
// Go runtime and the process, and the hub request retries, which hubclient counts on a counter
// it is handed in its Options.
type processMetrics struct {
	hubRetries prometheus.Counter
}

// newProcessMetrics returns the process-wide metrics and registers them on reg; a nil reg
// registers nothing.
func newProcessMetrics(reg prometheus.Registerer) *processMetrics {
	m := &processMetrics{
		hubRetries: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_agent_hub_request_retries_total", Help: "Hub requests retried after a connection failure, 429 or 5xx."}),
	}
	v := version.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sendense_agent_build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "goversion": v.GoVersion},
	})
	build.Set(1)
	if reg != nil {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.hubRetries, build)
	}
	return m
}
