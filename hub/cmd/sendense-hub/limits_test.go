package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
)

// hubConn is one HTTP/1.1 connection to the hub, kept open between requests.
type hubConn struct {
	c  *tls.Conn
	br *bufio.Reader
}

func dialHub(addr string, pool *x509.CertPool) (*hubConn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	return &hubConn{c: c, br: bufio.NewReader(c)}, nil
}

// health asks for the health document on the connection and returns the status.
func (h *hubConn) health() (int, error) {
	_ = h.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(h.c, "GET %s HTTP/1.1\r\nHost: hub\r\n\r\n", api.PathHealth); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// The real server caps connections per client address (the extra one is closed at once, the
// others keep working, capacity returns when one closes) and cuts a body dripped into
// enrollment at request_body_timeout.
func TestServeCapsConnectionsAndCutsSlowBodies(t *testing.T) {
	addr, dataDir, _, _ := startHub(t, "--max-connections-per-address", "4", "--request-body-timeout", "1s")
	pem, err := os.ReadFile(filepath.Join(dataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)

	held := make([]*hubConn, 4)
	for i := range held {
		if held[i], err = dialHub(addr, pool); err != nil {
			t.Fatalf("connection %d within the cap: %v", i, err)
		}
		defer held[i].c.Close()
		if code, err := held[i].health(); code != http.StatusOK {
			t.Fatalf("connection %d within the cap: health %d %v", i, code, err)
		}
	}
	start := time.Now()
	if c, err := dialHub(addr, pool); err == nil {
		code, err := c.health()
		c.c.Close()
		if err == nil {
			t.Fatalf("a fifth connection from one address was served: %d", code)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the connection over the cap took %s to be refused, want at once", took)
	}
	for i, c := range held {
		if code, err := c.health(); code != http.StatusOK {
			t.Fatalf("connection %d within the cap after a refusal: %d %v", i, code, err)
		}
	}

	// Capacity returns once a connection closes (the hub notices the close on its next read).
	held[0].c.Close()
	var drip *hubConn
	deadline := time.Now().Add(5 * time.Second)
	for {
		if drip, err = dialHub(addr, pool); err == nil {
			if _, err = drip.health(); err == nil {
				break
			}
			drip.c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection admitted within 5s of one closing: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer drip.c.Close()

	// One byte every 200ms of a 1000-byte body would take 200s: the hub ends it after about 1s.
	_ = drip.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(drip.c, "POST %s HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", api.PathEnroll); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	go func() {
		for range 999 {
			time.Sleep(200 * time.Millisecond)
			if _, err := drip.c.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(drip.br, nil)
	if err != nil {
		t.Fatalf("no answer to a dripped enrollment within 10s: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if _, err := drip.br.ReadByte(); err != io.EOF {
		t.Fatalf("the connection stayed open after the answer %d: %v", resp.StatusCode, err)
	}
	if took := time.Since(start); resp.StatusCode != http.StatusRequestTimeout || took > 5*time.Second {
		t.Fatalf("dripped enrollment: %d after %s, want 408 after about 1s", resp.StatusCode, took)
	}
}
