package repository

import (
	"context"
	"log/slog"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
)

type repositoryLister interface {
	Repositories(ctx context.Context) ([]catalog.Repository, error)
}

// capacityCollector exports the capacity of the file system under each local repository, read
// at scrape time: what a "repository nearly full" alert needs.
type capacityCollector struct {
	cat        repositoryLister
	log        *slog.Logger
	size, free *prometheus.Desc
}

var _ prometheus.Collector = (*capacityCollector)(nil)

func newCapacityCollector(cat repositoryLister, log *slog.Logger) *capacityCollector {
	return &capacityCollector{
		cat: cat, log: log,
		size: prometheus.NewDesc("sendense_hub_repository_filesystem_size_bytes", "Size of the file system holding the repository.", []string{"repository"}, nil),
		free: prometheus.NewDesc("sendense_hub_repository_filesystem_avail_bytes", "Bytes available to the hub on the file system holding the repository.", []string{"repository"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *capacityCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.size; ch <- c.free }

// Collect implements prometheus.Collector.
func (c *capacityCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := c.cat.Repositories(ctx)
	if err != nil {
		c.log.Warn("list repositories for metrics", "err", err)
		ch <- prometheus.NewInvalidMetric(c.size, err)
		return
	}
	for _, r := range rs {
		if r.Kind != "local" {
			continue
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(r.Path, &st); err != nil {
			ch <- prometheus.NewInvalidMetric(c.size, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(st.Blocks)*float64(st.Bsize), r.Name)
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(st.Bavail)*float64(st.Bsize), r.Name)
	}
}
