package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"testing"
	"time"
)

// FuzzSignAgentCSR feeds arbitrary certificate requests to SignAgentCSR, the path an enrolling
// or renewing agent's CSR takes. It must not panic, must refuse with ErrBadCSR, and must sign
// only a well-formed PEM CSR for an ECDSA P-256 key whose self-signature verifies: the issued
// certificate is for that key, names the agent, and chains to the CA.
//
// With wrap set, the harness puts the input into a CERTIFICATE REQUEST PEM block, so that the
// fuzzer mutates the DER inside rather than only the base64 around it.
func FuzzSignAgentCSR(f *testing.F) {
	ca, err := LoadOrCreate(f.TempDir(), nil)
	if err != nil {
		f.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for _, key := range []any{p256, p384, ed} {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}, DNSNames: []string{"agent.example"}}, key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der, true)
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), false)
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), false)
		tampered := append([]byte(nil), der...)
		tampered[len(tampered)-1] ^= 1
		f.Add(tampered, true)
	}
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"), false)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, in []byte, wrap bool) {
		csrPEM := in
		if wrap {
			csrPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: in})
		}
		cert, certPEM, err := ca.SignAgentCSR(csrPEM, "agent-1", time.Hour)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("refused with %v, want ErrBadCSR", err)
			}
			return
		}
		// Check independently of ParseCSR what was signed.
		block, _ := pem.Decode(csrPEM)
		if block == nil || block.Type != "CERTIFICATE REQUEST" {
			t.Fatalf("signed input without a CERTIFICATE REQUEST block: %q", csrPEM)
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			t.Fatalf("signed a CSR that does not parse: %v", err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("signed a CSR with a bad self-signature: %v", err)
		}
		pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Fatalf("signed a CSR for a %T key", csr.PublicKey)
		}
		if !pub.Equal(cert.PublicKey) {
			t.Fatal("certificate is not for the CSR's key")
		}
		if cert.Subject.CommonName != "agent-1" {
			t.Fatalf("certificate names %q, not the agent", cert.Subject.CommonName)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("issued certificate does not verify: %v", err)
		}
		if again, err := ParseCertPEM(certPEM); err != nil || !again.Equal(cert) {
			t.Fatalf("certificate PEM does not parse back: %v", err)
		}
	})
}
