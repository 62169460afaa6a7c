package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
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

func TestSignAgentCSR(t *testing.T) {
	ca, err := LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	cert, _, err := ca.SignAgentCSR(csrPEM, "agent-123", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "agent-123" {
		t.Fatalf("CN %q", cert.Subject.CommonName)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify: %v", err)
	}
	if d := cert.NotAfter.Sub(cert.NotBefore); d < 24*time.Hour || d > 25*time.Hour {
		t.Fatalf("lifetime %s", d)
	}

	rsaLike := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der[:len(der)-3]})
	for name, in := range map[string][]byte{"garbage": []byte("nope"), "truncated": rsaLike, "wrong type": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})} {
		if _, _, err := ca.SignAgentCSR(in, "a", time.Hour); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: err %v, want ErrBadCSR", name, err)
		}
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)
	if _, _, err := ca.SignAgentCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der384}), "a", time.Hour); !errors.Is(err, ErrBadCSR) {
		t.Errorf("P-384 key accepted: %v", err)
	}
}
