// Package connlimit caps the connections a listener hands out, in total and per client IP
// address, so that one client (or a few) cannot hold every file descriptor of the process.
//
// The caps act on accepted TCP connections, before TLS and before any request is read, so they
// cannot tell an enrolled agent or an operator from a stranger: they must be generous enough for
// the busiest legitimate address and only bound what an anonymous client can hold. Finer limits
// that know who is calling (requests in flight without credentials) belong in the HTTP layer.
package connlimit

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Options left zero.
//
// An agent holds up to about 40 connections to the hub while it backs up a disk (32 chunk
// uploads for the whole process, api.MaxUploadsPerAgent, and 4 record requests per disk, plus
// its long poll, heartbeat and progress reports) and keeps at most 64 idle; an operator's CLI or
// scripts hold a few. 128 per address leaves room for an agent running several jobs at once, or
// a couple of agents behind one NAT address, and still means that an
// anonymous client needs 32 addresses to fill the total. 4096 in total serves a couple of
// hundred agents uploading at full parallelism and stays far below the file limit Go raises
// the process to (the hard limit, commonly 2^19 or more under systemd), leaving room for
// repository files and catalog connections.
const (
	DefaultMaxConns           = 4096
	DefaultMaxConnsPerAddress = 128
)

// Reasons a connection is refused, the values of the reason label.
const (
	ReasonTotal      = "max_connections"
	ReasonPerAddress = "max_connections_per_address"
)

// Options are the caps of a Listener; zero selects the default.
type Options struct {
	MaxConns           int
	MaxConnsPerAddress int
}

// Listener wraps a net.Listener. Accept admits a connection while both caps have room; over a
// cap, the connection is closed at once (with a reset, so that neither side keeps state for
// it), counted, and Accept waits for the next one. A connection frees its place when it is
// closed, whoever closes it. Safe for concurrent use.
type Listener struct {
	net.Listener
	max, perAddr int
	log          *slog.Logger

	mu       sync.Mutex
	open     int
	byAddr   map[string]int
	lastWarn time.Time

	openGauge prometheus.Gauge
	rejected  *prometheus.CounterVec
}

// New wraps ln with the caps of opts and registers its metrics with reg (nil registers nothing).
func New(ln net.Listener, opts Options, log *slog.Logger, reg prometheus.Registerer) *Listener {
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.MaxConnsPerAddress <= 0 {
		opts.MaxConnsPerAddress = DefaultMaxConnsPerAddress
	}
	l := &Listener{
		Listener: ln,
		max:      opts.MaxConns,
		perAddr:  opts.MaxConnsPerAddress,
		log:      log,
		byAddr:   make(map[string]int),
		openGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sendense_hub_connections_open",
			Help: "Connections open on the API listener.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sendense_hub_connections_rejected_total",
			Help: "Connections closed at once because a cap was reached, by reason (max_connections, max_connections_per_address).",
		}, []string{"reason"}),
	}
	l.rejected.WithLabelValues(ReasonTotal)
	l.rejected.WithLabelValues(ReasonPerAddress)
	if reg != nil {
		reg.MustRegister(l.openGauge, l.rejected)
	}
	return l
}

// Accept returns the next connection within the caps. Its errors are those of the wrapped
// listener.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := addressKey(c.RemoteAddr())
		if reason := l.admit(key); reason != "" {
			l.reject(c, key, reason)
			continue
		}
		return &conn{Conn: c, l: l, key: key}, nil
	}
}

// admit takes a place for key, or returns why there is none.
func (l *Listener) admit(key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.open >= l.max:
		return ReasonTotal
	case l.byAddr[key] >= l.perAddr:
		return ReasonPerAddress
	}
	l.open++
	l.byAddr[key]++
	l.openGauge.Inc()
	return ""
}

func (l *Listener) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byAddr[key]--; l.byAddr[key] <= 0 {
		delete(l.byAddr, key)
	}
	l.openGauge.Dec()
}

// reject closes c and reports it: a warning at most once a minute (a flood must not flood the
// log too), debug lines otherwise.
func (l *Listener) reject(c net.Conn, key, reason string) {
	l.rejected.WithLabelValues(reason).Inc()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
	if l.log == nil {
		return
	}
	l.mu.Lock()
	warn := time.Since(l.lastWarn) >= time.Minute
	if warn {
		l.lastWarn = time.Now()
	}
	limit := l.max
	if reason == ReasonPerAddress {
		limit = l.perAddr
	}
	l.mu.Unlock()
	level := slog.LevelDebug
	if warn {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "connection refused: cap reached (further refusals within a minute are logged at debug)",
		"remote_addr", key, "reason", reason, "limit", limit)
}

// addressKey is the client's IP address (IPv4-mapped IPv6 as IPv4), or the whole address when
// it is not TCP.
func addressKey(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().String()
	}
	return a.String()
}

// conn gives its place back once, on the first Close.
type conn struct {
	net.Conn
	l    *Listener
	key  string
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}
