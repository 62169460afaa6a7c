// Package hubclient is the agent's HTTP client for the hub: JSON requests over mutual TLS with
// retries and backoff. It is the only user of go-retryablehttp.
package hubclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sendense/sendense/shared/api"
)

// Error is a non-2xx answer of the hub.
type Error struct {
	Status int
	Body   api.Error
}

func (e *Error) Error() string {
	if e.Body.Error == "" {
		return fmt.Sprintf("hub answered %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Body.Field != "" {
		return fmt.Sprintf("hub answered %d: %s (field %s)", e.Status, e.Body.Error, e.Body.Field)
	}
	return fmt.Sprintf("hub answered %d: %s", e.Status, e.Body.Error)
}

// StatusOf returns the HTTP status of a hub error, or 0 for other errors (network, TLS, ...).
func StatusOf(err error) int {
	var he *Error
	if errors.As(err, &he) {
		return he.Status
	}
	return 0
}

// Options tune the client.
type Options struct {
	// RetryMax is the number of retries after the first attempt (default 6).
	RetryMax int
	// NoRetry makes every call a single attempt (interactive commands that must answer fast).
	NoRetry bool
	// RetryWaitMin and RetryWaitMax bound the exponential backoff (defaults 500ms and 30s).
	RetryWaitMin, RetryWaitMax time.Duration
	// Timeout bounds each call whose context has no deadline (default 2m).
	Timeout time.Duration
	// Retries, when set, counts retried requests.
	Retries prometheus.Counter
	// Fallbacks are more URLs of hubs sharing the catalog and repositories of the first (which
	// differ from it in host and port only). A request whose connection fails (refused, reset,
	// timed out — not an answer, whatever its status) is retried on the next hub, and later
	// requests stay there until it fails in turn.
	Fallbacks []string
}

// Client talks to a hub, failing over between several. It is safe for concurrent use.
type Client struct {
	bases   []*url.URL
	cur     atomic.Int32 // index in bases of the hub requests go to
	http    *retryablehttp.Client
	rt      *rotatingTransport
	timeout time.Duration
	log     *slog.Logger
}

// New returns a client for the hub at baseURL using tlsConfig (TLS 1.3, the hub CA as root, the
// agent's certificate).
func New(baseURL string, tlsConfig *tls.Config, log *slog.Logger, opts Options) (*Client, error) {
	var bases []*url.URL
	for _, raw := range append([]string{baseURL}, opts.Fallbacks...) {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("hub URL %q is not https://host:port", raw)
		}
		if len(bases) > 0 && strings.TrimSuffix(u.Path, "/") != strings.TrimSuffix(bases[0].Path, "/") {
			return nil, fmt.Errorf("hub URL %q: the hubs' URLs may differ in host and port only", raw)
		}
		bases = append(bases, u)
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 6
	}
	if opts.RetryWaitMin == 0 {
		opts.RetryWaitMin = 500 * time.Millisecond
	}
	if opts.RetryWaitMax == 0 {
		opts.RetryWaitMax = 30 * time.Second
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	c := &Client{bases: bases, timeout: opts.Timeout, log: log}
	rt := &rotatingTransport{tls: tlsConfig, failed: c.failed}
	rt.cur.Store(rt.newTransport())
	c.rt = rt
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Transport: rt}
	rc.RetryMax = opts.RetryMax
	if opts.NoRetry {
		rc.RetryMax = 0
	}
	rc.RetryWaitMin, rc.RetryWaitMax = opts.RetryWaitMin, opts.RetryWaitMax
	rc.Backoff = backoff
	rc.Logger = nil
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	rc.RequestLogHook = func(_ retryablehttp.Logger, r *http.Request, attempt int) {
		if attempt > 0 {
			log.DebugContext(r.Context(), "retrying hub request", "method", r.Method, "path", r.URL.Path, "attempt", attempt)
			if opts.Retries != nil {
				opts.Retries.Inc()
			}
		}
	}
	// A retry goes to the hub in use now, which is another one when the attempt before failed
	// to connect.
	rc.PrepareRetry = func(req *http.Request) error {
		if b := c.base(); req.URL.Host != b.Host {
			u := *req.URL
			u.Scheme, u.Host = b.Scheme, b.Host
			req.URL, req.Host = &u, ""
		}
		return nil
	}
	c.http = rc
	return c, nil
}

// base is the URL of the hub requests go to now.
func (c *Client) base() *url.URL { return c.bases[c.cur.Load()] }

// Hub is the URL of the hub requests go to now.
func (c *Client) Hub() string { return c.base().String() }

// failed moves later requests to the next hub when a request to the hub in use could not
// connect. Concurrent failures of the same hub move once.
func (c *Client) failed(req *http.Request, err error) {
	if len(c.bases) < 2 || req.Context().Err() != nil {
		return
	}
	i := c.cur.Load()
	if c.bases[i].Host != req.URL.Host {
		return // already moved on
	}
	next := (i + 1) % int32(len(c.bases))
	if c.cur.CompareAndSwap(i, next) {
		c.log.WarnContext(req.Context(), "hub unreachable: failing over", "hub", c.bases[i].String(), "next_hub", c.bases[next].String(), "err", err)
	}
}

// rotatingTransport lets a renewed client certificate take effect on every later request: a TLS
// connection keeps the certificate of its handshake, so Rotate moves new requests to a fresh
// transport while requests in flight finish on the old one.
type rotatingTransport struct {
	tls *tls.Config
	cur atomic.Pointer[http.Transport]
	// failed hears of every request that got no answer.
	failed func(*http.Request, error)
}

func (r *rotatingTransport) newTransport() *http.Transport {
	return &http.Transport{
		TLSClientConfig:       r.tls,
		Proxy:                 http.ProxyFromEnvironment,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 0, // long polls wait on purpose; calls are bounded by their context
		// Past the headers and the first buffer's worth, a request body is copied straight to
		// the connection, not through this buffer: a larger one would only hold memory on
		// every connection, idle ones too.
		WriteBufferSize: 64 << 10,
		ReadBufferSize:  64 << 10,
		// HTTP/1.1: parallel uploads spread over several connections instead of sharing one
		// HTTP/2 flow-control window.
		ForceAttemptHTTP2: false,
	}
}

func (r *rotatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.cur.Load().RoundTrip(req)
	if err != nil && r.failed != nil {
		r.failed(req, err)
	}
	return resp, err
}

func (r *rotatingTransport) rotate() {
	old := r.cur.Swap(r.newTransport())
	old.CloseIdleConnections()
}

// ResetConnections makes later requests open new TLS connections, e.g. to present a renewed
// client certificate. Requests in flight are not interrupted.
func (c *Client) ResetConnections() { c.rt.rotate() }

// Do sends one JSON request (in may be nil) and decodes a 2xx JSON answer into out (may be nil).
// Connection failures, 429 and 5xx answers are retried with backoff; other answers are not.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	contentType := ""
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		contentType = "application/json"
	}
	_, err := c.do(ctx, method, path, body, contentType, out)
	return err
}

func decodeResponse(resp *http.Response, method, path string, out any) error {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		he := &Error{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &he.Body) != nil {
			he.Body.Error = strings.TrimSpace(string(b))
		}
		return fmt.Errorf("%s %s: %w", method, path, he)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Heartbeat tells the hub the agent is alive.
func (c *Client) Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	var resp api.HeartbeatResponse
	err := c.Do(ctx, http.MethodPost, api.PathAgentHeartbeat, req, &resp)
	return resp, err
}

// Renew asks for a new certificate for the key behind csrPEM.
func (c *Client) Renew(ctx context.Context, csrPEM []byte) (api.RenewResponse, error) {
	var resp api.RenewResponse
	err := c.Do(ctx, http.MethodPost, api.PathAgentRenew, api.RenewRequest{CSR: string(csrPEM)}, &resp)
	return resp, err
}

// Health fetches the hub's unauthenticated health document.
func (c *Client) Health(ctx context.Context) (api.Health, error) {
	var h api.Health
	err := c.Do(ctx, http.MethodGet, api.PathHealth, nil, &h)
	return h, err
}

// PutInventory pushes the complete inventory of one source. Pushing is idempotent, so the client
// retries it freely.
func (c *Client) PutInventory(ctx context.Context, inv *api.Inventory) (api.InventoryResult, error) {
	var res api.InventoryResult
	err := c.Do(ctx, http.MethodPut, api.PathAgentInventory, inv, &res)
	return res, err
}

// backoff is the wait before retry attempt of a request: the hub's Retry-After when it sent one
// with 429 or 503, else an exponential wait from min to max, jittered (Jitter) so that the
// requests that one hub restart failed — many uploads of many agents — do not come back in
// step.
func backoff(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
	d := retryablehttp.DefaultBackoff(min, max, attempt, resp)
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) &&
		resp.Header.Get("Retry-After") != "" {
		return d
	}
	return Jitter(d)
}

// Jitter returns a wait between d/2 and d, drawn at random.
func Jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
