package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	hubapi "github.com/sendense/sendense/hub/internal/api"
	"github.com/sendense/sendense/shared/api"
)

// fakeConsole records the paths it serves; /block waits until release is closed.
type fakeConsole struct {
	mu      sync.Mutex
	paths   []string
	entered chan struct{}
	release chan struct{}
}

func (f *fakeConsole) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.paths = append(f.paths, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	if r.URL.Path == "/jobs/block" {
		f.entered <- struct{}{}
		<-f.release
	}
	_, _ = io.WriteString(w, "console")
}

func (f *fakeConsole) HasSession(r *http.Request) bool {
	c, err := r.Cookie("session")
	return err == nil && c.Value != ""
}

func TestConsoleMountedBesideTheAPI(t *testing.T) {
	fc := &fakeConsole{entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := hubapi.New(hubapi.Deps{Log: slog.New(slog.DiscardHandler), Console: fc, ConsolePaths: []string{"/", "/login", "/vms", "/jobs", "/static"},
		Limits: hubapi.Limits{UnauthenticatedPerAddress: 1}})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	for _, c := range []struct{ method, path string }{{"GET", "/"}, {"GET", "/login"}, {"POST", "/login"}, {"GET", "/vms"}, {"GET", "/vms/ctx-a"}, {"GET", "/static/console.js"}} {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "console" {
			t.Errorf("%s %s: %d %q, want the console", c.method, c.path, resp.StatusCode, b)
		}
	}
	// The API's own paths are untouched: an unknown one is the API's JSON 404, not the console.
	resp, err := http.Get(ts.URL + "/api/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || e.Code != api.CodeNotFound {
		t.Fatalf("GET /api/v1/nope: %d %+v, want the API's 404", resp.StatusCode, e)
	}
	for _, ep := range srv.Endpoints() {
		if !strings.HasPrefix(ep.Path, "/api/") {
			t.Errorf("health lists the console path %s %s as an API endpoint", ep.Method, ep.Path)
		}
	}

	// A request without credentials holds the address's one anonymous slot: another anonymous
	// request is refused, one with a console session is not.
	done := make(chan struct{})
	go func() {
		defer close(done)
		if r, err := http.Get(ts.URL + "/jobs/block"); err == nil {
			r.Body.Close()
		}
	}()
	<-fc.entered
	r, err := http.Get(ts.URL + "/vms")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second anonymous request: %d, want 429", r.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/vms", nil)
	req.AddCookie(&http.Cookie{Name: "session", Value: "x"})
	if r, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("request with a console session: %d, want 200", r.StatusCode)
	}
	close(fc.release)
	<-done
}
