// Package config loads and validates the agent's configuration: defaults, then a YAML file, then
// SENDENSE_AGENT_* environment variables, then command-line flags.
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
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix prefixes every environment variable: flag --state-dir ↔ SENDENSE_AGENT_STATE_DIR.
const EnvPrefix = "SENDENSE_AGENT_"

// Config is the agent's configuration.
type Config struct {
	// StateDir holds the identity written by `enroll` and the agent's working state.
	StateDir string `yaml:"state_dir"`
	// HubURL overrides the hub URL recorded at enrollment.
	HubURL string `yaml:"hub_url"`
	// HubURLs are several hubs sharing one catalog and its repositories, instead of hub_url: the
	// agent uses the first and fails over to the next when a hub cannot be reached.
	HubURLs []string `yaml:"hub_urls"`
	// DiscoveryInterval is how often the inventory of every source is pushed.
	DiscoveryInterval time.Duration `yaml:"discovery_interval"`
	// HeartbeatInterval is how often the agent tells the hub it is alive.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// MetricsListen is the plain-HTTP Prometheus address; empty disables it.
	MetricsListen string `yaml:"metrics_listen"`
	// MaxParallelJobs is how many backup jobs run at once.
	MaxParallelJobs int `yaml:"max_parallel_jobs"`
	// UploadMemoryMiB caps the memory of disk data read but not yet acknowledged, shared by
	// every job of the agent.
	UploadMemoryMiB int `yaml:"upload_memory_mib"`
	// Pprof serves Go's profiler at /debug/pprof/ on the metrics listener (loopback by default).
	Pprof bool `yaml:"pprof"`
	// LogLevel is debug, info, warn or error; LogFormat is text or json.
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
	// Sources are the vCenter/ESXi endpoints to protect.
	Sources []Source `yaml:"sources"`
}

// Source is one vCenter or ESXi endpoint.
type Source struct {
	Name         string   `yaml:"name"`
	URL          string   `yaml:"url"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
	Thumbprint   string   `yaml:"thumbprint"`
	CAFile       string   `yaml:"ca_file"`
	Insecure     bool     `yaml:"insecure"`
	Datacenters  []string `yaml:"datacenters"`
	// Transport reads snapshot disks: "https" (datastore /folder access; powered-off VMs and
	// labs), "nbd" (nbdkit, with VMware's VDDK in production) or "file" (datastores mounted on
	// this appliance, see DatastorePaths).
	Transport string `yaml:"transport"`
	// DatastorePaths maps datastore names to local directories for the file transport.
	DatastorePaths map[string]string `yaml:"datastore_paths"`
	// ReadHoles makes the file transport read the holes of sparse disk files too, for a file
	// system whose SEEK_DATA/SEEK_HOLE answers cannot be trusted; by default they are skipped.
	ReadHoles bool `yaml:"read_holes"`
	// NBD configures the nbd transport.
	NBD NBDConfig `yaml:"nbd"`
}

// NBDConfig configures the nbd transport.
type NBDConfig struct {
	// Plugin is "vddk" (production: needs VMware's VDDK in LibDir) or "curl" (reads the
	// snapshot's disk file over datastore HTTPS; for labs).
	Plugin string `yaml:"plugin"`
	// LibDir is the VDDK installation directory (vddk libdir=).
	LibDir string `yaml:"libdir"`
	// Transports is the VDDK transport order, e.g. "nbdssl:nbd" or "hotadd:nbdssl".
	Transports string `yaml:"transports"`
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		StateDir:          "/var/lib/sendense-agent",
		HubURLs:           []string{},
		DiscoveryInterval: 5 * time.Minute,
		HeartbeatInterval: 30 * time.Second,
		MetricsListen:     "127.0.0.1:9083",
		MaxParallelJobs:   1,
		UploadMemoryMiB:   80,
		LogLevel:          "info",
		LogFormat:         "text",
	}
}

// BindFlags registers one flag per scalar configuration key on fs, writing into c.
func BindFlags(fs *pflag.FlagSet, c *Config) {
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory holding the agent identity and state")
	fs.StringVar(&c.HubURL, "hub-url", c.HubURL, "hub URL (default: the one recorded at enrollment)")
	fs.StringSliceVar(&c.HubURLs, "hub-urls", c.HubURLs, "URLs of several hubs sharing one catalog, failed over in order (instead of --hub-url)")
	fs.DurationVar(&c.DiscoveryInterval, "discovery-interval", c.DiscoveryInterval, "how often inventory is pushed")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "how often the agent reports to the hub")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "plain-HTTP /metrics listen address (empty disables)")
	fs.IntVar(&c.MaxParallelJobs, "max-parallel-jobs", c.MaxParallelJobs, "backup jobs run at once")
	fs.IntVar(&c.UploadMemoryMiB, "upload-memory-mib", c.UploadMemoryMiB, "memory cap (MiB) for disk data in flight, shared by all jobs")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "serve /debug/pprof/ on the metrics listener")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
}

// Load builds the configuration from defaults, the YAML file at path (if any), the environment
// and the flags of set that were given, and validates it.
func Load(path string, getenv func(string) string, set *pflag.FlagSet) (*Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	bound := pflag.NewFlagSet("config", pflag.ContinueOnError)
	BindFlags(bound, &c)
	var err error
	bound.VisitAll(func(f *pflag.Flag) {
		name := EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && err == nil {
			if serr := f.Value.Set(v); serr != nil {
				err = fmt.Errorf("config: %s: %w", name, serr)
			}
		}
	})
	if set != nil {
		set.Visit(func(f *pflag.Flag) {
			if dst := bound.Lookup(f.Name); dst != nil && err == nil {
				if serr := dst.Value.Set(f.Value.String()); serr != nil {
					err = fmt.Errorf("config: --%s: %w", f.Name, serr)
				}
			}
		})
	}
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// FieldError names the configuration key that is wrong.
type FieldError struct{ Field, Msg string }

func (e *FieldError) Error() string { return fmt.Sprintf("config: %s: %s", e.Field, e.Msg) }

// Validate checks every key; the error names the first bad one.
func (c *Config) Validate() error {
	if strings.TrimSpace(c.StateDir) == "" {
		return &FieldError{"state_dir", "must not be empty"}
	}
	if c.HubURL != "" {
		if u, err := url.Parse(c.HubURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return &FieldError{"hub_url", fmt.Sprintf("%q is not an https:// URL", c.HubURL)}
		}
	}
	if c.HubURL != "" && len(c.HubURLs) > 0 {
		return &FieldError{"hub_urls", "set together with hub_url; list every hub in hub_urls"}
	}
	for _, h := range c.HubURLs {
		if u, err := url.Parse(h); err != nil || u.Scheme != "https" || u.Host == "" {
			return &FieldError{"hub_urls", fmt.Sprintf("%q is not an https:// URL", h)}
		}
	}
	if c.DiscoveryInterval < 10*time.Second {
		return &FieldError{"discovery_interval", "must be at least 10s"}
	}
	if c.HeartbeatInterval < time.Second {
		return &FieldError{"heartbeat_interval", "must be at least 1s"}
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return &FieldError{"metrics_listen", fmt.Sprintf("%q is not host:port", c.MetricsListen)}
		}
	}
	if c.MaxParallelJobs < 1 || c.MaxParallelJobs > 16 {
		return &FieldError{"max_parallel_jobs", "must be between 1 and 16"}
	}
	if c.UploadMemoryMiB < 16 || c.UploadMemoryMiB > 16384 {
		return &FieldError{"upload_memory_mib", "must be between 16 and 16384"}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return &FieldError{"log_level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.LogLevel)}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return &FieldError{"log_format", fmt.Sprintf("%q is neither text nor json", c.LogFormat)}
	}
	seen := map[string]bool{}
	for i, s := range c.Sources {
		f := func(k string) string { return fmt.Sprintf("sources[%d].%s", i, k) }
		if s.Name == "" || len(s.Name) > 128 || strings.ContainsAny(s.Name, " /\t\n") {
			return &FieldError{f("name"), "must be a non-empty name without spaces or slashes, at most 128 characters"}
		}
		if seen[s.Name] {
			return &FieldError{f("name"), fmt.Sprintf("%q is used by two sources", s.Name)}
		}
		seen[s.Name] = true
		if u, err := url.Parse(s.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			return &FieldError{f("url"), fmt.Sprintf("%q is not an https:// URL (e.g. https://vcenter.example.com/sdk)", s.URL)}
		}
		if s.Username == "" {
			return &FieldError{f("username"), "is required"}
		}
		if s.PasswordFile == "" {
			return &FieldError{f("password_file"), "is required (the password is read from a file, never from the configuration)"}
		}
		if _, err := os.Stat(s.PasswordFile); err != nil {
			return &FieldError{f("password_file"), err.Error()}
		}
		switch s.Transport {
		case "", "https":
		case "file":
			if len(s.DatastorePaths) == 0 {
				return &FieldError{f("datastore_paths"), "the file transport needs datastore names mapped to local directories"}
			}
			for ds, dir := range s.DatastorePaths {
				if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
					return &FieldError{f("datastore_paths." + ds), fmt.Sprintf("%q is not a directory", dir)}
				}
			}
		case "nbd":
			switch s.NBD.Plugin {
			case "vddk":
				if s.NBD.LibDir == "" {
					return &FieldError{f("nbd.libdir"), "the vddk plugin needs the VDDK directory"}
				}
			case "curl":
			default:
				return &FieldError{f("nbd.plugin"), "must be vddk or curl"}
			}
		default:
			return &FieldError{f("transport"), fmt.Sprintf("%q is not https, nbd or file", s.Transport)}
		}
		if s.ReadHoles && s.Transport != "file" {
			return &FieldError{f("read_holes"), "applies to the file transport only"}
		}
		if s.CAFile != "" {
			if _, err := os.Stat(s.CAFile); err != nil {
				return &FieldError{f("ca_file"), err.Error()}
			}
		}
	}
	return nil
}

// Password reads a source's password file.
func (s *Source) Password() (string, error) {
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("source %s: read password_file: %w", s.Name, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// NewLogger builds the slog logger the configuration asks for.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
