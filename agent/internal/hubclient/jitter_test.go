package hubclient

import (
	"net/http"
	"testing"
	"time"
)

// Retries after a failure wait between half and all of the exponential backoff, drawn at
// random, so that the requests one hub restart failed do not return in step; a Retry-After
// the hub sent with 429 or 503 is kept as it is.
func TestBackoffIsJittered(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		d := backoff(500*time.Millisecond, 30*time.Second, 3, nil)
		if d < 2*time.Second || d > 4*time.Second {
			t.Fatalf("backoff of attempt 3: %v, want 2 s to 4 s", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("200 backoffs took only %d values", len(seen))
	}
	resp := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"7"}}}
	if d := backoff(500*time.Millisecond, 30*time.Second, 3, resp); d != 7*time.Second {
		t.Fatalf("backoff with Retry-After 7: %v", d)
	}
}
