package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestPrecedenceFileEnvFlag(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(p, []byte("listen: \":9000\"\ndata_dir: /from/file\nlog_level: warn\nshutdown_timeout: 5s\ntls_names: [a.example]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var scratch Config
	BindFlags(fs, &scratch)
	if err := fs.Parse([]string{"--log-level=debug"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, env(map[string]string{"SENDENSE_HUB_DATA_DIR": "/from/env", "SENDENSE_HUB_LOG_LEVEL": "error"}), fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":9000" || c.DataDir != "/from/env" || c.LogLevel != "debug" || c.ShutdownTimeout != 5*time.Second {
		t.Fatalf("got %+v", c)
	}
	if len(c.TLSNames) != 1 || c.TLSNames[0] != "a.example" {
		t.Fatalf("tls_names %v", c.TLSNames)
	}
	if c.MetricsListen != "127.0.0.1:9082" {
		t.Fatalf("default lost: metrics_listen %q", c.MetricsListen)
	}
}

func TestInvalidConfigNamesTheField(t *testing.T) {
	cases := []struct {
		name, yaml, field string
		env               map[string]string
	}{
		{"unknown key", "listen: \":8082\"\nlisten_port: 1\n", "listen_port", nil},
		{"bad listen", "listen: nonsense\n", "listen", nil},
		{"bad level", "log_level: loud\n", "log_level", nil},
		{"bad format", "log_format: xml\n", "log_format", nil},
		{"bad public url", "public_url: http://plain\n", "public_url", nil},
		{"zero shutdown", "shutdown_timeout: 0s\n", "shutdown_timeout", nil},
		{"password without db", "db_password_file: /etc/x\n", "db_password_file", nil},
		{"negative connection cap", "max_connections: -1\n", "max_connections", nil},
		{"per-address cap over the total", "max_connections: 100\nmax_connections_per_address: 200\n", "max_connections_per_address", nil},
		{"body timeout too short", "request_body_timeout: 100ms\n", "request_body_timeout", nil},
		{"no upload rate", "upload_min_kib_per_second: 0\n", "upload_min_kib_per_second", nil},
		{"upload memory under three chunks", "chunk_upload_memory_mib: 12\n", "chunk_upload_memory_mib", nil},
		{"upload memory past any machine", "chunk_upload_memory_mib: 9007199254740992\n", "chunk_upload_memory_mib", nil},
		{"bad env duration", "", "SENDENSE_HUB_SHUTDOWN_TIMEOUT", map[string]string{"SENDENSE_HUB_SHUTDOWN_TIMEOUT": "soon"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "hub.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p, env(tc.env), nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

// A connection cap of 0 selects the default, so that it can be reset from the environment.
func TestZeroConnectionCapsAreAccepted(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(p, []byte("max_connections: 0\nmax_connections_per_address: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p, env(nil), nil); err != nil {
		t.Fatal(err)
	}
}
