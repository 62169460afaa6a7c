package netdelay

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every connection with what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func startProxy(t *testing.T, target string, rtt time.Duration, window int) *Proxy {
	t.Helper()
	p, err := Listen("127.0.0.1:0", target, rtt, window)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(t.Context()) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return p
}

// A request and its answer take one added round trip; bytes arrive intact.
func TestRoundTrip(t *testing.T) {
	p := startProxy(t, echoServer(t), 100*time.Millisecond, 1<<20)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	for range 3 {
		start := time.Now()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < 100*time.Millisecond || el > 2*time.Second || string(buf) != "hello" {
			t.Fatalf("round trip %v, %q; want 100 ms or a little more, hello", el, buf)
		}
	}
}

// At most a window of bytes is in flight per round trip: 2 MiB through a 256 KiB window at
// 50 ms take at least seven round trips; the bytes arrive intact and the half-close passes.
func TestWindowBoundsThroughput(t *testing.T) {
	p := startProxy(t, echoServer(t), 50*time.Millisecond, 256<<10)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 2<<20)
	_, _ = rand.Read(data)
	start := time.Now()
	go func() {
		_, _ = c.Write(data)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%d bytes back, not the %d sent", len(got), len(data))
	}
	if el := time.Since(start); el < 350*time.Millisecond {
		t.Fatalf("2 MiB through a 256 KiB window at 50 ms took %v, less than 7 round trips", el)
	}
}
