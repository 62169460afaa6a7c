package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/sendense/sendense/hub/internal/accounts"
	"github.com/sendense/sendense/hub/internal/api"
	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/config"
	"github.com/sendense/sendense/hub/internal/connlimit"
	"github.com/sendense/sendense/hub/internal/console"
	"github.com/sendense/sendense/hub/internal/copies"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/gc"
	"github.com/sendense/sendense/hub/internal/identity"
	"github.com/sendense/sendense/hub/internal/ingest"
	"github.com/sendense/sendense/hub/internal/instantrecovery"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/lease"
	"github.com/sendense/sendense/hub/internal/nfsexport"
	"github.com/sendense/sendense/hub/internal/pki"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/portmap"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/hub/internal/verify"
	wire "github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/httpserve"
	"github.com/sendense/sendense/shared/version"
)

func newServeCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the hub: HTTPS API, catalog migrations, metrics",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, cfg.NewLogger(e.stderr))
		},
	}
}

// openCatalog opens the configured catalog (SQLite in the data dir unless a DSN is set); log and
// reg may be nil.
func openCatalog(ctx context.Context, cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*catalog.Catalog, error) {
	pw, err := cfg.DBPassword()
	if err != nil {
		return nil, err
	}
	if cfg.DB == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
	}
	return catalog.Open(ctx, catalog.Options{MySQLDSN: cfg.DB, MySQLPassword: pw, SQLitePath: cfg.SQLitePath(), Log: log, Registerer: reg})
}

func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	started := time.Now()
	// Once chunk uploads have stopped for a while, their garbage (up to the soft limit below)
	// goes back to the system at once rather than over minutes: the next backups, and other
	// programs, start from what the hub holds.
	intake := ingest.Options{UploadMemory: cfg.ChunkUploadMemoryMiB << 20, OnIdle: debug.FreeOSMemory}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The chunk uploads' buffers, one budget for all agents, are the hub's working set while
		// backups stream; a soft limit above them makes the garbage collector run before the
		// heap doubles (the default GOGC behaviour). 64 MiB covers the rest of an ordinary
		// day: the catalog, connections, restores. Index-sized work (parent indexes, known
		// sets, commits: up to 1 GiB for disks of many TiB) raises the limit by its estimate
		// while it runs, and the known sets kept for open sessions while they are kept. Work
		// beyond all that makes the collector run more often, not fail.
		base := (cfg.ChunkUploadMemoryMiB + 64) << 20
		debug.SetMemoryLimit(base)
		intake.OnIndexMemory = func(inUse int64) { debug.SetMemoryLimit(base + inUse) }
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo("sendense_hub_build_info"),
	)
	cat, err := openCatalog(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer cat.Close()
	if _, err := cat.MigrateUp(ctx, log); err != nil {
		return err
	}
	ca, err := loadCA(ctx, cfg, cat, log)
	if err != nil {
		return err
	}
	cert, err := ca.ServerCertificate(cfg.TLSNames)
	if err != nil {
		return err
	}
	reg.MustRegister(certExpiry(ca.Cert, cert.Leaf))
	repos := repository.NewRegistry(cat, log, reg)
	repos.SetDurability(repository.Durability(cfg.ChunkDurability))
	defer repos.Close()
	_, defRepo, err := repos.EnsureDefault(ctx, cfg.DefaultRepoPath())
	if err != nil {
		return fmt.Errorf("default repository: %w", err)
	}
	// Open (and unlock) every repository now, so that a missing or wrong password file shows
	// at start, naming the repository, rather than at the first backup into it.
	if recs, err := repos.List(ctx); err == nil {
		for _, rec := range recs {
			if _, err := repos.Open(ctx, rec.ID); err != nil {
				log.ErrorContext(ctx, "repository cannot be opened", "repository", rec.Name, "err", err)
			}
		}
	}

	ids := identity.New(cat, ca, log, reg, identity.Options{HubURL: hubURL(cfg), CertLifetime: cfg.AgentCertLifetime})
	inv := inventory.New(cat, log, reg)
	backups := jobs.New(cat, repos, log, reg, jobs.Options{JobTimeout: cfg.JobTimeout})
	restores := restore.New(cat, restoreRepos(repos), reg)
	restores.SetLogger(log)
	tests := restoretest.New(cat, restores, log, reg, restoretest.Options{})
	policies := policy.New(cat, backups, tests, log, reg, nil)
	copyOpen := func(ctx context.Context, id string) (copies.Repository, error) { return repos.Open(ctx, id) }
	policies.SetCopies(copies.New(cat, copyOpen, log, 8), backups)
	collector := gc.New(cat, gcRepos(repos), log, reg)
	verifier := verify.New(cat, verifyRepos(repos), log, reg, 2)
	backups.OnFinished = func(j catalog.BackupJob) {
		if j.PolicyID == "" || j.Status != wire.JobSucceeded {
			return
		}
		// Prune after each scheduled backup, off the agent's request.
		go func() {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
			defer cancel()
			policies.PruneVM(pctx, j.VMContextID)
		}()
	}
	evs := events.New(cat, log)
	fileSvc := files.NewService(restores, reg)
	cons, err := console.New(console.Deps{Log: log, Accounts: accounts.New(cat, log, accounts.Options{}), VMs: inv, Backups: backups, Images: restores, Restores: backups,
		Policies: policies, Agents: ids, Repositories: repos, Events: evs, Verify: verifier, Files: fileSvc, RestoreTests: tests, Status: api.StatusOf,
		Certificates: map[string]time.Time{"ca": ca.Cert.NotAfter, "server": cert.Leaf.NotAfter}})
	if err != nil {
		return err
	}
	deps := api.Deps{Log: log, Registry: reg, Catalog: cat, Repository: defRepo, Identity: ids, Inventory: inv, Backup: backups, Restores: backups, Ingest: ingest.New(cat, repos, log, reg, intake), Restore: restores, Files: fileSvc, Repositories: repos, Verify: verifier, Policies: policies, RestoreTests: tests, Events: evs, Started: started,
		Limits:  api.Limits{BodyTimeout: cfg.RequestBodyTimeout, UploadMinRate: cfg.UploadMinKiBPerSecond << 10},
		Console: cons, ConsolePaths: console.Paths()}
	var nfsSrv *nfsexport.Server
	var nfsln, pmTCP net.Listener
	var pmUDP net.PacketConn
	var syncIRs *instantrecovery.Service
	if cfg.NFSListen != "" {
		if nfsSrv, err = nfsexport.New(filepath.Join(cfg.DataDir, "instant-recovery"), log); err != nil {
			return err
		}
		irs := instantrecovery.New(cat, restores, backups, nfsSrv, backups, log, reg, instantrecovery.Options{
			NFSAddress: cfg.NFSAddress, OverlayLimit: cfg.OverlayLimitGiB << 30,
		})
		// The sessions the catalog says are active are served again before anyone can ask.
		if err := irs.Restore(ctx); err != nil {
			return fmt.Errorf("instant recovery: %w", err)
		}
		if nfsln, err = net.Listen("tcp", cfg.NFSListen); err != nil {
			return fmt.Errorf("listen %s: %w", cfg.NFSListen, err)
		}
		defer nfsln.Close()
		if cfg.NFSPortmapListen != "" {
			if pmTCP, err = net.Listen("tcp", cfg.NFSPortmapListen); err != nil {
				return fmt.Errorf("listen %s: %w", cfg.NFSPortmapListen, err)
			}
			defer pmTCP.Close()
			// The same port on UDP (":0" would pick a different one), as clients expect.
			udpAddr := cfg.NFSPortmapListen
			if h, p, _ := net.SplitHostPort(udpAddr); p == "0" {
				_, p, _ = net.SplitHostPort(pmTCP.Addr().String())
				udpAddr = net.JoinHostPort(h, p)
			}
			if pmUDP, err = net.ListenPacket("udp", udpAddr); err != nil {
				return fmt.Errorf("listen udp %s: %w", udpAddr, err)
			}
			defer pmUDP.Close()
		}
		deps.InstantRecoveries = irs
		tests.EnableBoot(irs, backups)
		cons.SetInstantRecoveries(irs)
		syncIRs = irs
	}
	apiSrv := api.New(deps)

	tcpln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	ln := connlimit.New(tcpln, connlimit.Options{MaxConns: cfg.MaxConnections, MaxConnsPerAddress: cfg.MaxConnectionsPerAddress}, log, reg)
	var mln net.Listener
	metricsAddr := ""
	if cfg.MetricsListen != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			_ = ln.Close()
			return fmt.Errorf("listen %s: %w", cfg.MetricsListen, err)
		}
	}
	// No ReadTimeout or WriteTimeout: a 4 MiB chunk over a slow link and a disk image streamed
	// to a slow reader must not be cut by a fixed bound on the whole request. Bodies are bounded
	// per route by the API (request_body_timeout, upload_min_kib_per_second), connections by
	// connlimit.
	httpSrv := &http.Server{
		Handler:           apiSrv.Handler(),
		TLSConfig:         serverTLS(ca, cert),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	httpSrv.RegisterOnShutdown(apiSrv.Drain)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return httpserve.Serve(gctx, httpSrv, ln, cfg.ShutdownTimeout) })
	// Of several hubs sharing the catalog, one runs each background duty, under a lease. Restore
	// tests are not leased: each is claimed on its own, so that hubs share the work; the prune
	// after a scheduled backup runs on the hub that took the backup's end.
	leases := lease.New(cat, log, reg, lease.Options{TTL: cfg.LeaseTTL})
	g.Go(func() error {
		return leases.Run(gctx, "reaper", func(ctx context.Context) error {
			return backups.ReapStale(ctx, min(30*time.Second, cfg.JobTimeout/4))
		})
	})
	g.Go(func() error {
		return leases.Run(gctx, "scheduler", func(ctx context.Context) error { return policies.Run(ctx, cfg.SchedulerInterval) })
	})
	g.Go(func() error { return tests.Run(gctx, cfg.SchedulerInterval) })
	g.Go(func() error {
		// Repository size for the metrics until the first collection; a large repository takes
		// a while to walk, so in the background.
		if err := collector.Measure(gctx); err != nil && gctx.Err() == nil {
			log.WarnContext(gctx, "measure repositories", "err", err)
		}
		return nil
	})
	if cfg.VerifyInterval > 0 {
		g.Go(func() error {
			return leases.Run(gctx, "verify", func(ctx context.Context) error { return verifier.Schedule(ctx, cfg.VerifyInterval) })
		})
	}
	if cfg.GCInterval > 0 {
		g.Go(func() error {
			return leases.Run(gctx, "gc", func(ctx context.Context) error { return collector.Schedule(ctx, cfg.GCInterval, cfg.GCGrace) })
		})
	}
	nfsAddr, portmapAddr := "", ""
	if nfsln != nil {
		g.Go(func() error { return nfsSrv.Serve(gctx, nfsln) })
		g.Go(func() error { return syncIRs.Run(gctx, cfg.SchedulerInterval) })
		nfsAddr = nfsln.Addr().String()
		if pmTCP != nil {
			pm := portmap.New(portmap.NFS(uint16(nfsln.Addr().(*net.TCPAddr).Port), uint16(pmTCP.Addr().(*net.TCPAddr).Port)), nfsSrv.Allows, log)
			g.Go(func() error { return pm.ServeTCP(gctx, pmTCP) })
			g.Go(func() error { return pm.ServeUDP(gctx, pmUDP) })
			portmapAddr = pmTCP.Addr().String()
		}
	}
	if mln != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		if cfg.Pprof {
			httpserve.Pprof(mux)
		}
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error { return httpserve.Serve(gctx, msrv, mln, cfg.ShutdownTimeout) })
		metricsAddr = mln.Addr().String()
		log.InfoContext(ctx, "metrics listening", "addr", metricsAddr)
	}
	// Both listeners are open before this line: whoever waits for it (tests, scripts) can read
	// every address from it at once.
	log.InfoContext(ctx, "hub listening", "addr", ln.Addr().String(), "metrics_addr", metricsAddr, "nfs_addr", nfsAddr, "portmap_addr", portmapAddr, "tls", "1.3",
		"catalog", cat.Driver(), "data_dir", cfg.DataDir, "ca_fingerprint", ca.Fingerprint(), "version", version.Get().Version)
	err = g.Wait()
	log.InfoContext(context.WithoutCancel(ctx), "hub stopped", "err", err)
	return err
}

// serverTLS accepts TLS 1.3 only. Client certificates are optional at the handshake (enrollment
// and operator routes have none) but, when presented, must chain to the hub CA; the API decides
// per route whether one is required.
func serverTLS(ca *pki.CA, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
	}
}

// certExpiry exports the expiry of the hub's CA and server certificates.
func certExpiry(ca, server *x509.Certificate) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sendense_hub_certificate_expiry_timestamp_seconds",
		Help: "Unix time at which the hub's certificates expire (certificate: ca, server).",
	}, []string{"certificate"})
	g.WithLabelValues("ca").Set(float64(ca.NotAfter.Unix()))
	if server != nil {
		g.WithLabelValues("server").Set(float64(server.NotAfter.Unix()))
	}
	return g
}

func buildInfo(name string) prometheus.Collector {
	v := version.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        name,
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "goversion": v.GoVersion},
	})
	g.Set(1)
	return g
}
