// Package lease runs each background duty of the hub (scheduler, garbage collection,
// verification, stale-job reaper) on exactly one of the hubs that share a catalog, through a
// lease row per duty that its holder renews and that expires when the holder dies.
package lease

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// store keeps the leases. Every method is one conditional statement, safe to call from several
// hubs at once; errors are transient (the catalog unreachable) and the caller retries.
type store interface {
	// AcquireLease takes the lease if it is free or expired at now; it reports whether it did.
	AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error)
	// RenewLease extends the lease if holder still holds it; it reports whether it did.
	RenewLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error)
	// ReleaseLease gives the lease up if holder holds it.
	ReleaseLease(ctx context.Context, name, holder string) error
}

// Options tunes a Manager.
type Options struct {
	// Holder names this hub in the lease rows; default host name and process id, which differ
	// between two hubs on one machine and between a hub and its restart.
	Holder string
	// TTL is how long a lease outlives its holder's last renewal, and so how long a duty stays
	// undone after its hub dies (default 30s). Holders renew every TTL/3. The clocks of the hubs
	// must agree to well within TTL/3.
	TTL time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

// Manager holds the leases of this hub.
type Manager struct {
	st   store
	log  *slog.Logger
	opts Options
	held *prometheus.GaugeVec
}

// New returns a Manager; reg, when set, receives sendense_hub_lease_held{duty}.
func New(st store, log *slog.Logger, reg prometheus.Registerer, opts Options) *Manager {
	if opts.TTL <= 0 {
		opts.TTL = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Holder == "" {
		host, _ := os.Hostname()
		opts.Holder = fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano())
	}
	m := &Manager{st: st, log: log, opts: opts, held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sendense_hub_lease_held",
		Help: "1 while this hub holds the lease of a background duty and runs it, else 0.",
	}, []string{"duty"})}
	if reg != nil {
		reg.MustRegister(m.held)
	}
	return m
}

// Holder is the name this hub holds leases under.
func (m *Manager) Holder() string { return m.opts.Holder }

// Run runs duty while this hub holds the lease name, until ctx ends. It tries to take the lease
// every TTL/3; once it has it, it starts duty and renews the lease every TTL/3. When the lease is
// lost (another hub took it over after a renewal failed to reach the catalog in time) it cancels
// duty's context and waits for duty to return before trying again, so that two hubs never run
// the duty at once for longer than their clocks disagree. When ctx ends it stops duty and
// releases the lease so that another hub takes over at once. A duty that returns on its own
// releases the lease; a non-nil error is returned.
func (m *Manager) Run(ctx context.Context, name string, duty func(context.Context) error) error {
	every := m.opts.TTL / 3
	m.held.WithLabelValues(name).Set(0)
	for {
		ok, err := m.st.AcquireLease(ctx, name, m.opts.Holder, m.opts.Now(), m.opts.TTL)
		switch {
		case err != nil && ctx.Err() == nil:
			m.log.WarnContext(ctx, "take lease", "duty", name, "err", err)
		case ok:
			if err := m.hold(ctx, name, duty); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

func (m *Manager) hold(ctx context.Context, name string, duty func(context.Context) error) error {
	expires := m.opts.Now().Add(m.opts.TTL)
	every := m.opts.TTL / 3
	m.log.InfoContext(ctx, "lease taken: running duty", "duty", name, "holder", m.opts.Holder)
	m.held.WithLabelValues(name).Set(1)
	defer m.held.WithLabelValues(name).Set(0)
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- duty(dctx) }()
	release := func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		if err := m.st.ReleaseLease(rctx, name, m.opts.Holder); err != nil {
			m.log.WarnContext(ctx, "release lease", "duty", name, "err", err)
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			release()
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("duty %s: %w", name, err)
			}
			return nil
		case <-ctx.Done():
			cancel()
			<-done
			release()
			return nil
		case <-t.C:
		}
		now := m.opts.Now()
		ok, err := m.st.RenewLease(ctx, name, m.opts.Holder, now, m.opts.TTL)
		switch {
		case err == nil && ok:
			expires = now.Add(m.opts.TTL)
			continue
		case err == nil:
			m.log.WarnContext(ctx, "lease lost to another hub: duty stopped", "duty", name)
		case now.Add(every).Before(expires):
			// Still a renewal left before the lease can expire: keep the duty running.
			m.log.WarnContext(ctx, "renew lease", "duty", name, "err", err)
			continue
		default:
			m.log.WarnContext(ctx, "lease about to expire without renewal: duty stopped", "duty", name, "err", err)
		}
		cancel()
		<-done
		return nil
	}
}
