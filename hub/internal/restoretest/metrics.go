package restoretest

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// metrics of restore tests: counters and a histogram of the tests this process ran, and a
// collector reading every VM's latest results from the catalog at scrape time, so that tests
// run by the CLI or another hub count as well.
type metrics struct {
	s        *Service
	total    *prometheus.CounterVec
	duration prometheus.Histogram
	rto      prometheus.Histogram
	bytes    prometheus.Counter

	failing, lastSuccess, lastFailure *prometheus.Desc
}

func newMetrics(s *Service, reg prometheus.Registerer) *metrics {
	m := &metrics{
		s: s,
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_hub_restore_tests_total",
			Help: "Restore tests this hub finished, by result (passed, failed)."}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sendense_hub_restore_test_duration_seconds",
			Help: "Time a restore test took from start to finish (its measured restore time).", Buckets: prometheus.ExponentialBuckets(1, 2, 16)}),
		rto: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sendense_hub_restore_test_rto_seconds",
			Help: "Time from a restore test's instant-recovery request to the guest's first boot signal, of the boot checks this hub passed.", Buckets: prometheus.ExponentialBuckets(1, 2, 13)}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_restore_test_read_bytes_total",
			Help: "Disk bytes read and verified by restore tests this hub ran."}),
		failing: prometheus.NewDesc("sendense_hub_restore_test_vms_failing",
			"VMs whose most recent finished restore test failed.", nil, nil),
		lastSuccess: prometheus.NewDesc("sendense_hub_restore_test_last_success_timestamp_seconds",
			"Unix time the VM's last passed restore test finished (0: none passed).", []string{"vm"}, nil),
		lastFailure: prometheus.NewDesc("sendense_hub_restore_test_last_failure_timestamp_seconds",
			"Unix time the VM's last failed restore test finished (0: none failed).", []string{"vm"}, nil),
	}
	// Both results exist from the start, so that increase() sees the first failure.
	m.total.WithLabelValues(api.RestoreTestPassed)
	m.total.WithLabelValues(api.RestoreTestFailed)
	if reg != nil {
		reg.MustRegister(m.total, m.duration, m.rto, m.bytes, m)
	}
	return m
}

func (m *metrics) observe(t *catalog.RestoreTest) {
	m.total.WithLabelValues(t.Status).Inc()
	if t.Seconds > 0 { // a test failed as stale has no measured time
		m.duration.Observe(t.Seconds)
	}
	if t.RTOSeconds > 0 {
		m.rto.Observe(t.RTOSeconds)
	}
	m.bytes.Add(float64(t.BytesRead))
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.failing
	ch <- m.lastSuccess
	ch <- m.lastFailure
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Unix())
}

// Collect implements prometheus.Collector. VM names label the per-VM series: one series per VM
// that has had a restore test, which restore-test policies select and operators start.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sums, err := m.s.cat.RestoreTestSummaries(ctx)
	if err != nil {
		m.s.log.Warn("summarise restore tests for metrics", "err", err)
		ch <- prometheus.NewInvalidMetric(m.failing, err)
		return
	}
	failing := 0
	seen := map[string]bool{}
	for _, s := range sums {
		if s.LastFailedAt.After(s.LastPassedAt) {
			failing++
		}
		if seen[s.VMName] { // two VMs with one name: the first reported keeps the label unique
			continue
		}
		seen[s.VMName] = true
		ch <- prometheus.MustNewConstMetric(m.lastSuccess, prometheus.GaugeValue, unix(s.LastPassedAt), s.VMName)
		ch <- prometheus.MustNewConstMetric(m.lastFailure, prometheus.GaugeValue, unix(s.LastFailedAt), s.VMName)
	}
	ch <- prometheus.MustNewConstMetric(m.failing, prometheus.GaugeValue, float64(failing))
}
