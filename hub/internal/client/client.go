// Package client is the operators' HTTP client of the hub API: the remote side of the
// sendense-hub CLI. It speaks TLS 1.3 only, trusts only the CA it is given, sends the API token
// read from a file as a bearer token, and turns the API's JSON error bodies back into errors.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// Options name the hub and the caller's credentials.
type Options struct {
	// URL is the hub's base URL, e.g. https://hub.example:8082 (a path, if any, is kept as a prefix).
	URL string
	// TokenFile holds the operator API token (sdt_...) on its first line.
	TokenFile string
	// CAFile holds the PEM certificate(s) of the CA that signed the hub's server certificate.
	CAFile string
	// Timeout bounds each request that is not a download (0: 5 minutes, long enough for a
	// restore test run by the hub in the request).
	Timeout time.Duration
}

// Error is an answer of the API other than 2xx: its status and the JSON error body. Its text is
// the API's message (and the field, when the problem is one field), never the request's token.
type Error struct {
	Status int
	Body   api.Error
}

func (e *Error) Error() string {
	msg := e.Body.Error
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Body.Field != "" && !strings.HasPrefix(msg, e.Body.Field+":") {
		msg = e.Body.Field + ": " + msg
	}
	return fmt.Sprintf("hub answered %d: %s", e.Status, msg)
}

// Client is safe for concurrent use.
type Client struct {
	base    *url.URL
	token   string
	http    *http.Client
	timeout time.Duration
	// long sends the requests the hub answers only when done (a verification of every backup
	// takes minutes to hours): no answer timeout; the caller's context bounds them.
	long *http.Client
}

// New checks the options and reads the token and the CA. Nothing is sent yet.
func New(o Options) (*Client, error) {
	if o.URL == "" {
		return nil, errors.New("hub URL is empty (--hub, SENDENSE_HUB or hub: in the client config)")
	}
	base, err := url.Parse(strings.TrimRight(o.URL, "/"))
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("hub URL %q: want https://host:port", o.URL)
	}
	if base.Scheme != "https" {
		return nil, fmt.Errorf("hub URL %q: only https is spoken (TLS 1.3)", o.URL)
	}
	if o.TokenFile == "" {
		return nil, errors.New("API token file is not set (--token-file, SENDENSE_TOKEN_FILE or token_file: in the client config)")
	}
	b, err := os.ReadFile(o.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("read token file: %w", err)
	}
	token, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, fmt.Errorf("token file %s is empty", o.TokenFile)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	// HTTPS_PROXY is honoured (the default): through a CONNECT proxy TLS stays end to end.
	// Downloads have no overall timeout (an image takes as long as it takes), but a hub that
	// does not start answering within 2 minutes is given up on.
	tr.ResponseHeaderTimeout = 2 * time.Minute
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	longTr := tr.Clone()
	longTr.ResponseHeaderTimeout = 0
	return &Client{base: base, token: token, http: &http.Client{Transport: tr}, timeout: timeout, long: &http.Client{Transport: longTr}}, nil
}

// URL returns the hub's base URL.
func (c *Client) URL() string { return c.base.String() }

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawPath = c.base.EscapedPath() + path
	if q != nil {
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// send performs req and returns the response when its status is 2xx, or an *Error.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	return c.sendWith(c.http, req)
}

func (c *Client) sendWith(hc *http.Client, req *http.Request) (*http.Response, error) {
	resp, err := hc.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is named below; the wrapper repeats it
		}
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("%s %s: the hub's certificate is not trusted (is --ca-file the hub's CA, pki/ca.crt?): %w", req.Method, req.URL.Redacted(), err)
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	e := &Error{Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e.Body) != nil || e.Body.Error == "" {
		e.Body.Error = strings.TrimSpace(string(b))
		if len(e.Body.Error) > 200 || strings.ContainsFunc(e.Body.Error, api.UnsafeRune) {
			e.Body.Error = "" // not the API's error body; the status says enough
		}
	}
	return nil, e
}

// do sends a JSON request (in may be nil) and decodes a JSON answer into out (may be nil).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.exchange(ctx, c.http, method, path, q, in, out)
}

// doLong is do without the answer timeout, for requests the hub runs to the end before it
// answers; only ctx bounds them.
func (c *Client) doLong(ctx context.Context, method, path string, q url.Values, in, out any) error {
	return c.exchange(ctx, c.long, method, path, q, in, out)
}

func (c *Client) exchange(ctx context.Context, hc *http.Client, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	resp, err := c.sendWith(hc, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// get is do for GET without a body.
func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	return c.do(ctx, http.MethodGet, path, q, nil, out)
}
