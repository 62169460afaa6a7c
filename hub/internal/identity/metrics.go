package identity

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type agentCounter interface {
	CountAgentsByStatus(ctx context.Context) (map[string]int, error)
}

// AgentCollector exports sendense_hub_agents{status}, counted in the catalog at scrape time so
// that every hub instance reports the same fleet.
type AgentCollector struct {
	cat  agentCounter
	log  *slog.Logger
	desc *prometheus.Desc
}

// NewAgentCollector returns the collector.
func NewAgentCollector(cat agentCounter, log *slog.Logger) *AgentCollector {
	return &AgentCollector{cat: cat, log: log, desc: prometheus.NewDesc("sendense_hub_agents", "Enrolled agents by status.", []string{"status"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *AgentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *AgentCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.cat.CountAgentsByStatus(ctx)
	if err != nil {
		c.log.Warn("count agents for metrics", "err", err)
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), status)
	}
}
