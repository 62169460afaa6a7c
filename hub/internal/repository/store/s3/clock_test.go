package s3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// unchunk reads a request's body, decoding the aws-chunked framing the client uses for signed
// uploads over plain HTTP.
func unchunk(t *testing.T, r *http.Request) []byte {
	t.Helper()
	body, _ := io.ReadAll(r.Body)
	if !strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
		return body
	}
	var out []byte
	br := bufio.NewReader(bytes.NewReader(body))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Errorf("aws-chunked body: %v", err)
			return out
		}
		size, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil || n == 0 {
			return out
		}
		chunk := make([]byte, n+2) // the data and its CRLF
		if _, err := io.ReadFull(br, chunk); err != nil {
			t.Errorf("aws-chunked body: %v", err)
			return out
		}
		out = append(out, chunk[:n]...)
	}
}

// A server whose clock is behind this host's by more than the margin would make live leases
// look stale and fresh chunks look old enough to collect: a lock (which every garbage collection
// takes) is refused, naming the clocks, before it looks at the lease, so another process's live
// lease, which looks stale by that clock, is not taken over. A server within the margin, or
// ahead, is fine. The object written to read the clock is removed either way.
func TestLockRefusesAServerClockBehind(t *testing.T) {
	for _, tc := range []struct {
		skew time.Duration // server clock minus this host's
		ok   bool
	}{
		{-2 * time.Minute, false},
		{-3 * time.Second, true},
		{time.Minute, true},
	} {
		var mu sync.Mutex
		objects := map[string][]byte{}
		modified := map[string]time.Time{}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body := unchunk(t, r)
			mu.Lock()
			defer mu.Unlock()
			b, held := objects[r.URL.Path]
			switch {
			case r.Method == http.MethodPut && r.Header.Get("If-None-Match") == "*" && held:
				w.WriteHeader(http.StatusPreconditionFailed)
			case r.Method == http.MethodPut:
				objects[r.URL.Path], modified[r.URL.Path] = body, time.Now().Add(tc.skew)
				w.Header().Set("ETag", `"00112233445566778899aabbccddeeff"`)
			case (r.Method == http.MethodHead || r.Method == http.MethodGet) && held:
				w.Header().Set("Content-Length", strconv.Itoa(len(b)))
				w.Header().Set("Last-Modified", modified[r.URL.Path].UTC().Format(http.TimeFormat))
				w.Header().Set("ETag", `"00112233445566778899aabbccddeeff"`)
				if r.Method == http.MethodGet {
					_, _ = w.Write(b)
				}
			case r.Method == http.MethodHead || r.Method == http.MethodGet:
				w.WriteHeader(http.StatusNotFound)
			case r.Method == http.MethodDelete:
				delete(objects, r.URL.Path)
				w.WriteHeader(http.StatusNoContent)
			default:
				w.WriteHeader(http.StatusNotImplemented)
			}
		}))
		s, err := connect(Config{Endpoint: srv.URL, Bucket: "bkt", Region: "us-east-1", AccessKey: "a", SecretKey: "b"})
		if err != nil {
			t.Fatal(err)
		}
		live := []byte("another-holder\n")
		if !tc.ok {
			// Renewed a moment ago by another process, by the server's (lagging) clock.
			objects["/bkt/locks/gc"], modified["/bkt/locks/gc"] = live, time.Now().Add(tc.skew)
		}
		release, err := s.Lock(t.Context(), "gc")
		mu.Lock()
		lease := objects["/bkt/locks/gc"]
		probes := 0
		for k := range objects {
			if strings.Contains(k, ".clock-") {
				probes++
			}
		}
		mu.Unlock()
		if probes != 0 {
			t.Errorf("server clock %v off: %d clock probes left", tc.skew, probes)
		}
		switch {
		case tc.ok && err != nil:
			t.Errorf("server clock %v off: %v, want the lock", tc.skew, err)
		case tc.ok:
			if err := release(); err != nil {
				t.Errorf("server clock %v off: release: %v", tc.skew, err)
			}
		case !errors.Is(err, ErrClockBehind) || !bytes.Equal(lease, live):
			t.Errorf("server clock %v off: %v, lease %q; want ErrClockBehind and the other holder's lease untouched", tc.skew, err, lease)
		default:
			t.Logf("refused: %v", err)
		}
		_ = s.Close()
		srv.Close()
	}
}
