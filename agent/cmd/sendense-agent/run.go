package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/agent/internal/backup"
	"github.com/sendense/sendense/agent/internal/config"
	"github.com/sendense/sendense/agent/internal/daemon"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/instant"
	"github.com/sendense/sendense/agent/internal/restore"
	"github.com/sendense/sendense/agent/internal/sources"
	"github.com/sendense/sendense/shared/httpserve"
	"github.com/sendense/sendense/shared/version"
)

func newRunCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the agent daemon: heartbeats, certificate renewal, discovery, backups and restores",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			return runDaemon(cmd.Context(), cfg, cfg.NewLogger(e.stderr))
		},
	}
}

func runDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if os.Getenv("GOMEMLIMIT") == "" {
		// The upload buffers (with their compression buffers), one budget shared by every job, are
		// the agent's working set; a soft limit just above them makes the garbage collector run
		// before the heap doubles (the default GOGC behaviour). 24 MiB covers the rest: about
		// 10 MiB of heap (the buffers of up to some 40 connections to the hub, TLS, inventory)
		// and the runtime's own, and leaves the collector room. With none left (the rest
		// outgrowing its share) it runs on nearly every allocation; a larger inventory makes it
		// work harder, not fail.
		debug.SetMemoryLimit(int64(cfg.UploadMemoryMiB+24) << 20)
	}
	reg := prometheus.NewRegistry()
	pm := newProcessMetrics(reg)
	id, hc, err := connect(cfg, log, hubclient.Options{Retries: pm.hubRetries})
	if err != nil {
		return err
	}
	m := daemon.NewMetrics(reg, id)
	srcs := sources.New(cfg.Sources, cfg.StateDir, log)
	defer srcs.Close(context.WithoutCancel(ctx))
	runner := backup.NewRunner(hc, lookupSource(srcs), log, backup.NewMetrics(reg), backup.RunnerOptions{
		AgentID: id.AgentID(),
		Upload:  backup.UploadOptions{MaxInFlight: int64(cfg.UploadMemoryMiB) << 20},
	})
	g, gctx := errgroup.WithContext(ctx)
	if cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		if cfg.Pprof {
			httpserve.Pprof(mux)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error { return httpserve.Serve(gctx, srv, ln, 10*time.Second) })
		log.InfoContext(ctx, "metrics listening", "addr", ln.Addr().String())
	}
	g.Go(func() error { return daemon.Heartbeat(gctx, hc, cfg.HeartbeatInterval, m, log) })
	g.Go(func() error { return daemon.Renewal(gctx, id, hc, nil, log) })
	if len(cfg.Sources) > 0 {
		var discover []daemon.Source
		var reap []backup.SnapshotSource
		for _, c := range srcs.All() {
			discover = append(discover, c)
			reap = append(reap, c)
		}
		dm := daemon.NewDiscoveryMetrics(reg)
		g.Go(func() error {
			return daemon.Discovery(gctx, discover, hc, cfg.DiscoveryInterval, cfg.StateDir, dm, log)
		})
		g.Go(func() error {
			return backup.ReapSnapshots(gctx, reap, hc, id.AgentID(), runner.Busy, 10*time.Minute, log)
		})
		g.Go(func() error { return daemon.Jobs(gctx, hc, runner, cfg.MaxParallelJobs, log) })
		restores := restore.NewRunner(hc, restoreTarget(srcs), log, restore.Options{})
		// Restores have their own loop: a queued restore does not wait for a backup slot.
		g.Go(func() error { return daemon.Restores(gctx, hc, restores, cfg.MaxParallelJobs, log) })
		irs := instant.NewRunner(hc, instantTarget(srcs), log)
		g.Go(func() error { return daemon.InstantRecoveries(gctx, hc, irs, cfg.MaxParallelJobs, log) })
	} else {
		log.WarnContext(ctx, "no sources configured: the agent only heartbeats; add sources to the configuration to discover and back up VMs")
	}
	log.InfoContext(ctx, "agent running", "agent_id", id.AgentID(), "hub", id.HubURL(), "cert_not_after", id.NotAfter(), "version", version.Get().Version)
	err = g.Wait()
	log.InfoContext(context.WithoutCancel(ctx), "agent stopped", "err", err)
	return err
}

// lookupSource resolves a job's source name for the backup runner.
func lookupSource(srcs *sources.Set) func(name string) (backup.Source, error) {
	return func(name string) (backup.Source, error) {
		c, err := srcs.Get(name)
		if err != nil {
			return nil, err // not a nil *Conn inside a non-nil interface
		}
		return c, nil
	}
}

// restoreTarget resolves a restore's source name to its connected vCenter.
func instantTarget(srcs *sources.Set) func(ctx context.Context, name string) (instant.Target, error) {
	return func(ctx context.Context, name string) (instant.Target, error) {
		c, err := srcs.Get(name)
		if err != nil {
			return nil, err
		}
		cl, err := c.Client(ctx)
		if err != nil {
			return nil, err // not a nil *vsphere.Client inside a non-nil interface
		}
		return cl, nil
	}
}

func restoreTarget(srcs *sources.Set) func(ctx context.Context, name string) (restore.Target, error) {
	return func(ctx context.Context, name string) (restore.Target, error) {
		c, err := srcs.Get(name)
		if err != nil {
			return nil, err
		}
		cl, err := c.Client(ctx)
		if err != nil {
			return nil, err // not a nil *vsphere.Client inside a non-nil interface
		}
		return cl, nil
	}
}
