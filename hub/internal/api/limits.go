package api

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/httpin"
	"github.com/sendense/sendense/hub/internal/stall"
	"github.com/sendense/sendense/shared/api"
)

// Limits bound what a client holds of the hub while it sends slowly or not at all. Zero fields
// select the defaults.
type Limits struct {
	// BodyTimeout is the time allowed for the whole body of a request, counted from the end of
	// its headers; for uploads it is the grace before UploadMinRate applies. Default 10s: the
	// bodies of enrollment, heartbeats and operator requests are a few KiB.
	BodyTimeout time.Duration
	// UploadMinRate is the lowest average rate, in bytes per second, at which an upload body
	// (chunk, slot batch, inventory) may arrive after BodyTimeout. Default 8 KiB/s.
	UploadMinRate int64
	// UnauthenticatedPerAddress caps the requests without credentials (enrollment, health, the
	// OpenAPI document, requests with neither a client certificate nor a bearer token) in flight
	// per client address. Default 16: enough for an automated rollout enrolling agents behind
	// one NAT address in parallel and a monitoring system's health checks, while one anonymous
	// address still holds no more than 16 handlers' worth of catalog and signing work (the
	// connection caps allow it many more connections).
	UnauthenticatedPerAddress int
	// ReadStall is how long one write of a restore-point read (an image download, a file-level
	// restore, an agent's restore image) may wait for the client to take bytes before the
	// connection is closed. Default 2m: a 4 MiB write then needs about 35 KB/s, and a client
	// that stops reading gives back its place among the reads served at once.
	ReadStall time.Duration
}

// DefaultUploadMinRate is the default of Limits.UploadMinRate. The agent gives up on a call
// after 2 minutes, so it never completes a 4 MiB chunk below 34 KiB/s: a quarter of that does
// not cut an upload the agent would have finished, and still ends a drip-fed one.
const DefaultUploadMinRate = 8 << 10

func (l Limits) withDefaults() Limits {
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = 10 * time.Second
	}
	if l.UploadMinRate <= 0 {
		l.UploadMinRate = DefaultUploadMinRate
	}
	if l.UnauthenticatedPerAddress <= 0 {
		l.UnauthenticatedPerAddress = 16
	}
	if l.ReadStall <= 0 {
		l.ReadStall = 2 * time.Minute
	}
	return l
}

// stallWriter is the response of a restore-point read, each of whose writes must be taken by
// the client within Limits.ReadStall (stall.Writer), for gin.
type stallWriter struct {
	gin.ResponseWriter
	w *stall.Writer
}

func (w stallWriter) Write(p []byte) (int, error)       { return w.w.Write(p) }
func (w stallWriter) WriteString(p string) (int, error) { return w.w.Write([]byte(p)) }

// guardStall makes the rest of c's response subject to Limits.ReadStall.
func (s *Server) guardStall(c *gin.Context) {
	c.Writer = stallWriter{ResponseWriter: c.Writer, w: stall.New(c.Writer, s.limits.ReadStall)}
}

// uploadRoutes carry large bodies from agents (4 MiB chunks and slot batches, inventories up to
// 64 MiB): a minimum rate applies to them instead of a deadline for the whole body, so that a
// slow link is not cut while a drip-fed body is.
var uploadRoutes = map[string]bool{
	http.MethodPut + " " + ginPath(api.PathAgentChunk):     true,
	http.MethodPost + " " + ginPath(api.PathAgentChunks):   true,
	http.MethodPost + " " + ginPath(api.PathAgentSlots):    true,
	http.MethodPut + " " + ginPath(api.PathAgentInventory): true,
}

// Reasons a request body is cut, the values of the reason label.
const (
	cutBodyTimeout   = "body_timeout"
	cutUploadMinRate = "upload_min_rate"
)

// errTooManyRequests refuses a request over a per-address cap.
var errTooManyRequests = errors.New("too many requests")

// bodyDeadlines puts a read deadline on the body of every request that has one: the whole body
// within BodyTimeout, or for uploads BodyTimeout plus one second per UploadMinRate bytes
// received. It runs before authentication, so a body that is refused unread is bounded too
// (net/http discards up to 256 KiB of it after the handler, under the same deadline).
//
// Requests without a body (long polls, the image download) get no deadline, and no write
// deadline is ever set: responses stream as long as the client reads them. Once the body is
// read to its end the deadline is lifted, so the handler's work after it is not bounded (as of
// Go 1.26 net/http also clears it when it starts its background read of an HTTP/1 connection;
// lifting it here does not depend on that). A body cut by its deadline makes the response close
// the connection; the cut is logged and counted.
func (s *Server) bodyDeadlines() gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.Body == nil || c.Request.Body == http.NoBody {
			c.Next()
			return
		}
		b := &deadlineBody{
			ReadCloser: c.Request.Body,
			rc:         http.NewResponseController(c.Writer),
			header:     c.Writer.Header(),
			start:      time.Now(),
			grace:      s.limits.BodyTimeout,
		}
		if uploadRoutes[c.Request.Method+" "+c.FullPath()] {
			b.rate = s.limits.UploadMinRate
		}
		if err := b.rc.SetReadDeadline(b.start.Add(b.grace)); err != nil {
			c.Next() // a writer without deadlines (a test recorder): nothing to enforce
			return
		}
		c.Request.Body = b
		c.Next()
		if b.cut == "" {
			return
		}
		s.metrics.slowClients.WithLabelValues(b.cut).Inc()
		// An enrolled agent or an operator being cut is worth a warning (a link slower than the
		// settings allow); an anonymous drip-feeder is counted, and logged only at debug.
		level := slog.LevelDebug
		if _, ok := c.Get(ctxAgentID); ok {
			level = slog.LevelWarn
		} else if _, ok := c.Get(ctxTokenID); ok {
			level = slog.LevelWarn
		}
		route := c.FullPath()
		if route == "" {
			route = "(unmatched)"
		}
		s.deps.Log.Log(c.Request.Context(), level, "request body too slow: connection closed",
			"method", c.Request.Method, "route", route, "remote_addr", clientAddr(c), "reason", b.cut,
			"body_bytes", b.n, "duration_seconds", time.Since(b.start).Seconds())
	}
}

// deadlineBody enforces the read deadline of a request body through its ResponseController.
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	header http.Header
	start  time.Time
	grace  time.Duration
	rate   int64 // bytes per second after grace; 0: the whole body within grace

	n        int64     // bytes read
	deadline time.Time // last deadline set
	cut      string    // why the body was cut, if it was
	done     bool      // read to its end: no deadline any more
}

// due is the deadline for the rest of the body: grace after start, plus for uploads the time
// the bytes received have earned at the minimum rate.
func (b *deadlineBody) due() time.Time {
	d := b.start.Add(b.grace)
	if b.rate > 0 {
		d = d.Add(time.Duration(float64(b.n) / float64(b.rate) * float64(time.Second)))
	}
	return d
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.cut = cutBodyTimeout
		err = fmt.Errorf("%w: the whole body is due within %s", httpin.ErrSlowBody, b.grace)
		if b.rate > 0 {
			b.cut = cutUploadMinRate
			err = fmt.Errorf("%w: below %d bytes/s after %s", httpin.ErrSlowBody, b.rate, b.grace)
		}
		// Whatever the handler answers, the connection closes after it (HTTP/2: the stream
		// ends and the connection is shut down gracefully).
		b.header.Set("Connection", "close")
	case err == nil && b.rate > 0 && n > 0:
		// Extend by the time the bytes received have earned; a deadline moved by less than 50ms
		// is left alone, to keep the timer updates rare on fast links with small reads.
		d := b.due()
		if d.Sub(b.deadline) >= 50*time.Millisecond {
			b.deadline = d
			_ = b.rc.SetReadDeadline(d)
		}
	}
	return n, err
}

// HoldDeadline lifts the body's read deadline while its handler waits for something other than
// the client (ingest.DeadlineHolder); the function it returns sets the deadline again, counted as
// if the wait had not happened.
func (b *deadlineBody) HoldDeadline() (resume func()) {
	held := time.Now()
	_ = b.rc.SetReadDeadline(time.Time{})
	return func() {
		if b.done {
			return
		}
		b.start = b.start.Add(time.Since(held))
		b.deadline = b.due()
		_ = b.rc.SetReadDeadline(b.deadline)
	}
}

// limitUnauthenticated caps the requests without credentials in flight per client address;
// over the cap a request is answered 429 at once and its connection closed. The connection
// caps (package connlimit) act before TLS and cannot tell who calls; this is where anonymous
// clients are held to a small share. A request with a bearer token or client certificate is
// not counted here even if authentication then refuses it: it is refused before its body is
// read.
func (s *Server) limitUnauthenticated() gin.HandlerFunc {
	return func(c *gin.Context) {
		if !unauthenticated(c) || (s.deps.Console != nil && s.deps.Console.HasSession(c.Request)) {
			c.Next()
			return
		}
		key := clientAddr(c)
		if !s.anon.acquire(key) {
			c.Header("Retry-After", "1")
			c.Header("Connection", "close")
			s.fail(c, fmt.Errorf("%w: %d requests without credentials from %s are in flight already", errTooManyRequests, s.anon.max, key))
			return
		}
		defer s.anon.release(key)
		c.Next()
	}
}

// unauthenticated reports whether a request carries no credentials, or goes to a public route.
func unauthenticated(c *gin.Context) bool {
	switch c.FullPath() {
	case api.PathEnroll, api.PathHealth, api.PathOpenAPI, "":
		return true
	}
	if t := c.Request.TLS; t != nil && len(t.VerifiedChains) > 0 {
		return false
	}
	_, bearer := bearerToken(c.GetHeader("Authorization"))
	return !bearer
}

// clientAddr is the client's IP address as the connection caps count it (IPv4-mapped IPv6 as
// IPv4). The hub terminates TLS itself, so there is no proxy whose forwarding headers it could
// trust.
func clientAddr(c *gin.Context) string {
	ip := c.RemoteIP()
	if a, err := netip.ParseAddr(ip); err == nil {
		return a.Unmap().String()
	}
	return ip
}

// keyedSemaphore counts requests in flight per key (a client address, an agent), up to max
// each. Keys with none in flight take no memory.
type keyedSemaphore struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func newKeyedSemaphore(max int) *keyedSemaphore {
	return &keyedSemaphore{max: max, n: make(map[string]int)}
}

func (a *keyedSemaphore) acquire(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[key] >= a.max {
		return false
	}
	a.n[key]++
	return true
}

func (a *keyedSemaphore) release(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[key]--; a.n[key] <= 0 {
		delete(a.n, key)
	}
}
