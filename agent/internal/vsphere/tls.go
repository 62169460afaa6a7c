package vsphere

import (
	"crypto/sha1" // vSphere still shows SHA-1 thumbprints; used for pinning only
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// ThumbprintError is the error of a TLS handshake whose server certificate did not match the
// configured thumbprint. It matches ErrThumbprintMismatch with errors.Is.
type ThumbprintError struct {
	// Expected is the configured thumbprint, normalised to colon-separated upper-case hex.
	Expected string
	// Seen is the fingerprint of the certificate presented, in the same algorithm as Expected.
	Seen string
	// SeenSHA256 is the SHA-256 fingerprint of the certificate presented (what to pin).
	SeenSHA256 string
}

func (e *ThumbprintError) Error() string {
	msg := fmt.Sprintf("server certificate thumbprint mismatch: expected %s, server presented %s", e.Expected, e.Seen)
	if e.Seen != e.SeenSHA256 {
		msg += " (SHA-256 " + e.SeenSHA256 + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrThumbprintMismatch) true.
func (e *ThumbprintError) Is(target error) bool { return target == ErrThumbprintMismatch }

// thumbprint is a parsed certificate fingerprint.
type thumbprint struct {
	sum []byte // 20 bytes (SHA-1) or 32 bytes (SHA-256)
}

// parseThumbprint accepts hex with or without colons (or spaces), in any case, of 40 (SHA-1)
// or 64 (SHA-256) digits.
func parseThumbprint(s string) (thumbprint, error) {
	clean := strings.NewReplacer(":", "", " ", "", "-", "").Replace(strings.TrimSpace(s))
	sum, err := hex.DecodeString(clean)
	if err != nil {
		return thumbprint{}, fmt.Errorf("%q is not hex", s)
	}
	if len(sum) != sha1.Size && len(sum) != sha256.Size {
		return thumbprint{}, fmt.Errorf("%q has %d bytes, want 20 (SHA-1) or 32 (SHA-256)", s, len(sum))
	}
	return thumbprint{sum: sum}, nil
}

// of returns the fingerprint of der in the thumbprint's algorithm.
func (t thumbprint) of(der []byte) []byte {
	if len(t.sum) == sha1.Size {
		s := sha1.Sum(der)
		return s[:]
	}
	s := sha256.Sum256(der)
	return s[:]
}

func (t thumbprint) String() string { return formatFingerprint(t.sum) }

// formatFingerprint renders a digest as vSphere shows thumbprints: "AB:CD:...".
func formatFingerprint(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// FingerprintSHA1 returns the SHA-1 fingerprint of a DER certificate in the colon form VDDK
// takes as its thumbprint.
func FingerprintSHA1(der []byte) string {
	s := sha1.Sum(der)
	return formatFingerprint(s[:])
}

// FingerprintSHA256 returns the SHA-256 fingerprint of a DER certificate as vSphere shows it.
func FingerprintSHA256(der []byte) string {
	s := sha256.Sum256(der)
	return formatFingerprint(s[:])
}

// newTLSConfig builds the client TLS configuration for cfg. Verification happens inside the
// handshake, so a server that fails it never receives an HTTP request, let alone the password.
// verified is called with the server certificate of each handshake that verified it (never
// with insecure).
func newTLSConfig(cfg Config, host string, log *slog.Logger, verified func(der []byte)) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}

	var roots *x509.CertPool
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: ca file %s holds no PEM certificate", ErrInvalidConfig, cfg.CAFile)
		}
	}

	switch {
	case cfg.Insecure:
		var once sync.Once
		conf.InsecureSkipVerify = true
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			once.Do(func() {
				seen := ""
				if len(cs.PeerCertificates) > 0 {
					seen = FingerprintSHA256(cs.PeerCertificates[0].Raw)
				}
				log.Warn("INSECURE: vsphere server certificate is NOT verified; anyone on the path can "+
					"read the password and the disk data. Pin the certificate with its thumbprint instead.",
					"server_thumbprint_sha256", seen)
			})
			return nil
		}
	case cfg.Thumbprint != "":
		want, err := parseThumbprint(cfg.Thumbprint)
		if err != nil {
			return nil, fmt.Errorf("%w: thumbprint: %v", ErrInvalidConfig, err)
		}
		// The chain is checked by hand below (pinning replaces the system roots, a CA file
		// adds a chain check on top of the pin).
		conf.InsecureSkipVerify = true
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server presented no certificate")
			}
			leaf := cs.PeerCertificates[0]
			if roots != nil {
				if err := verifyChain(cs.PeerCertificates, roots, host); err != nil {
					return err
				}
			}
			seen := want.of(leaf.Raw)
			if subtle.ConstantTimeCompare(seen, want.sum) != 1 {
				return &ThumbprintError{
					Expected:   want.String(),
					Seen:       formatFingerprint(seen),
					SeenSHA256: FingerprintSHA256(leaf.Raw),
				}
			}
			verified(leaf.Raw)
			return nil
		}
	default:
		conf.RootCAs = roots // nil: the system's
		conf.ServerName = host
		// Called after the standard verification succeeded.
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				verified(cs.PeerCertificates[0].Raw)
			}
			return nil
		}
	}
	return conf, nil
}

// verifyChain checks that certs[0] is valid for host and chains to roots.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, host string) error {
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host})
	if err != nil {
		return fmt.Errorf("verify server certificate: %w", err)
	}
	return nil
}

// withCertificateHint adds, to a TLS verification failure against an unknown authority, the
// fingerprint of the certificate the server presented, so the operator can pin it (after
// checking it out of band, e.g. on the vCenter appliance console).
func withCertificateHint(err error) error {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0 {
		return fmt.Errorf("%w (the server presented a certificate with SHA-256 thumbprint %s; configure it as thumbprint, or set ca_file, once verified)",
			err, FingerprintSHA256(cve.UnverifiedCertificates[0].Raw))
	}
	return err
}
