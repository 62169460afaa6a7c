package testenv

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A closed port refuses connections and keeps its number; Listen then answers on it.
func TestClosedPort(t *testing.T) {
	p := NewClosedPort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port))
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			_ = c.Close()
		}
		t.Fatalf("dial a closed port: %v, want connection refused", err)
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		_ = ln.Close()
		t.Fatal("another socket could listen on the held port")
	}
	ln, err := p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := ln.Addr().(*net.TCPAddr).Port; got != p.Port {
		t.Fatalf("listening on port %d, want %d", got, p.Port)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			_, _ = c.Write([]byte("ok"))
			_ = c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial after Listen: %v", err)
	}
	defer c.Close()
	buf := make([]byte, 2)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if _, err := p.Listen(); err == nil {
		t.Fatal("a second Listen succeeded")
	}
}
