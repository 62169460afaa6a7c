package backup

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the agent's data path.
type Metrics struct {
	readBytes   prometheus.Counter
	sentBytes   prometheus.Counter
	zeroBytes   prometheus.Counter
	dedupBytes  prometheus.Counter
	uploadsHeld prometheus.Counter
	slots       *prometheus.CounterVec
	jobs        *prometheus.CounterVec
	jobDuration prometheus.Histogram
	snapshotAge prometheus.GaugeFunc
	// oldestSnapshot gives the age, in seconds, of the oldest snapshot a job holds open (the
	// runner's), computed at each scrape.
	oldestSnapshot atomic.Pointer[func() float64]
	fullReasons    *prometheus.CounterVec
	cbtDrift       prometheus.Counter
}

// NewMetrics returns the data-path metrics and registers them on reg; a nil reg registers
// nothing (tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		readBytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_agent_read_bytes_total", Help: "Bytes read from VM disks."}),
		sentBytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_agent_sent_bytes_total", Help: "Bytes of chunk blobs sent to the hub (after compression)."}),
		zeroBytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_agent_zero_bytes_total", Help: "Bytes read that were all zero and never sent."}),
		dedupBytes:  prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_agent_deduplicated_bytes_total", Help: "Bytes read whose chunk the hub already held, so not sent."}),
		uploadsHeld: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_agent_direct_uploads_held_total", Help: "Chunks uploaded without asking the hub first (while it lacked nearly every chunk) that it already held: sent in vain."}),
		slots:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_agent_slots_total", Help: "Slots read, by outcome (uploaded, deduplicated, zero)."}, []string{"result"}),
		jobs:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_agent_jobs_total", Help: "Backup jobs run, by result (succeeded, failed, cancelled)."}, []string{"result"}),
		jobDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sendense_agent_job_duration_seconds", Help: "Duration of backup jobs on the agent.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16),
		}),
		fullReasons: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_agent_disk_backups_total", Help: "Disk backups by type (full, incremental)."}, []string{"type"}),
		cbtDrift:    prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_agent_cbt_drift_total", Help: "Incrementals of a disk whose CBT sample found changed slots CBT had not reported (the disk was then read in full)."}),
	}
	m.snapshotAge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sendense_agent_snapshot_age_seconds",
		Help: "Age of the oldest snapshot a running backup job of the agent holds open (0 when none)."}, func() float64 {
		if f := m.oldestSnapshot.Load(); f != nil {
			return (*f)()
		}
		return 0
	})
	for _, r := range []string{"uploaded", "deduplicated", "zero"} {
		m.slots.WithLabelValues(r)
	}
	for _, r := range []string{"succeeded", "failed", "cancelled"} {
		m.jobs.WithLabelValues(r)
	}
	for _, r := range []string{"full", "incremental"} {
		m.fullReasons.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.readBytes, m.sentBytes, m.zeroBytes, m.dedupBytes, m.uploadsHeld, m.slots, m.jobs, m.jobDuration, m.snapshotAge, m.fullReasons, m.cbtDrift)
	}
	return m
}
