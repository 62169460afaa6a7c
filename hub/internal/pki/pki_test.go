package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCreateThenLoadKeepsCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := ca.Cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("CA key is %T, want ECDSA P-256", ca.Cert.PublicKey)
	}
	if !ca.Cert.IsCA {
		t.Fatal("CA certificate is not a CA")
	}
	fi, err := os.Stat(filepath.Join(dir, caKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v, err %v; want 0600", fi.Mode().Perm(), err)
	}
	again, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Fingerprint() != ca.Fingerprint() {
		t.Fatal("second start made a new CA")
	}
}

func TestPartialCARefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, caCertFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, nil); err == nil {
		t.Fatal("a key without its certificate was accepted")
	}
}

func TestServerCertificateNamesAndReuse(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ca.ServerCertificate([]string{"hub.example.com", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "hub.example.com", "127.0.0.1", "10.1.2.3", "::1"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("server certificate does not cover %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("server certificate does not chain to the CA: %v", err)
	}

	same, err := ca.ServerCertificate([]string{"hub.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if string(same.Certificate[0]) != string(tc.Certificate[0]) {
		t.Fatal("a certificate covering every name was re-issued")
	}
	more, err := ca.ServerCertificate([]string{"other.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if string(more.Certificate[0]) == string(tc.Certificate[0]) {
		t.Fatal("a certificate missing a name was reused")
	}

	late := &CA{Cert: ca.Cert, CertPEM: ca.CertPEM, key: ca.key, dir: dir, now: func() time.Time { return time.Now().Add(340 * 24 * time.Hour) }}
	renewed, err := late.ServerCertificate([]string{"other.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if string(renewed.Certificate[0]) == string(more.Certificate[0]) {
		t.Fatal("a certificate with under 30 days left was reused")
	}
}
