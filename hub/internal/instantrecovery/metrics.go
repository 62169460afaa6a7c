package instantrecovery

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics reports sessions by status (from the catalog, so every hub instance agrees) and each
// served session's overlay bytes.
type metrics struct {
	s        *Service
	sessions *prometheus.Desc
	overlay  *prometheus.Desc
	limit    *prometheus.Desc
}

func newMetrics(s *Service, reg prometheus.Registerer) *metrics {
	m := &metrics{
		s:        s,
		sessions: prometheus.NewDesc("sendense_instant_recoveries", "Instant-recovery sessions by status.", []string{"status"}, nil),
		overlay:  prometheus.NewDesc("sendense_instant_recovery_overlay_bytes", "Bytes the VM's writes take in a served session's copy-on-write overlay.", []string{"session"}, nil),
		limit:    prometheus.NewDesc("sendense_instant_recovery_overlay_limit_bytes", "The bound of each session's overlay.", nil, nil),
	}
	if reg != nil {
		reg.MustRegister(m)
	}
	return m
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.sessions
	ch <- m.overlay
	ch <- m.limit
}

// Collect implements prometheus.Collector. A catalog that does not answer in 5 seconds leaves
// the session counts out of this scrape.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if counts, err := m.s.cat.CountInstantRecoveriesByStatus(ctx); err == nil {
		for st, n := range counts {
			ch <- prometheus.MustNewConstMetric(m.sessions, prometheus.GaugeValue, float64(n), st)
		}
	}
	for id, n := range m.s.exp.Overlays() {
		ch <- prometheus.MustNewConstMetric(m.overlay, prometheus.GaugeValue, float64(n), id)
	}
	ch <- prometheus.MustNewConstMetric(m.limit, prometheus.GaugeValue, float64(m.s.opts.OverlayLimit))
}
