package policy

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/hub/internal/catalog"
)

// collector exports per-policy run state and the count of unprotected VMs, read from the
// catalog at scrape time so that every hub instance reports the same. Policy names are chosen by
// operators and few, so they make a bounded label.
type collector struct {
	s                         *Service
	log                       *slog.Logger
	lastSuccess, lastFailed   *prometheus.Desc
	nextRun, unprotected, vms *prometheus.Desc
	overdue                   *prometheus.Desc
	copyLag, copiesBehind     *prometheus.Desc
	copyLagAllowed            *prometheus.Desc
}

func newCollector(s *Service, log *slog.Logger) *collector {
	return &collector{
		s: s, log: log,
		lastSuccess: prometheus.NewDesc("sendense_hub_policy_last_success_timestamp_seconds", "Unix time the policy's last successful backup finished (0: never).", []string{"policy"}, nil),
		lastFailed:  prometheus.NewDesc("sendense_hub_policy_last_run_failed", "1 when the policy's most recent finished backup failed or was cancelled.", []string{"policy"}, nil),
		nextRun:     prometheus.NewDesc("sendense_hub_policy_next_run_timestamp_seconds", "Unix time of the policy's next scheduled run.", []string{"policy"}, nil),
		vms:         prometheus.NewDesc("sendense_hub_policy_vms", "VMs the policy covers.", []string{"policy"}, nil),
		unprotected: prometheus.NewDesc("sendense_hub_vms_unprotected", "VMs (not gone, not templates) that no enabled policy covers.", nil, nil),
		overdue: prometheus.NewDesc("sendense_hub_policy_vms_overdue",
			"VMs the policy covers whose last successful backup is older than two schedule periods (or that have none although the policy is that old).", []string{"policy"}, nil),
		copyLag: prometheus.NewDesc("sendense_hub_copy_lag_seconds",
			"Age of the oldest successful backup an enabled copy policy keeps that its target repository still lacks (0: up to date).", []string{"policy"}, nil),
		copiesBehind: prometheus.NewDesc("sendense_hub_copies_behind",
			"Successful backups an enabled copy policy keeps that its target repository still lacks.", []string{"policy"}, nil),
		copyLagAllowed: prometheus.NewDesc("sendense_hub_copy_lag_allowed_seconds",
			"The copy lag a copy policy tolerates: two periods of its schedule (a copy waits up to one for its run).", []string{"policy"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lastSuccess, c.lastFailed, c.nextRun, c.vms, c.unprotected, c.overdue, c.copyLag, c.copiesBehind, c.copyLagAllowed} {
		ch <- d
	}
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Unix())
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ps, err := c.s.cat.Policies(ctx)
	if err != nil {
		c.log.Warn("list policies for metrics", "err", err)
		ch <- prometheus.NewInvalidMetric(c.unprotected, err)
		return
	}
	for i := range ps {
		p := &ps[i]
		stats := c.s.cat.PolicyStats
		if isCopy(p) {
			stats = c.s.cat.CopyPolicyStats
			c.collectCopy(ctx, ch, p)
		}
		st, err := stats(ctx, p.ID)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.lastSuccess, err)
			continue
		}
		failed := 0.0
		if st.LastStatus != "" && st.LastStatus != "succeeded" {
			failed = 1
		}
		covered, err := c.s.Covered(ctx, p)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.vms, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, unix(st.LastSuccessAt), p.Name)
		ch <- prometheus.MustNewConstMetric(c.lastFailed, prometheus.GaugeValue, failed, p.Name)
		ch <- prometheus.MustNewConstMetric(c.nextRun, prometheus.GaugeValue, unix(p.NextRunAt), p.Name)
		ch <- prometheus.MustNewConstMetric(c.vms, prometheus.GaugeValue, float64(len(covered)), p.Name)
		if n, err := c.s.overdue(ctx, p, covered); err != nil {
			ch <- prometheus.NewInvalidMetric(c.overdue, err)
		} else {
			ch <- prometheus.MustNewConstMetric(c.overdue, prometheus.GaugeValue, float64(n), p.Name)
		}
	}
	un, err := c.s.Unprotected(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.unprotected, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.unprotected, prometheus.GaugeValue, float64(len(un)))
}

// collectCopy exports how far an enabled copy policy's target is behind.
func (c *collector) collectCopy(ctx context.Context, ch chan<- prometheus.Metric, p *catalog.Policy) {
	if !p.Enabled {
		return
	}
	lag, behind, allowed, err := c.s.copyLag(ctx, p)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.copyLag, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.copyLag, prometheus.GaugeValue, lag.Seconds(), p.Name)
	ch <- prometheus.MustNewConstMetric(c.copiesBehind, prometheus.GaugeValue, float64(behind), p.Name)
	ch <- prometheus.MustNewConstMetric(c.copyLagAllowed, prometheus.GaugeValue, allowed.Seconds(), p.Name)
}
