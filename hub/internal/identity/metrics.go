package identity

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

type agentCounter interface {
	CountAgentsByStatus(ctx context.Context) (map[string]int, error)
	Agents(ctx context.Context) ([]catalog.Agent, error)
}

// agentCollector exports sendense_hub_agents{status}, counted in the catalog at scrape time so
// that every hub instance reports the same fleet.
type agentCollector struct {
	cat      agentCounter
	log      *slog.Logger
	desc     *prometheus.Desc
	lastSeen *prometheus.Desc
	certEnd  *prometheus.Desc
}

func newAgentCollector(cat agentCounter, log *slog.Logger) *agentCollector {
	return &agentCollector{
		cat: cat, log: log,
		desc: prometheus.NewDesc("sendense_hub_agents", "Enrolled agents by status.", []string{"status"}, nil),
		// Per active agent: the fleet is a bounded set, and these are what alerts need.
		lastSeen: prometheus.NewDesc("sendense_hub_agent_last_seen_timestamp_seconds", "Unix time of the active agent's last heartbeat.", []string{"agent_id"}, nil),
		certEnd:  prometheus.NewDesc("sendense_hub_agent_certificate_expiry_timestamp_seconds", "Unix time at which the active agent's current certificate expires.", []string{"agent_id"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.lastSeen
	ch <- c.certEnd
}

// Collect implements prometheus.Collector.
func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
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
	agents, err := c.cat.Agents(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.lastSeen, err)
		return
	}
	for _, a := range agents {
		if a.Status != api.AgentActive {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.lastSeen, prometheus.GaugeValue, float64(a.LastSeenAt.Unix()), a.ID)
		ch <- prometheus.MustNewConstMetric(c.certEnd, prometheus.GaugeValue, float64(a.CertNotAfter.Unix()), a.ID)
	}
}
