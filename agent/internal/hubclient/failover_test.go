package hubclient_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/shared/api"
)

// hub is a TLS server on loopback that counts the requests it answers.
type hub struct {
	srv  *httptest.Server
	hits atomic.Int32
}

func newHub(t *testing.T, h http.HandlerFunc) *hub {
	t.Helper()
	x := &hub{}
	x.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(x.srv.Close)
	return x
}

func heartbeatOK(w http.ResponseWriter, r *http.Request) {
	var req api.HeartbeatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Hostname != "agent-1" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	_ = json.NewEncoder(w).Encode(api.HeartbeatResponse{AgentID: "ag-1", Status: "active"})
}

func client(t *testing.T, tlsFrom *httptest.Server, urls ...string) *hubclient.Client {
	t.Helper()
	tc := tlsFrom.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	c, err := hubclient.New(urls[0], tc, slog.New(slog.DiscardHandler), hubclient.Options{
		Fallbacks: urls[1:], RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFailoverOnConnectionErrors(t *testing.T) {
	hb := api.HeartbeatRequest{Hostname: "agent-1", Version: "test"}
	t.Run("refused", func(t *testing.T) {
		dead := newHub(t, heartbeatOK)
		deadURL := dead.srv.URL
		dead.srv.Close()
		b := newHub(t, heartbeatOK)
		c := client(t, b.srv, deadURL, b.srv.URL)
		for range 3 {
			if _, err := c.Heartbeat(t.Context(), hb); err != nil {
				t.Fatalf("heartbeat with the first hub down: %v", err)
			}
		}
		if b.hits.Load() != 3 || c.Hub() != b.srv.URL {
			t.Fatalf("second hub answered %d of 3, client now on %s", b.hits.Load(), c.Hub())
		}
	})
	t.Run("cut mid-request", func(t *testing.T) {
		// The hub dies with the request in flight: the connection closes without an answer.
		a := newHub(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadAll(r.Body)
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		})
		b := newHub(t, heartbeatOK)
		c := client(t, a.srv, a.srv.URL, b.srv.URL)
		if _, err := c.Heartbeat(t.Context(), hb); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if a.hits.Load() != 1 || b.hits.Load() != 1 {
			t.Fatalf("hits: first %d, second %d; want 1 and 1 (the whole body resent)", a.hits.Load(), b.hits.Load())
		}
	})
	t.Run("wraps around", func(t *testing.T) {
		a := newHub(t, heartbeatOK)
		dead := newHub(t, heartbeatOK)
		deadURL := dead.srv.URL
		dead.srv.Close()
		c := client(t, a.srv, deadURL, a.srv.URL)
		if _, err := c.Heartbeat(t.Context(), hb); err != nil || c.Hub() != a.srv.URL {
			t.Fatalf("heartbeat: %v on %s", err, c.Hub())
		}
	})
}

func TestNoFailoverOnAnswers(t *testing.T) {
	hb := api.HeartbeatRequest{Hostname: "agent-1", Version: "test"}
	for _, tc := range []struct {
		name     string
		status   int
		wantErr  int
		wantHits int32
	}{
		{"forbidden", http.StatusForbidden, http.StatusForbidden, 1},
		{"not found", http.StatusNotFound, http.StatusNotFound, 1},
		{"unavailable then fine", http.StatusServiceUnavailable, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			a := newHub(t, func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 || tc.wantErr != 0 {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tc.status)
					_ = json.NewEncoder(w).Encode(api.Error{Error: "no"})
					return
				}
				heartbeatOK(w, r)
			})
			b := newHub(t, heartbeatOK)
			c := client(t, a.srv, a.srv.URL, b.srv.URL)
			_, err := c.Heartbeat(context.Background(), hb)
			if got := hubclient.StatusOf(err); got != tc.wantErr {
				t.Fatalf("status of the error = %d (%v), want %d", got, err, tc.wantErr)
			}
			if a.hits.Load() != tc.wantHits || b.hits.Load() != 0 || c.Hub() != a.srv.URL {
				t.Fatalf("hits: first %d, second %d; client on %s: an answer must not fail over", a.hits.Load(), b.hits.Load(), c.Hub())
			}
		})
	}
}
