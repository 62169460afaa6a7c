package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sendense/sendense/shared/api"
)

// resultWithWarnings is the result label of a succeeded job that left disks out.
const resultWithWarnings = "succeeded_with_warnings"

// metrics of job outcomes.
type metrics struct {
	jobsFinished   *prometheus.CounterVec
	backupDuration prometheus.Histogram
	bytesRead      prometheus.Counter
	bytesSent      prometheus.Counter
	bytesDedup     prometheus.Counter
	pollsWaiting   prometheus.Gauge

	restoresFinished *prometheus.CounterVec
	restoreDuration  prometheus.Histogram
	restoreBytes     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		jobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_hub_backup_jobs_finished_total", Help: "Backup jobs finished, by result (succeeded, succeeded_with_warnings, failed, cancelled)."}, []string{"result"}),
		backupDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sendense_hub_backup_duration_seconds", Help: "Duration of finished backup jobs, from claim to completion.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16),
		}),
		bytesRead:        prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_backup_read_bytes_total", Help: "Bytes agents read from disks for successful backups."}),
		bytesSent:        prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_backup_sent_bytes_total", Help: "Bytes agents sent for successful backups (compressed chunks)."}),
		bytesDedup:       prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_backup_deduplicated_bytes_total", Help: "Bytes of successful backups not sent because the repository held the chunk."}),
		pollsWaiting:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "sendense_hub_job_polls_waiting", Help: "Agents' long polls for jobs waiting now (found no job yet)."}),
		restoresFinished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_hub_restores_finished_total", Help: "Restores as new VMs finished, by result (succeeded, failed, cancelled)."}, []string{"result"}),
		restoreDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sendense_hub_restore_duration_seconds", Help: "Duration of finished restores, from claim to completion.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16),
		}),
		restoreBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_restore_written_bytes_total", Help: "Bytes agents wrote into vSphere for successful restores."}),
	}
	for _, r := range []string{api.JobSucceeded, resultWithWarnings, api.JobFailed, api.JobCancelled} {
		m.jobsFinished.WithLabelValues(r)
	}
	for _, r := range []string{api.JobSucceeded, api.JobFailed, api.JobCancelled} {
		m.restoresFinished.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.jobsFinished, m.backupDuration, m.bytesRead, m.bytesSent, m.bytesDedup, m.pollsWaiting,
			m.restoresFinished, m.restoreDuration, m.restoreBytes)
	}
	return m
}

type jobCounter interface {
	CountJobsByStatus(ctx context.Context) (map[string]int, error)
}

type restoreCounter interface {
	CountRestoresByStatus(ctx context.Context) (map[string]int, error)
}

// jobsCollector exports a gauge of jobs by status (sendense_hub_backup_jobs{status},
// sendense_hub_restores{status}), counted in the catalog at scrape time.
type jobsCollector struct {
	count func(ctx context.Context) (map[string]int, error)
	log   *slog.Logger
	desc  *prometheus.Desc
}

func newJobsCollector(cat jobCounter, log *slog.Logger) *jobsCollector {
	return &jobsCollector{count: cat.CountJobsByStatus, log: log, desc: prometheus.NewDesc("sendense_hub_backup_jobs", "Backup jobs in the catalog by status.", []string{"status"}, nil)}
}

func newRestoresCollector(cat restoreCounter, log *slog.Logger) *jobsCollector {
	return &jobsCollector{count: cat.CountRestoresByStatus, log: log, desc: prometheus.NewDesc("sendense_hub_restores", "Restores in the catalog by status.", []string{"status"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *jobsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *jobsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.count(ctx)
	if err != nil {
		c.log.Warn("count jobs for metrics", "err", err)
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), status)
	}
}
