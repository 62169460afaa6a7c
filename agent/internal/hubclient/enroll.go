package hubclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// ErrPinMismatch is returned when the hub does not present the CA the join token pins.
var ErrPinMismatch = errors.New("hub does not present the pinned CA")

// Enroll redeems a join token at the hub. It trusts only the CA whose SHA-256 fingerprint the
// token carries: the TLS handshake fails, before anything is sent, when the hub presents another
// CA. It makes exactly one attempt: the token is single-use, so a blind retry could only fail.
func Enroll(ctx context.Context, hubURL, caFingerprint string, req api.EnrollRequest) (api.EnrollResponse, error) {
	u, err := url.Parse(hubURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return api.EnrollResponse{}, fmt.Errorf("hub URL %q is not https://host:port", hubURL)
	}
	pin := api.NormalizeFingerprint(caFingerprint)
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification happens in VerifyConnection against the pinned CA instead of system roots.
		InsecureSkipVerify: true, //nolint:gosec // replaced by pinned verification below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, u.Hostname(), pin)
		},
	}
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
	body, err := json.Marshal(req)
	if err != nil {
		return api.EnrollResponse{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u.JoinPath(api.PathEnroll).String(), bytes.NewReader(body))
	if err != nil {
		return api.EnrollResponse{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(hreq)
	if err != nil {
		return api.EnrollResponse{}, fmt.Errorf("enroll at %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	var out api.EnrollResponse
	if err := decodeResponse(resp, http.MethodPost, api.PathEnroll, &out); err != nil {
		return api.EnrollResponse{}, err
	}
	ca, err := parsePEMCert([]byte(out.CA))
	if err != nil {
		return api.EnrollResponse{}, fmt.Errorf("enroll: hub sent an unreadable CA: %w", err)
	}
	if fingerprint(ca) != pin {
		return api.EnrollResponse{}, fmt.Errorf("enroll: %w: the CA in the answer has fingerprint %s", ErrPinMismatch, fingerprint(ca))
	}
	return out, nil
}

// verifyPinned finds the pinned CA among the certificates the hub presented and verifies the
// hub's certificate (including its host name) against that CA alone.
func verifyPinned(cs tls.ConnectionState, host, pin string) error {
	var ca *x509.Certificate
	for _, c := range cs.PeerCertificates {
		if c.IsCA && fingerprint(c) == pin {
			ca = c
		}
	}
	if ca == nil {
		seen := "none"
		if n := len(cs.PeerCertificates); n > 0 {
			seen = fingerprint(cs.PeerCertificates[n-1])
		}
		return fmt.Errorf("%w: want CA %s, hub presented %s", ErrPinMismatch, pin, seen)
	}
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no certificate", ErrPinMismatch)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
		return fmt.Errorf("hub certificate does not verify against the pinned CA for %q (add the name to the hub's tls_names): %w", host, err)
	}
	return nil
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func parsePEMCert(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}
