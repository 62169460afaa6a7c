// Package daemon runs the agent's long-lived loops: heartbeats, certificate renewal, and the
// discovery and job loops, each under one errgroup so that SIGTERM stops them together.
package daemon

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/identity"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/version"
)

// hub is what the identity loops need from the hub client.
type hub interface {
	Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error)
	Renew(ctx context.Context, csrPEM []byte) (api.RenewResponse, error)
	// ResetConnections makes later requests handshake again (with the renewed certificate).
	ResetConnections()
}

// Metrics of the identity loops.
type Metrics struct {
	HeartbeatFailures prometheus.Counter
	Heartbeats        prometheus.Counter
}

// NewMetrics returns the identity loops' metrics and registers them on reg, including the
// certificate expiry read from id at scrape time; a nil reg registers nothing (tests).
func NewMetrics(reg prometheus.Registerer, id *identity.Identity) *Metrics {
	m := &Metrics{
		HeartbeatFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_agent_heartbeat_failures_total", Help: "Heartbeats the hub did not acknowledge."}),
		Heartbeats:        prometheus.NewCounter(prometheus.CounterOpts{Name: "sendense_agent_heartbeats_total", Help: "Heartbeats sent to the hub (acknowledged or not)."}),
	}
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sendense_agent_certificate_expiry_timestamp_seconds",
		Help: "Unix time at which the agent's client certificate expires.",
	}, func() float64 { return float64(id.NotAfter().Unix()) })
	if reg != nil {
		reg.MustRegister(m.HeartbeatFailures, m.Heartbeats, expiry)
	}
	return m
}

// Heartbeat tells the hub the agent is alive every interval until ctx ends. Failures are
// counted and logged; a revoked agent is reported loudly but the loop keeps going so that the
// operator sees the agent come back if the revocation was a mistake and it re-enrolls.
func Heartbeat(ctx context.Context, h hub, interval time.Duration, m *Metrics, log *slog.Logger) error {
	host, _ := os.Hostname()
	req := api.HeartbeatRequest{Hostname: host, Version: version.Get().Version}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		m.Heartbeats.Inc()
		cctx, cancel := context.WithTimeout(ctx, interval+10*time.Second)
		_, err := h.Heartbeat(cctx, req)
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case hubclient.StatusOf(err) == http.StatusForbidden:
			m.HeartbeatFailures.Inc()
			log.ErrorContext(ctx, "hub refuses this agent (revoked?); enroll again with a new token", "err", err)
		default:
			m.HeartbeatFailures.Inc()
			log.WarnContext(ctx, "heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Renewal renews the agent certificate at about two thirds of its lifetime (±5% jitter) with a
// new key, stores it and swaps it into the running agent, until ctx ends. A failed renewal is
// retried with backoff while the certificate is still valid.
func Renewal(ctx context.Context, id *identity.Identity, h hub, now func() time.Time, log *slog.Logger) error {
	if now == nil {
		now = time.Now
	}
	backoff := time.Minute
	for {
		at := id.RenewAt(0.05, rand.Float64)
		wait := at.Sub(now())
		if wait > 0 {
			log.DebugContext(ctx, "certificate renewal scheduled", "agent_id", id.AgentID(), "renew_at", at, "cert_not_after", id.NotAfter())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		err := renewOnce(ctx, id, h)
		if err == nil {
			log.InfoContext(ctx, "certificate renewed", "agent_id", id.AgentID(), "cert_not_after", id.NotAfter())
			backoff = time.Minute
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		retry := hubclient.Jitter(backoff)
		log.WarnContext(ctx, "certificate renewal failed; retrying", "agent_id", id.AgentID(), "retry_in_seconds", retry.Seconds(), "cert_not_after", id.NotAfter(), "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
		backoff = min(backoff*2, time.Hour)
	}
}

func renewOnce(ctx context.Context, id *identity.Identity, h hub) error {
	key, csr, err := identity.NewKey(id.AgentID())
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	resp, err := h.Renew(cctx, csr)
	if err != nil {
		return err
	}
	if resp.Certificate == "" {
		return errors.New("hub answered without a certificate")
	}
	if err := id.Replace(key, []byte(resp.Certificate)); err != nil {
		return err
	}
	h.ResetConnections()
	return nil
}
