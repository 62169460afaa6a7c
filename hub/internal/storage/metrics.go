package storage

import (
	"context"
	"log/slog"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the capacity of the file system under each repository, read at scrape time:
// what a "repository nearly full" alert needs.
type Collector struct {
	m          *Manager
	log        *slog.Logger
	size, free *prometheus.Desc
}

// NewCollector returns the collector.
func NewCollector(m *Manager, log *slog.Logger) *Collector {
	return &Collector{
		m: m, log: log,
		size: prometheus.NewDesc("sendense_hub_repository_filesystem_size_bytes", "Size of the file system holding the repository.", []string{"repository"}, nil),
		free: prometheus.NewDesc("sendense_hub_repository_filesystem_avail_bytes", "Bytes available to the hub on the file system holding the repository.", []string{"repository"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.size; ch <- c.free }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := c.m.List(ctx)
	if err != nil {
		c.log.Warn("list repositories for metrics", "err", err)
		ch <- prometheus.NewInvalidMetric(c.size, err)
		return
	}
	for _, r := range rs {
		var st syscall.Statfs_t
		if err := syscall.Statfs(r.Path, &st); err != nil {
			ch <- prometheus.NewInvalidMetric(c.size, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(st.Blocks)*float64(st.Bsize), r.Name)
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(st.Bavail)*float64(st.Bsize), r.Name)
	}
}
