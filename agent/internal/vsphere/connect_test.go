package vsphere

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
)

// otherCAFile writes the PEM of a freshly made self-signed CA that signed nothing the
// simulator serves.
func otherCAFile(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConnectVerification(t *testing.T) {
	s := startSim(t, simulator.VPX())
	cert := s.server.Certificate()
	sha1Sum := sha1.Sum(cert.Raw)
	wrong := strings.Repeat("AB:", 31) + "AB"

	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr error  // nil: must connect
		errText string // substring of the error
	}{
		{"sha256 thumbprint with colons", func(c *Config) {}, nil, ""},
		{"sha256 thumbprint lower case without colons", func(c *Config) {
			c.Thumbprint = strings.ToLower(strings.ReplaceAll(s.thumb, ":", ""))
		}, nil, ""},
		{"sha1 thumbprint", func(c *Config) { c.Thumbprint = hex.EncodeToString(sha1Sum[:]) }, nil, ""},
		{"ca file", func(c *Config) { c.Thumbprint, c.CAFile = "", s.caFile }, nil, ""},
		{"ca file and thumbprint", func(c *Config) { c.CAFile = s.caFile }, nil, ""},
		{"insecure", func(c *Config) { c.Thumbprint, c.Insecure = "", true }, nil, ""},
		{"wrong thumbprint", func(c *Config) { c.Thumbprint = wrong }, ErrThumbprintMismatch, s.thumb},
		{"wrong sha1 thumbprint", func(c *Config) { c.Thumbprint = strings.Repeat("0", 40) }, ErrThumbprintMismatch,
			formatFingerprint(sha1Sum[:])},
		{"right thumbprint, wrong ca file", func(c *Config) { c.CAFile = otherCAFile(t) }, nil, "unknown authority"},
		{"other ca file", func(c *Config) { c.Thumbprint, c.CAFile = "", otherCAFile(t) }, nil, s.thumb},
		{"system roots", func(c *Config) { c.Thumbprint = "" }, nil, "unknown authority"},
		{"system roots names the thumbprint to pin", func(c *Config) { c.Thumbprint = "" }, nil, s.thumb},
		{"wrong password", func(c *Config) { c.Password = "wrong" }, nil, "invalid user name or password"},
		{"bad thumbprint syntax", func(c *Config) { c.Thumbprint = "xyz" }, ErrInvalidConfig, "thumbprint"},
		{"insecure with thumbprint", func(c *Config) { c.Insecure = true }, ErrInvalidConfig, "insecure"},
		{"plain http", func(c *Config) { c.URL = strings.Replace(s.url, "https", "http", 1) }, ErrInvalidConfig, "https"},
		{"no password", func(c *Config) { c.Password = "" }, ErrInvalidConfig, "password"},
		{"credentials in the url", func(c *Config) { c.URL = strings.Replace(s.url, "https://", "https://root:hunter2@", 1) },
			ErrInvalidConfig, "credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := s.config()
			tt.mutate(&cfg)
			c, err := Connect(t.Context(), cfg, testLogger(t))
			if err == nil {
				defer c.Close(t.Context())
			}
			if tt.wantErr == nil && tt.errText == "" {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				if _, err := c.Inventory(t.Context()); err != nil {
					t.Fatalf("inventory: %v", err)
				}
				// The certificate the handshake verified, in the SHA-1 form VDDK takes.
				want := formatFingerprint(sha1Sum[:])
				if cfg.Insecure {
					want = ""
				}
				if got := c.VerifiedThumbprintSHA1(); got != want {
					t.Fatalf("verified thumbprint %q, want %q", got, want)
				}
				return
			}
			if err == nil {
				t.Fatal("connect succeeded, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("error %q does not contain %q", err, tt.errText)
			}
			if strings.Contains(err.Error(), simPassword) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

// TestThumbprintMismatchSendsNothing proves that a server failing the pin receives no HTTP
// request at all, so neither the user name nor the password reach it. The positive control
// (right thumbprint) shows the counter does count.
func TestThumbprintMismatchSendsNothing(t *testing.T) {
	var requests atomic.Int64
	var sawPassword atomic.Bool
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), "s3cret-password") {
			sawPassword.Store(true)
		}
		http.Error(w, "not vsphere", http.StatusNotFound)
	}))
	defer srv.Close()
	right := FingerprintSHA256(srv.Certificate().Raw)
	cfg := Config{Name: "evil", URL: srv.URL + "/sdk", Username: "root", Password: "s3cret-password",
		Thumbprint: strings.Repeat("01", 32)}

	_, err := Connect(t.Context(), cfg, testLogger(t))
	var te *ThumbprintError
	if !errors.As(err, &te) || !errors.Is(err, ErrThumbprintMismatch) {
		t.Fatalf("error = %v, want a ThumbprintError", err)
	}
	if te.Seen != right || te.SeenSHA256 != right || te.Expected != strings.Repeat("01:", 31)+"01" {
		t.Errorf("ThumbprintError = %+v, want seen %s", te, right)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("server received %d requests despite the thumbprint mismatch", n)
	}

	cfg.Thumbprint = right
	if _, err := Connect(t.Context(), cfg, testLogger(t)); err == nil {
		t.Fatal("connect to a non-vSphere server succeeded")
	}
	if requests.Load() == 0 {
		t.Fatal("control: with the right thumbprint the server saw no request; the counter proves nothing")
	}
	if sawPassword.Load() {
		t.Error("the password was sent to a server that is not vSphere (before service content)")
	}
}

// TestReloginAfterTerminatedSession terminates the client's session from another client, as
// an administrator (or the idle timeout) would; the next call must log in again and succeed.
func TestReloginAfterTerminatedSession(t *testing.T) {
	s := startSim(t, simulator.VPX())
	admin := s.admin(t)
	c := s.connect(t)
	ctx := t.Context()

	before, err := c.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	terminate := func() string {
		t.Helper()
		key := c.sess.sessionKey()
		if err := session.NewManager(admin.Client).TerminateSession(ctx, []string{key}); err != nil {
			t.Fatalf("terminate session %s: %v", key, err)
		}
		return key
	}

	t.Run("inventory", func(t *testing.T) {
		old := terminate()
		after, err := c.Inventory(ctx)
		if err != nil {
			t.Fatalf("inventory after session termination: %v", err)
		}
		if c.sess.sessionKey() == old {
			t.Error("session key unchanged: no re-login happened")
		}
		if len(after.VMs) != len(before.VMs) || after.VMs[0].InstanceUUID != before.VMs[0].InstanceUUID {
			t.Errorf("inventory after re-login differs: %d vms, want %d", len(after.VMs), len(before.VMs))
		}
	})
	t.Run("find vm", func(t *testing.T) {
		old := terminate()
		if _, err := c.FindVM(ctx, before.VMs[0].InstanceUUID); err != nil {
			t.Fatalf("find vm after session termination: %v", err)
		}
		if c.sess.sessionKey() == old {
			t.Error("session key unchanged: no re-login happened")
		}
	})
	t.Run("keep-alive", func(t *testing.T) {
		old := terminate()
		if err := c.keepAlive(); err != nil {
			t.Fatal(err)
		}
		if c.sess.sessionKey() == old {
			t.Fatal("keep-alive did not notice the lost session")
		}
		// The new session is a real one: the next call uses it without logging in again.
		renewed := c.sess.sessionKey()
		if _, err := c.Inventory(ctx); err != nil {
			t.Fatal(err)
		}
		if c.sess.sessionKey() != renewed {
			t.Error("the session made by keep-alive was not accepted by the server")
		}
	})
	t.Run("keep-alive on a live session keeps it", func(t *testing.T) {
		key := c.sess.sessionKey()
		if err := c.keepAlive(); err != nil {
			t.Fatal(err)
		}
		if c.sess.sessionKey() != key {
			t.Fatal("keep-alive logged in again although the session was alive")
		}
	})
}

func TestCloseLogsOut(t *testing.T) {
	s := startSim(t, simulator.VPX())
	admin := s.admin(t)
	c := s.connect(t)
	key := c.sess.sessionKey()
	if err := c.Close(t.Context()); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := c.Close(t.Context()); err != nil {
		t.Fatalf("second close: %v", err)
	}
	// The server no longer knows the session: terminating it reports NotFound.
	err := session.NewManager(admin.Client).TerminateSession(t.Context(), []string{key})
	if err == nil {
		t.Fatal("session still exists on the server after Close")
	}
	if _, err := c.Inventory(t.Context()); err == nil {
		t.Fatal("inventory on a closed client succeeded")
	}
}
