// Package identity owns the agent's enrolled identity in its state directory: the private key
// and client certificate, the hub CA it trusts, and the hub URL. It swaps renewed certificates
// into a running agent without a restart.
package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/sendense/sendense/shared/atomicfile"
)

// Files in the state directory. identity.json is written last and marks a complete enrollment.
const (
	keyPairFile  = "agent.pem" // certificate and private key together, so that a renewal swaps both atomically
	caFile       = "ca.crt"
	metadataFile = "identity.json"
)

// ErrNotEnrolled is returned by Load for a state directory without an identity.
var ErrNotEnrolled = errors.New("agent is not enrolled")

// Metadata is the content of identity.json.
type Metadata struct {
	AgentID       string    `json:"agent_id"`
	HubURL        string    `json:"hub_url"`
	CAFingerprint string    `json:"ca_sha256"`
	EnrolledAt    time.Time `json:"enrolled_at"`
}

// Identity is a loaded identity. The certificate can be replaced while TLS connections use it.
type Identity struct {
	dir  string
	meta Metadata
	ca   *x509.Certificate
	cert atomic.Pointer[tls.Certificate]
}

// Exists reports whether dir holds an identity.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, metadataFile))
	return err == nil
}

// NewKey makes an ECDSA P-256 private key and a PEM certificate request for it.
func NewKey(commonName string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// Save writes a new identity to dir: key pair (0600), CA, then identity.json last. An existing
// identity is replaced only when overwrite is set.
func Save(dir string, meta Metadata, key *ecdsa.PrivateKey, certPEM, caPEM []byte, overwrite bool) (*Identity, error) {
	if Exists(dir) && !overwrite {
		return nil, fmt.Errorf("%s already holds an identity (use --force to replace it)", dir)
	}
	ca, err := parseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("hub CA: %w", err)
	}
	tc, pairPEM, err := keyPair(key, certPEM)
	if err != nil {
		return nil, err
	}
	if err := checkChain(tc.Leaf, ca); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, keyPairFile), pairPEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, caFile), caPEM, 0o644); err != nil {
		return nil, err
	}
	mb, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, metadataFile), append(mb, '\n'), 0o600); err != nil {
		return nil, err
	}
	id := &Identity{dir: dir, meta: meta, ca: ca}
	id.cert.Store(tc)
	return id, nil
}

// Load reads the identity in dir; ErrNotEnrolled when there is none.
func Load(dir string) (*Identity, error) {
	mb, err := os.ReadFile(filepath.Join(dir, metadataFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotEnrolled)
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	var meta Metadata
	if err := json.Unmarshal(mb, &meta); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, metadataFile), err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, fmt.Errorf("read hub CA: %w", err)
	}
	ca, err := parseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("hub CA %s: %w", filepath.Join(dir, caFile), err)
	}
	if fp := Fingerprint(ca); fp != meta.CAFingerprint {
		return nil, fmt.Errorf("hub CA in %s has fingerprint %s, identity.json pins %s", dir, fp, meta.CAFingerprint)
	}
	pairPEM, err := os.ReadFile(filepath.Join(dir, keyPairFile))
	if err != nil {
		return nil, fmt.Errorf("read key pair: %w", err)
	}
	tc, err := tls.X509KeyPair(pairPEM, pairPEM)
	if err != nil {
		return nil, fmt.Errorf("key pair %s: %w", filepath.Join(dir, keyPairFile), err)
	}
	if tc.Leaf == nil {
		return nil, fmt.Errorf("key pair %s: no certificate", filepath.Join(dir, keyPairFile))
	}
	id := &Identity{dir: dir, meta: meta, ca: ca}
	id.cert.Store(&tc)
	return id, nil
}

// AgentID is the agent's id (the Common Name of its certificate).
func (id *Identity) AgentID() string { return id.meta.AgentID }

// HubURL is the hub this agent enrolled with.
func (id *Identity) HubURL() string { return id.meta.HubURL }

// Certificate returns the current client certificate (its Leaf is set).
func (id *Identity) Certificate() *tls.Certificate { return id.cert.Load() }

// NotAfter is the expiry of the current certificate.
func (id *Identity) NotAfter() time.Time { return id.cert.Load().Leaf.NotAfter }

// CAPool returns a pool holding only the hub CA.
func (id *Identity) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(id.ca)
	return p
}

// TLSConfig is the client TLS configuration for talking to the hub: TLS 1.3 only, the hub CA as
// the only root, and the current certificate fetched per handshake so that renewals apply to new
// connections at once.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    id.CAPool(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.cert.Load(), nil
		},
	}
}

// Replace installs a renewed certificate for a new key: it is written durably first, then swapped
// into the running agent.
func (id *Identity) Replace(key *ecdsa.PrivateKey, certPEM []byte) error {
	tc, pairPEM, err := keyPair(key, certPEM)
	if err != nil {
		return err
	}
	if err := checkChain(tc.Leaf, id.ca); err != nil {
		return err
	}
	if tc.Leaf.Subject.CommonName != id.meta.AgentID {
		return fmt.Errorf("renewed certificate is for %q, this agent is %q", tc.Leaf.Subject.CommonName, id.meta.AgentID)
	}
	if err := atomicfile.WriteFile(filepath.Join(id.dir, keyPairFile), pairPEM, 0o600); err != nil {
		return err
	}
	id.cert.Store(tc)
	return nil
}

// RenewAt is when the current certificate should be renewed: at two thirds of its lifetime,
// moved by up to ±jitter of the lifetime (jitter in [0,1), e.g. 0.05) so a fleet enrolled
// together does not renew together.
func (id *Identity) RenewAt(jitter float64, rnd func() float64) time.Time {
	leaf := id.cert.Load().Leaf
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	offset := time.Duration(float64(life) * jitter * (2*rnd() - 1))
	return leaf.NotBefore.Add(life*2/3 + offset)
}

// Fingerprint is the lowercase hex SHA-256 of a certificate's DER bytes.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func parseCert(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func keyPair(key *ecdsa.PrivateKey, certPEM []byte) (*tls.Certificate, []byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	pairPEM := append(append([]byte{}, certPEM...), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...)
	tc, err := tls.X509KeyPair(pairPEM, pairPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate does not match the key: %w", err)
	}
	return &tc, pairPEM, nil
}

func checkChain(leaf, ca *x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("certificate does not chain to the hub CA: %w", err)
	}
	return nil
}
