// Package config loads and validates the hub's configuration: defaults, then a YAML file, then
// SENDENSE_HUB_* environment variables, then command-line flags, checked before anything is
// created on disk or any socket opens.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/sendense/sendense/hub/internal/connlimit"
	"github.com/sendense/sendense/hub/internal/ingest"
)

// EnvPrefix prefixes every environment variable: flag --data-dir ↔ SENDENSE_HUB_DATA_DIR.
const EnvPrefix = "SENDENSE_HUB_"

// Config is the hub's configuration. Every key can be set in the YAML file (its yaml name), the
// environment and a flag.
type Config struct {
	// Listen is the HTTPS API address (TLS 1.3 only).
	Listen string `yaml:"listen"`
	// DataDir holds the SQLite catalog, the CA and the default repository.
	DataDir string `yaml:"data_dir"`
	// DB is a MySQL/MariaDB DSN; empty selects the embedded SQLite catalog in DataDir.
	DB string `yaml:"db"`
	// DBPasswordFile holds the MySQL password so that it need not appear in the DSN.
	DBPasswordFile string `yaml:"db_password_file"`
	// HubKeyFile holds the hub key (64 hex digits) that seals the CA kept in the catalog, so that
	// several hubs sharing the catalog share the CA. SENDENSE_HUB_KEY may give the key itself
	// instead. Without a key, the CA stays in files in the data directory (one hub).
	HubKeyFile string `yaml:"hub_key_file"`
	// hubKeyEnv is the key from SENDENSE_HUB_KEY.
	hubKeyEnv string
	// PublicURL is the address agents use to reach this hub; it is written into join tokens.
	PublicURL string `yaml:"public_url"`
	// TLSNames are extra DNS names and IP addresses for the hub's server certificate.
	TLSNames []string `yaml:"tls_names"`
	// MetricsListen is the plain-HTTP Prometheus address; empty disables it.
	MetricsListen string `yaml:"metrics_listen"`
	// ShutdownTimeout bounds how long in-flight requests may drain after SIGTERM.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// AgentCertLifetime is the lifetime of agent client certificates.
	AgentCertLifetime time.Duration `yaml:"agent_cert_lifetime"`
	// JobTimeout fails a running backup whose agent has not reported for this long, and a
	// queued one whose agent was revoked or has not been seen for this long.
	JobTimeout time.Duration `yaml:"job_timeout"`
	// SchedulerInterval is how often the scheduler looks for due policies.
	SchedulerInterval time.Duration `yaml:"scheduler_interval"`
	// GCInterval is how often garbage collection runs (0 disables the schedule); GCGrace is the
	// age below which an unreferenced chunk is kept.
	GCInterval time.Duration `yaml:"gc_interval"`
	GCGrace    time.Duration `yaml:"gc_grace"`
	// VerifyInterval is how often every successful backup's chunks are re-read and re-hashed
	// (0 disables the schedule; `sendense-hub repo verify` runs it on demand).
	VerifyInterval time.Duration `yaml:"verify_interval"`
	// LeaseTTL is how long the lease of a background duty (scheduler, GC, verification, reaper)
	// outlives its hub's last renewal: of several hubs sharing the catalog one runs each duty,
	// and another takes it over this long after that hub dies.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// ChunkDurability is when stored chunks are made durable: "commit" (one sync of the
	// repository's file system before each disk's index is written) or "chunk" (an fsync of
	// every chunk and its directory before its upload is acknowledged).
	ChunkDurability string `yaml:"chunk_durability"`
	// MaxConnections caps the API listener's open connections in total, MaxConnectionsPerAddress
	// those from one client IP address; 0 selects the default (connlimit.DefaultMaxConns,
	// connlimit.DefaultMaxConnsPerAddress, where their sizing is explained). The caps act before
	// TLS, on every client alike.
	MaxConnections           int `yaml:"max_connections"`
	MaxConnectionsPerAddress int `yaml:"max_connections_per_address"`
	// RequestBodyTimeout is the time allowed for the whole body of a request (enrollment,
	// heartbeats, operator requests), and the grace before UploadMinKiBPerSecond applies to
	// uploads.
	RequestBodyTimeout time.Duration `yaml:"request_body_timeout"`
	// UploadMinKiBPerSecond is the lowest average rate of an upload body (chunks, slot batches,
	// inventories) after RequestBodyTimeout; a slower one is cut.
	UploadMinKiBPerSecond int64 `yaml:"upload_min_kib_per_second"`
	// ChunkUploadMemoryMiB bounds the memory the chunk uploads of all agents together hold; an
	// upload beyond it waits (see ingest.DefaultUploadMemory).
	ChunkUploadMemoryMiB int64 `yaml:"chunk_upload_memory_mib"`
	// NFSListen is the NFSv3 address of instant recovery (MOUNT and NFS on one TCP port;
	// ESXi mounts on 2049); empty turns instant recovery off.
	NFSListen string `yaml:"nfs_listen"`
	// NFSAddress is this hub's address as the ESXi hosts reach the NFS listener (a name or IP).
	NFSAddress string `yaml:"nfs_address"`
	// NFSPortmapListen is the address of the portmapper (TCP and UDP) that tells NFS clients
	// the port of nfs_listen; ESXi asks port 111. Empty serves none.
	NFSPortmapListen string `yaml:"nfs_portmap_listen"`
	// OverlayLimitGiB bounds the copy-on-write overlay of each instant-recovery session.
	OverlayLimitGiB int64 `yaml:"instant_recovery_overlay_limit_gib"`
	// Pprof serves Go's profiler at /debug/pprof/ on the metrics listener (loopback by default).
	Pprof bool `yaml:"pprof"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format"`
}

// Default returns the configuration used when nothing is set: embedded SQLite in ./sendense-data.
func Default() Config {
	return Config{
		Listen:            ":8082",
		DataDir:           "./sendense-data",
		MetricsListen:     "127.0.0.1:9082",
		ShutdownTimeout:   30 * time.Second,
		AgentCertLifetime: 30 * 24 * time.Hour,
		JobTimeout:        10 * time.Minute,
		SchedulerInterval: 15 * time.Second,
		GCInterval:        24 * time.Hour,
		GCGrace:           24 * time.Hour,
		VerifyInterval:    7 * 24 * time.Hour,
		LeaseTTL:          30 * time.Second,
		ChunkDurability:   "commit",
		// See connlimit for why these fit every legitimate client.
		MaxConnections:           connlimit.DefaultMaxConns,
		MaxConnectionsPerAddress: connlimit.DefaultMaxConnsPerAddress,
		// Bodies other than uploads are a few KiB.
		RequestBodyTimeout: 10 * time.Second,
		// The agent gives up on a call after 2 minutes, so it never completes a 4 MiB chunk
		// below 34 KiB/s: a quarter of that never cuts an upload the agent would have finished
		// (the API's own default, api.DefaultUploadMinRate, is the same).
		UploadMinKiBPerSecond: 8,
		ChunkUploadMemoryMiB:  ingest.DefaultUploadMemory >> 20,
		OverlayLimitGiB:       64,
		LogLevel:              "info",
		LogFormat:             "text",
	}
}

// BindFlags registers one flag per configuration key on fs, writing into c.
func BindFlags(fs *pflag.FlagSet, c *Config) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "HTTPS API listen address (TLS 1.3)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the SQLite catalog, the CA and the default repository")
	fs.StringVar(&c.DB, "db", c.DB, "MySQL/MariaDB DSN user@tcp(host:3306)/db?tls=true, the password in --db-password-file (default: embedded SQLite)")
	fs.StringVar(&c.DBPasswordFile, "db-password-file", c.DBPasswordFile, "file holding the MySQL password")
	fs.StringVar(&c.HubKeyFile, "hub-key-file", c.HubKeyFile, "file holding the hub key that seals the CA shared in the catalog (or SENDENSE_HUB_KEY)")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "URL agents use to reach the hub (default https://<hostname>:<port>)")
	fs.StringSliceVar(&c.TLSNames, "tls-names", c.TLSNames, "extra DNS names/IPs for the server certificate")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "plain-HTTP /metrics listen address (empty disables)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long in-flight requests may drain on shutdown")
	fs.DurationVar(&c.AgentCertLifetime, "agent-cert-lifetime", c.AgentCertLifetime, "lifetime of agent client certificates")
	fs.DurationVar(&c.JobTimeout, "job-timeout", c.JobTimeout, "fail a running backup whose agent has not reported for this long")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "how long a dead hub's background duties wait before another hub takes them over")
	fs.DurationVar(&c.SchedulerInterval, "scheduler-interval", c.SchedulerInterval, "how often due policies are looked for")
	fs.DurationVar(&c.GCInterval, "gc-interval", c.GCInterval, "how often garbage collection runs (0 disables)")
	fs.DurationVar(&c.GCGrace, "gc-grace", c.GCGrace, "unreferenced chunks younger than this are kept")
	fs.DurationVar(&c.VerifyInterval, "verify-interval", c.VerifyInterval, "how often all backups are verified (0 disables)")
	fs.StringVar(&c.ChunkDurability, "chunk-durability", c.ChunkDurability, "when chunks are made durable: commit (one sync per disk before its index) or chunk (fsync per chunk)")
	fs.IntVar(&c.MaxConnections, "max-connections", c.MaxConnections, "cap on open API connections (0: 4096)")
	fs.IntVar(&c.MaxConnectionsPerAddress, "max-connections-per-address", c.MaxConnectionsPerAddress, "cap on open API connections from one client IP address (0: 128)")
	fs.DurationVar(&c.RequestBodyTimeout, "request-body-timeout", c.RequestBodyTimeout, "time allowed for a whole request body; the grace before the upload minimum rate applies")
	fs.Int64Var(&c.UploadMinKiBPerSecond, "upload-min-kib-per-second", c.UploadMinKiBPerSecond, "lowest average rate of an upload body (KiB/s); a slower one is cut")
	fs.Int64Var(&c.ChunkUploadMemoryMiB, "chunk-upload-memory-mib", c.ChunkUploadMemoryMiB, "memory the chunk uploads of all agents together may hold (MiB); an upload beyond it waits")
	fs.StringVar(&c.NFSListen, "nfs-listen", c.NFSListen, "instant recovery's NFSv3 listen address (ESXi mounts on port 2049; empty turns instant recovery off)")
	fs.StringVar(&c.NFSPortmapListen, "nfs-portmap-listen", c.NFSPortmapListen, "portmapper address (TCP and UDP; ESXi asks port 111) telling NFS clients the port of nfs_listen; empty serves none")
	fs.StringVar(&c.NFSAddress, "nfs-address", c.NFSAddress, "this hub's address as the ESXi hosts reach the NFS listener")
	fs.Int64Var(&c.OverlayLimitGiB, "instant-recovery-overlay-limit-gib", c.OverlayLimitGiB, "bound of each instant-recovery session's copy-on-write overlay (GiB)")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "serve /debug/pprof/ on the metrics listener")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
}

// Load builds the configuration: defaults, then the YAML file at path (if any), then environment
// variables, then the flags of set that were given on the command line. It validates the result.
func Load(path string, getenv func(string) string, set *pflag.FlagSet) (*Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := decodeYAML(b, &c); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	bound := pflag.NewFlagSet("config", pflag.ContinueOnError)
	BindFlags(bound, &c)
	if err := applyEnv(bound, getenv); err != nil {
		return nil, err
	}
	if set != nil {
		if err := applyFlags(bound, set); err != nil {
			return nil, err
		}
	}
	c.hubKeyEnv = getenv(EnvHubKey)
	if c.hubKeyEnv != "" && c.HubKeyFile != "" {
		return nil, &FieldError{"hub_key_file", "set together with " + EnvHubKey + "; give the hub key one way"}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func decodeYAML(b []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// EnvName is the environment variable for a flag name.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func applyEnv(bound *pflag.FlagSet, getenv func(string) string) error {
	var err error
	bound.VisitAll(func(f *pflag.Flag) {
		if err != nil {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if sv, ok := f.Value.(pflag.SliceValue); ok {
				err = sv.Replace(strings.Split(v, ","))
			} else {
				err = f.Value.Set(v)
			}
			if err != nil {
				err = fmt.Errorf("config: %s: %w", EnvName(f.Name), err)
			}
		}
	})
	return err
}

func applyFlags(bound, set *pflag.FlagSet) error {
	var err error
	set.Visit(func(f *pflag.Flag) {
		dst := bound.Lookup(f.Name)
		if dst == nil || err != nil {
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			err = dst.Value.(pflag.SliceValue).Replace(sv.GetSlice())
		} else {
			err = dst.Value.Set(f.Value.String())
		}
		if err != nil {
			err = fmt.Errorf("config: --%s: %w", f.Name, err)
		}
	})
	return err
}

// FieldError is a validation failure naming the configuration key.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("config: %s: %s", e.Field, e.Msg) }

// Validate checks every key; the error names the first bad one.
func (c *Config) Validate() error {
	if err := checkHostPort(c.Listen, false); err != nil {
		return &FieldError{"listen", err.Error()}
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return &FieldError{"data_dir", "must not be empty"}
	}
	if c.MetricsListen != "" {
		if err := checkHostPort(c.MetricsListen, false); err != nil {
			return &FieldError{"metrics_listen", err.Error()}
		}
	}
	if c.DBPasswordFile != "" && c.DB == "" {
		return &FieldError{"db_password_file", "set without db"}
	}
	if c.DBPasswordFile != "" {
		if _, err := os.Stat(c.DBPasswordFile); err != nil {
			return &FieldError{"db_password_file", err.Error()}
		}
	}
	if c.HubKeyFile != "" {
		if _, err := os.Stat(c.HubKeyFile); err != nil {
			return &FieldError{"hub_key_file", err.Error()}
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return &FieldError{"public_url", fmt.Sprintf("%q is not an https:// URL", c.PublicURL)}
		}
	}
	for _, n := range c.TLSNames {
		if strings.TrimSpace(n) == "" || strings.ContainsAny(n, " /:") && net.ParseIP(n) == nil {
			return &FieldError{"tls_names", fmt.Sprintf("%q is not a DNS name or IP address", n)}
		}
	}
	if c.ShutdownTimeout <= 0 {
		return &FieldError{"shutdown_timeout", "must be positive"}
	}
	if c.AgentCertLifetime < time.Hour {
		return &FieldError{"agent_cert_lifetime", "must be at least 1h"}
	}
	if c.JobTimeout < 10*time.Second {
		return &FieldError{"job_timeout", "must be at least 10s"}
	}
	if c.LeaseTTL < 3*time.Second {
		return &FieldError{"lease_ttl", "must be at least 3s"}
	}
	if c.SchedulerInterval < time.Second {
		return &FieldError{"scheduler_interval", "must be at least 1s"}
	}
	if c.GCInterval != 0 && c.GCInterval < time.Minute {
		return &FieldError{"gc_interval", "must be 0 (off) or at least 1m"}
	}
	if c.VerifyInterval != 0 && c.VerifyInterval < time.Minute {
		return &FieldError{"verify_interval", "must be 0 (off) or at least 1m"}
	}
	if c.ChunkDurability != "commit" && c.ChunkDurability != "chunk" {
		return &FieldError{"chunk_durability", fmt.Sprintf("%q: must be commit or chunk", c.ChunkDurability)}
	}
	if c.MaxConnections < 0 {
		return &FieldError{"max_connections", "must not be negative (0: the default)"}
	}
	if c.MaxConnectionsPerAddress < 0 {
		return &FieldError{"max_connections_per_address", "must not be negative (0: the default)"}
	}
	if c.MaxConnections > 0 && c.MaxConnectionsPerAddress > c.MaxConnections {
		return &FieldError{"max_connections_per_address", fmt.Sprintf("%d is over max_connections (%d)", c.MaxConnectionsPerAddress, c.MaxConnections)}
	}
	if c.RequestBodyTimeout < time.Second {
		return &FieldError{"request_body_timeout", "must be at least 1s"}
	}
	if c.UploadMinKiBPerSecond < 1 {
		return &FieldError{"upload_min_kib_per_second", "must be at least 1"}
	}
	if c.ChunkUploadMemoryMiB < 16 || c.ChunkUploadMemoryMiB > 1<<20 {
		return &FieldError{"chunk_upload_memory_mib", "must be from 16 (three uploads of 4 MiB chunks) to 1048576"}
	}
	if c.GCGrace < 0 {
		return &FieldError{"gc_grace", "must not be negative"}
	}
	if c.NFSListen != "" {
		if err := checkHostPort(c.NFSListen, false); err != nil {
			return &FieldError{"nfs_listen", err.Error()}
		}
		if strings.TrimSpace(c.NFSAddress) == "" || strings.ContainsAny(c.NFSAddress, " /:") && net.ParseIP(c.NFSAddress) == nil {
			return &FieldError{"nfs_address", fmt.Sprintf("%q is not a DNS name or IP address (required with nfs_listen)", c.NFSAddress)}
		}
	}
	if c.NFSPortmapListen != "" {
		if c.NFSListen == "" {
			return &FieldError{"nfs_portmap_listen", "needs nfs_listen"}
		}
		if err := checkHostPort(c.NFSPortmapListen, false); err != nil {
			return &FieldError{"nfs_portmap_listen", err.Error()}
		}
	}
	if c.OverlayLimitGiB < 1 {
		return &FieldError{"instant_recovery_overlay_limit_gib", "must be at least 1"}
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		return &FieldError{"log_level", err.Error()}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return &FieldError{"log_format", fmt.Sprintf("%q is neither text nor json", c.LogFormat)}
	}
	return nil
}

func checkHostPort(s string, needHost bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if needHost && host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", s)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q: bad port", s)
	}
	return nil
}

// ParseLevel parses a log level name.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
	}
	return l, nil
}

// DBPassword reads the MySQL password file, if one is configured.
func (c *Config) DBPassword() (string, error) {
	if c.DBPasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.DBPasswordFile)
	if err != nil {
		return "", fmt.Errorf("read db_password_file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// EnvHubKey gives the hub key itself, instead of hub_key_file.
const EnvHubKey = EnvPrefix + "KEY"

// HubKey returns the text of the hub key (from SENDENSE_HUB_KEY or hub_key_file), or nil when
// the hub has none.
func (c *Config) HubKey() ([]byte, error) {
	if c.hubKeyEnv != "" {
		return []byte(c.hubKeyEnv), nil
	}
	if c.HubKeyFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.HubKeyFile)
	if err != nil {
		return nil, fmt.Errorf("read hub_key_file: %w", err)
	}
	return b, nil
}

// Paths inside the data directory.
func (c *Config) SQLitePath() string      { return filepath.Join(c.DataDir, "catalog.db") }
func (c *Config) PKIDir() string          { return filepath.Join(c.DataDir, "pki") }
func (c *Config) DefaultRepoPath() string { return filepath.Join(c.DataDir, "repositories", "default") }

// NewLogger builds the slog logger the configuration asks for.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	lvl, _ := ParseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
