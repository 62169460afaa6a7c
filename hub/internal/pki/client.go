package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// ErrBadCSR is returned for a certificate request that is malformed, not ECDSA P-256 or not
// signed by its own key.
var ErrBadCSR = errors.New("bad certificate request")

// ParseCSR parses and checks a PEM certificate request: ECDSA P-256, valid self-signature.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: key must be ECDSA P-256", ErrBadCSR)
	}
	return csr, nil
}

// SignAgentCSR issues a client certificate for an agent: the Common Name is the agent id (the
// CSR's subject is ignored), valid from now (backdated a few minutes for clock skew) for lifetime.
func (ca *CA) SignAgentCSR(csrPEM []byte, agentID string, lifetime time.Duration) (*x509.Certificate, []byte, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, nil, err
	}
	t := ca.now()
	return ca.IssueClientCert(csr.PublicKey, agentID, t.Add(-backdate), t.Add(lifetime))
}

// IssueClientCert signs a client certificate for pub with the given Common Name and validity.
func (ca *CA) IssueClientCert(pub crypto.PublicKey, cn string, notBefore, notAfter time.Time) (*x509.Certificate, []byte, error) {
	serial, err := NewSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Sendense agents"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign client certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// SerialHex formats a certificate serial as lowercase hex, the form stored in the catalog.
func SerialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }
