package backup

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the hub's data path.
type Metrics struct {
	ChunksReceived   prometheus.Counter
	ChunkBytes       prometheus.Counter
	ChunksDuplicate  prometheus.Counter
	DigestMismatches prometheus.Counter
	BadBlobs         prometheus.Counter
	SlotsRecorded    prometheus.Counter
	JobsFinished     *prometheus.CounterVec
	BackupDuration   prometheus.Histogram
	BackupBytesRead  prometheus.Counter
	BackupBytesSent  prometheus.Counter
	BackupBytesDedup prometheus.Counter
}

// NewMetrics registers the data-path metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ChunksReceived:   prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunks_received_total", Help: "Chunks uploaded by agents and accepted (new or already stored)."}),
		ChunkBytes:       prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunk_received_bytes_total", Help: "Bytes of chunk blobs uploaded by agents and accepted."}),
		ChunksDuplicate:  prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunks_duplicate_total", Help: "Uploaded chunks the repository already held."}),
		DigestMismatches: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunk_digest_mismatches_total", Help: "Uploaded chunks refused because their content did not hash to their name."}),
		BadBlobs:         prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_chunk_rejected_total", Help: "Uploaded chunks refused as malformed (bad header, checksum or compression)."}),
		SlotsRecorded:    prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_slots_recorded_total", Help: "Disk slots recorded in upload sessions."}),
		JobsFinished:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sendense_hub_backup_jobs_finished_total", Help: "Backup jobs finished, by result (succeeded, failed, cancelled)."}, []string{"result"}),
		BackupDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sendense_hub_backup_duration_seconds", Help: "Duration of finished backup jobs, from claim to completion.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16),
		}),
		BackupBytesRead:  prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_backup_read_bytes_total", Help: "Bytes agents read from disks for successful backups."}),
		BackupBytesSent:  prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_backup_sent_bytes_total", Help: "Bytes agents sent for successful backups (compressed chunks)."}),
		BackupBytesDedup: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_hub_backup_deduplicated_bytes_total", Help: "Bytes of successful backups not sent because the repository held the chunk."}),
	}
	for _, r := range []string{"succeeded", "failed", "cancelled"} {
		m.JobsFinished.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.ChunksReceived, m.ChunkBytes, m.ChunksDuplicate, m.DigestMismatches, m.BadBlobs, m.SlotsRecorded,
			m.JobsFinished, m.BackupDuration, m.BackupBytesRead, m.BackupBytesSent, m.BackupBytesDedup)
	}
	return m
}

type jobCounter interface {
	CountJobsByStatus(ctx context.Context) (map[string]int, error)
}

// JobsCollector exports sendense_hub_backup_jobs{status}, counted in the catalog at scrape time.
type JobsCollector struct {
	cat  jobCounter
	log  *slog.Logger
	desc *prometheus.Desc
}

// NewJobsCollector returns the collector.
func NewJobsCollector(cat jobCounter, log *slog.Logger) *JobsCollector {
	return &JobsCollector{cat: cat, log: log, desc: prometheus.NewDesc("sendense_hub_backup_jobs", "Backup jobs in the catalog by status.", []string{"status"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *JobsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *JobsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.cat.CountJobsByStatus(ctx)
	if err != nil {
		c.log.Warn("count jobs for metrics", "err", err)
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), status)
	}
}
