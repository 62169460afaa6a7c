package connlimit

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// echoServer serves l: every accepted connection echoes what it reads until the peer closes.
func echoServer(t *testing.T, l net.Listener) {
	t.Helper()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// works reports whether c still echoes.
func works(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err := io.ReadFull(c, b)
	return err == nil && b[0] == 'x'
}

// closedAtOnce reports whether the server closes a new connection to addr without answering,
// well within 5s. The reset may already fail the dial.
func closedAtOnce(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return !errors.Is(err, os.ErrDeadlineExceeded)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte("x"))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestCaps(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		cap    int
		reason string
	}{
		{"per address", Options{MaxConns: 100, MaxConnsPerAddress: 3}, 3, ReasonPerAddress},
		{"total", Options{MaxConns: 2, MaxConnsPerAddress: 100}, 2, ReasonTotal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			l := New(ln, tc.opts, nil, reg)
			defer l.Close()
			echoServer(t, l)
			addr := ln.Addr().String()

			held := make([]net.Conn, tc.cap)
			for i := range held {
				held[i] = dial(t, addr)
				if !works(held[i]) {
					t.Fatalf("connection %d within the cap does not work", i)
				}
			}
			if !closedAtOnce(addr) {
				t.Fatal("a connection over the cap was served")
			}
			for i, c := range held {
				if !works(c) {
					t.Fatalf("connection %d within the cap stopped working after a refusal", i)
				}
			}
			if got := testutil.ToFloat64(l.rejected.WithLabelValues(tc.reason)); got != 1 {
				t.Fatalf("rejected{reason=%s} = %v, want 1", tc.reason, got)
			}
			if got := testutil.ToFloat64(l.openGauge); got != float64(tc.cap) {
				t.Fatalf("open = %v, want %d", got, tc.cap)
			}

			// Capacity returns once a held connection closes (the server notices the close
			// when its read returns, so wait for the gauge).
			_ = held[0].Close()
			deadline := time.Now().Add(5 * time.Second)
			for testutil.ToFloat64(l.openGauge) != float64(tc.cap-1) {
				if time.Now().After(deadline) {
					t.Fatal("a closed connection did not give its place back")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if again := dial(t, addr); !works(again) {
				t.Fatal("no connection is admitted after one closed")
			}
		})
	}
}

func TestDefaultsAndKeys(t *testing.T) {
	l := New(nil, Options{}, nil, nil)
	if l.max != DefaultMaxConns || l.perAddr != DefaultMaxConnsPerAddress {
		t.Fatalf("zero options: %d/%d, want the defaults", l.max, l.perAddr)
	}
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 2}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 3}, "2001:db8::1"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "/run/x.sock"},
	} {
		if got := addressKey(tc.addr); got != tc.want {
			t.Errorf("addressKey(%v) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
