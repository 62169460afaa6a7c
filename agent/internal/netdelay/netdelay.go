// Package netdelay is a TCP proxy that adds a round-trip time to every connection through it, so
// that a benchmark on loopback sees what a wide-area link does to a protocol: each byte arrives
// half a round trip after it was sent, and a sender may have at most one window of bytes
// unacknowledged, acknowledged a full round trip after sending, as a TCP receiver's window
// allows.
package netdelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultWindow is the window a Linux receiver may advertise at most by default: the maximum of
// net.ipv4.tcp_rmem (6 MiB when it cannot be read).
func DefaultWindow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_rmem")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			if n, err := strconv.Atoi(f[2]); err == nil && n > 0 {
				return n
			}
		}
	}
	return 6 << 20
}

// segmentSize is the smallest window, and maxSegment the most one read forwards at once (a
// quarter of the window at most, so that the window still paces the bytes).
const (
	segmentSize = 64 << 10
	maxSegment  = 256 << 10
)

// Proxy forwards TCP connections to a target with a round-trip time added.
type Proxy struct {
	ln     net.Listener
	target string
	oneWay time.Duration
	window int
	seg    int // the size of a segment's buffer
	// bufs holds segment buffers (*[]byte of seg bytes) for every connection: a new
	// connection reuses what earlier ones read into instead of touching fresh pages (an agent
	// opens dozens, and with a round trip each holds up to half a window in flight).
	bufs sync.Pool

	wg sync.WaitGroup
}

// Listen opens a proxy on addr to target that adds rtt to every round trip and lets at most
// window bytes be in flight in each direction of a connection.
func Listen(addr, target string, rtt time.Duration, window int) (*Proxy, error) {
	if rtt < 0 || window < segmentSize {
		return nil, fmt.Errorf("latency proxy: rtt %v must not be negative, window %d at least %d", rtt, window, segmentSize)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("latency proxy: %w", err)
	}
	p := &Proxy{ln: ln, target: target, oneWay: rtt / 2, window: window, seg: max(segmentSize, min(maxSegment, window/4))}
	p.bufs.New = func() any { b := make([]byte, p.seg); return &b }
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Serve forwards connections until ctx ends, then closes the listener and every connection.
func (p *Proxy) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		_ = p.ln.Close()
	}()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			p.wg.Wait()
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("latency proxy: accept: %w", err)
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.forward(ctx, c)
		}()
	}
}

// Close stops accepting connections.
func (p *Proxy) Close() error { return p.ln.Close() }

func (p *Proxy) forward(ctx context.Context, c net.Conn) {
	defer c.Close()
	var d net.Dialer
	u, err := d.DialContext(ctx, "tcp", p.target)
	if err != nil {
		return
	}
	defer u.Close()
	stop := context.AfterFunc(ctx, func() {
		_ = c.Close()
		_ = u.Close()
	})
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(u, c) }()
	go func() { defer wg.Done(); p.pipe(c, u) }()
	wg.Wait()
}

type segment struct {
	buf *[]byte // from the proxy's pool
	n   int     // the bytes of buf to deliver
	due time.Time
}

// pipe copies src to dst, each segment delivered oneWay after it was read; a segment's bytes
// count against the window until a round trip after it was read (its acknowledgement's return).
func (p *Proxy) pipe(dst, src net.Conn) {
	w := newWindow(p.window)
	q := make(chan segment, p.window/segmentSize+1)
	go func() {
		defer close(q)
		for {
			bp := p.bufs.Get().(*[]byte)
			n, err := src.Read(*bp)
			if n > 0 {
				w.acquire(n)
				q <- segment{buf: bp, n: n, due: time.Now().Add(p.oneWay)}
			} else {
				p.bufs.Put(bp)
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for s := range q {
		n := s.n
		if failed {
			p.bufs.Put(s.buf)
			w.release(n)
			continue
		}
		time.Sleep(time.Until(s.due))
		if _, err := dst.Write((*s.buf)[:n]); err != nil {
			failed = true
			_ = src.Close()
		}
		p.bufs.Put(s.buf)
		time.AfterFunc(p.oneWay, func() { w.release(n) })
	}
	if tc, ok := dst.(*net.TCPConn); ok && !failed {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}

// window counts bytes in flight, blocking acquire beyond its size.
type window struct {
	mu    sync.Mutex
	cond  *sync.Cond
	free  int
	total int
}

func newWindow(n int) *window {
	w := &window{free: n, total: n}
	w.cond = sync.NewCond(&w.mu)
	return w
}

func (w *window) acquire(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.free < n {
		w.cond.Wait()
	}
	w.free -= n
}

func (w *window) release(n int) {
	w.mu.Lock()
	w.free += n
	w.mu.Unlock()
	w.cond.Broadcast()
}
