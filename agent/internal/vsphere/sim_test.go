package vsphere

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/simulator"
)

// Credentials the test simulators accept (and only these).
const (
	simUser     = "administrator@vsphere.local"
	simPassword = "correct horse battery staple"
)

// sim is a govmomi simulator (vcsim) served over TLS on loopback.
type sim struct {
	model  *simulator.Model
	server *simulator.Server
	url    string // https://127.0.0.1:PORT/sdk, no credentials
	thumb  string // SHA-256 fingerprint of the server certificate
	caFile string // PEM file of the (self-signed) server certificate
}

// startSim creates the model's inventory and serves it; everything is torn down with the test.
func startSim(t testing.TB, m *simulator.Model) *sim {
	t.Helper()
	if err := m.Create(); err != nil {
		t.Fatalf("create simulator model: %v", err)
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{User: url.UserPassword(simUser, simPassword)}
	srv := m.Service.NewServer()
	t.Cleanup(func() {
		srv.Close()
		m.Remove()
	})
	u := *srv.URL
	u.User = nil
	cert := srv.Certificate()
	caFile := filepath.Join(t.TempDir(), "vcsim-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &sim{model: m, server: srv, url: u.String(), thumb: FingerprintSHA256(cert.Raw), caFile: caFile}
}

// config returns a Config for the simulator pinned by thumbprint.
func (s *sim) config() Config {
	return Config{Name: "vc1", URL: s.url, Username: simUser, Password: simPassword, Thumbprint: s.thumb}
}

// connect connects the product client to the simulator.
func (s *sim) connect(t testing.TB, mutate ...func(*Config)) *Client {
	t.Helper()
	cfg := s.config()
	for _, f := range mutate {
		f(&cfg)
	}
	c, err := Connect(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.WithoutCancel(context.Background())) })
	return c
}

// admin returns a plain govmomi client, the test's hands on the simulator.
func (s *sim) admin(t testing.TB) *govmomi.Client {
	t.Helper()
	u, _ := url.Parse(s.url)
	u.User = url.UserPassword(simUser, simPassword)
	c, err := govmomi.NewClient(context.Background(), u, true)
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	t.Cleanup(func() { _ = c.Logout(context.WithoutCancel(context.Background())) })
	return c
}

// testLogger logs to the test log when -v is given.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
