package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/hub/internal/repository/store/s3/s3test"
	"github.com/sendense/sendense/hub/internal/repository/store/storetest"
	"github.com/sendense/sendense/shared/testenv"
)

func open(t *testing.T, cfg s3.Config) *s3.Store {
	t.Helper()
	s, err := s3.Open(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestConformance runs the store's conformance suite against SeaweedFS, each backing a fresh
// prefix of the bucket and each instance a client of its own, as another hub would be.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func(t *testing.T) store.Store {
		cfg := s3test.Config(t)
		return func(t *testing.T) store.Store { return open(t, cfg) }
	})
}

// throttler stands between the store and the server and answers every other request with 503
// SlowDown (or 500 InternalError), as a busy S3 service does.
type throttler struct {
	mu        sync.Mutex
	n         int
	throttled int
	proxy     *httputil.ReverseProxy
}

func (p *throttler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.n++
	refuse, n := p.n%2 == 1, p.n
	if refuse {
		p.throttled++
	}
	p.mu.Unlock()
	if !refuse {
		p.proxy.ServeHTTP(w, r)
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	code, status := "SlowDown", http.StatusServiceUnavailable
	if n%4 == 3 {
		code, status = "InternalError", http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>try later</Message></Error>", code)
	}
}

// Throttling and server errors are retried with backoff: every operation succeeds through a
// server that refuses every other request.
func TestRetriesThrottlingAndServerErrors(t *testing.T) {
	cfg := s3test.Config(t)
	target, err := url.Parse(cfg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	th := &throttler{proxy: httputil.NewSingleHostReverseProxy(target)}
	ts := httptest.NewServer(th)
	t.Cleanup(ts.Close)
	cfg.Endpoint = ts.URL
	s := open(t, cfg)
	ctx := t.Context()
	for i := range 10 {
		key := fmt.Sprintf("chunks/00/00/obj%d", i)
		b := bytes.Repeat([]byte{byte(i)}, 100_000+i)
		if err := s.Put(ctx, key, b); err != nil {
			t.Fatalf("Put through a throttling server: %v", err)
		}
		got, err := s.Get(ctx, key, nil, 0)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("Get through a throttling server: %v", err)
		}
		if err := s.Touch(ctx, key); err != nil {
			t.Fatalf("Touch through a throttling server: %v", err)
		}
	}
	n := 0
	if err := s.List(ctx, "chunks/", func(store.Info) error { n++; return nil }); err != nil || n != 10 {
		t.Fatalf("List through a throttling server: %d, %v", n, err)
	}
	// Every removal dropped its marker: none is left for CleanTemp.
	for i := range 10 {
		if _, _, err := s.RemoveIfOlder(ctx, fmt.Sprintf("chunks/00/00/obj%d", i), time.Now().Add(time.Hour)); err != nil {
			t.Fatalf("RemoveIfOlder through a throttling server: %v", err)
		}
	}
	if n, err := s.CleanTemp(ctx, true); err != nil || n != 0 {
		t.Fatalf("CleanTemp after removals: %d markers left, %v", n, err)
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	if th.throttled < 20 {
		t.Fatalf("only %d requests were refused: the test did not throttle", th.throttled)
	}
	t.Logf("%d of %d requests refused with 503 SlowDown or 500, all retried", th.throttled, th.n)
}

// The settings are checked before any request, and the errors name the setting.
func TestConfigCheck(t *testing.T) {
	good := s3.Config{Endpoint: "https://s3.example:9000", Bucket: "b", AccessKey: "k", SecretKey: "s"}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*s3.Config)
		want string
	}{
		{"no endpoint", func(c *s3.Config) { c.Endpoint = "" }, "s3 endpoint"},
		{"scheme", func(c *s3.Config) { c.Endpoint = "ftp://x" }, "s3 endpoint"},
		{"path", func(c *s3.Config) { c.Endpoint = "http://x/y" }, "s3 endpoint"},
		{"user", func(c *s3.Config) { c.Endpoint = "http://u:p@x" }, "s3 endpoint"},
		{"bucket", func(c *s3.Config) { c.Bucket = "" }, "s3 bucket"},
		{"prefix", func(c *s3.Config) { c.Prefix = "a/../b" }, "s3 prefix"},
		{"secret", func(c *s3.Config) { c.SecretKey = "" }, "s3 credentials"},
	} {
		c := good
		tc.mod(&c)
		if err := c.Check(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error on %s", tc.name, err, tc.want)
		}
	}
}

func TestReadCredentials(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "creds")
	if err := os.WriteFile(p, []byte("AKID\r\nsecret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, s, err := s3.ReadCredentials(p); err != nil || k != "AKID" || s != "secret-value" {
		t.Fatalf("ReadCredentials = %q, %q, %v", k, s, err)
	}
	if err := os.WriteFile(p, []byte("only-one-line-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s3.ReadCredentials(p); err == nil || strings.Contains(err.Error(), "only-one-line-secret") || !strings.Contains(err.Error(), p) {
		t.Fatalf("a one-line file: %v (must name the file, never its content)", err)
	}
	if _, _, err := s3.ReadCredentials(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing file was read")
	}
}

// An object larger than one request's part (an index of a disk of several TiB) is uploaded in
// parts and read back whole; a reader never sees it partly uploaded.
func TestLargeObjectInParts(t *testing.T) {
	s := open(t, s3test.Config(t))
	ctx := t.Context()
	const key = "indexes/vm/disk-2000/bk-big.fidx"
	b := make([]byte, 40<<20+12345)
	for i := range b {
		b[i] = byte(i * 7 >> 3)
	}
	if err := s.Put(ctx, key, b); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, key, nil, int64(len(b)))
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Get of a %d-byte object: %d bytes, %v", len(b), len(got), err)
	}
	if info, err := s.Stat(ctx, key); err != nil || info.Size != int64(len(b)) {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
}

// A lock whose holder dies is taken over once its lease has not been renewed for the lease's
// time, and not before; a live holder's renewals keep it.
func TestLockLeaseExpiresWithItsHolder(t *testing.T) {
	cfg := s3test.Config(t)
	ctx := t.Context()
	live, dead, other := open(t, cfg), open(t, cfg), open(t, cfg)
	for _, s := range []*s3.Store{live, dead, other} {
		s3.SetLeaseForTest(s, time.Second, 4*time.Second)
	}
	relLive, err := live.Lock(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Lock(ctx, "gc"); err != nil {
		t.Fatal(err)
	}
	s3.AbandonLocksForTest(dead)
	if _, err := other.Lock(ctx, "gc"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("a fresh lease was taken over: %v, want ErrLocked", err)
	}
	var rel func() error
	start := time.Now()
	testenv.WaitFor(t, 30*time.Second, "the dead holder's lease to be taken over", func() bool {
		rel, err = other.Lock(ctx, "gc")
		return err == nil
	})
	if waited := time.Since(start); waited < 2*time.Second {
		t.Fatalf("the lease was taken over after %v, before it went stale", waited)
	}
	if err := rel(); err != nil {
		t.Fatal(err)
	}
	// The live holder renewed all along: its lock, older than a lease by now, is still its own.
	time.Sleep(2 * time.Second)
	if _, err := other.Lock(ctx, "live"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("a renewed lease was taken over: %v, want ErrLocked", err)
	}
	if err := relLive(); err != nil {
		t.Fatal(err)
	}
}

// TestLateDeleteDoesNotUndoATouch: a server may carry out a DELETE after the client gave up on
// it. A removal whose delete timed out keeps its marker until it expires, so that a Touch
// waiting on it does not report an object that the late delete then removes.
func TestLateDeleteDoesNotUndoATouch(t *testing.T) {
	cfg := s3test.Config(t)
	up, err := url.Parse(cfg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(up)
	landed := make(chan struct{})
	var once sync.Once
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodDelete || !strings.Contains(r.URL.Path, "/chunks/") {
			rp.ServeHTTP(w, r)
			return
		}
		// The client gives up first; the server carries the delete out 1.5 s later.
		<-r.Context().Done()
		out := r.Clone(t.Context())
		out.URL.Scheme, out.URL.Host, out.RequestURI = up.Scheme, up.Host, ""
		time.Sleep(1500 * time.Millisecond)
		if resp, err := http.DefaultTransport.RoundTrip(out); err == nil {
			resp.Body.Close()
		}
		once.Do(func() { close(landed) })
	}))
	defer proxy.Close()
	cfg.Endpoint = proxy.URL
	s := open(t, cfg)
	s3.SetRemovalTimingForTest(s, 2*time.Second, 500*time.Millisecond, 6*time.Second)
	const key = "chunks/ab/cd/abcd"
	if err := s.Put(t.Context(), key, []byte("data")); err != nil {
		t.Fatal(err)
	}
	removal := make(chan error, 1)
	go func() {
		_, _, err := s.RemoveIfOlder(t.Context(), key, time.Now().Add(time.Hour))
		removal <- err
	}()
	time.Sleep(500 * time.Millisecond) // the removal holds its marker and has sent its delete
	touchErr := s.Touch(t.Context(), key)
	if err := <-removal; err == nil {
		t.Fatal("the removal whose delete timed out reported success")
	}
	select {
	case <-landed:
	case <-time.After(30 * time.Second):
		t.Fatal("the delayed delete never reached the server")
	}
	_, statErr := s.Stat(t.Context(), key)
	switch {
	case touchErr == nil && statErr != nil:
		t.Fatalf("Touch returned nil, then the late delete removed the object: %v", statErr)
	case touchErr != nil && !errors.Is(touchErr, store.ErrNotFound):
		t.Fatalf("touch: %v", touchErr)
	}
}

// probeKeeper stands between the store and the server and refuses the deletion of clock probes,
// as a connection lost at that moment, or a process dying, would leave them.
type probeKeeper struct{ proxy *httputil.ReverseProxy }

func (p probeKeeper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete && strings.Contains(r.URL.Path, ".clock-") {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>no</Message></Error>")
		return
	}
	p.proxy.ServeHTTP(w, r)
}

// A clock probe that its lock could not remove is left for CleanTemp, which removes it once no
// check can still be reading it, and leaves every lock's lease alone.
func TestCleanTempRemovesClockProbesLeftBehind(t *testing.T) {
	cfg := s3test.Config(t)
	cfg.Prefix += ".clock-lab" // only the probes' own names count, not a prefix that looks like one
	target, err := url.Parse(cfg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(probeKeeper{httputil.NewSingleHostReverseProxy(target)})
	t.Cleanup(ts.Close)
	lossy := cfg
	lossy.Endpoint = ts.URL
	release, err := open(t, lossy).Lock(t.Context(), "gc")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = release() }()

	s := open(t, cfg)
	if n, err := s.CleanTemp(t.Context(), true); err != nil || n != 0 {
		t.Fatalf("CleanTemp of a fresh probe (dry run) = %d, %v; want none: a live check may read it", n, err)
	}
	s3.SetProbeStaleForTest(s, 0)
	if n, err := s.CleanTemp(t.Context(), true); err != nil || n != 1 {
		t.Fatalf("CleanTemp (dry run) = %d, %v; want the probe left behind", n, err)
	}
	if n, err := s.CleanTemp(t.Context(), false); err != nil || n != 1 {
		t.Fatalf("CleanTemp = %d, %v; want the probe removed", n, err)
	}
	if n, err := s.CleanTemp(t.Context(), true); err != nil || n != 0 {
		t.Fatalf("CleanTemp after it removed the probe = %d, %v; want nothing left", n, err)
	}
	// The lease is still there: another process cannot take the lock.
	if _, err := s.Lock(t.Context(), "gc"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Lock of a held lock after CleanTemp: %v, want ErrLocked", err)
	}
}

// rawClient is a plain client of cfg's server, to set a bucket up as an operator would.
func rawClient(t *testing.T, cfg s3.Config) *minio.Client {
	t.Helper()
	u, err := url.Parse(cfg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	c, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// freshBucket makes a bucket of its own for a test that changes a bucket's settings (others
// share theirs), removed at the end.
func freshBucket(t *testing.T, c *minio.Client, cfg s3.Config, lock bool) s3.Config {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	cfg.Bucket = "sendense-test-" + hex.EncodeToString(b[:])
	if err := c.MakeBucket(t.Context(), cfg.Bucket, minio.MakeBucketOptions{ObjectLocking: lock}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.RemoveBucket(context.Background(), cfg.Bucket) })
	return cfg
}

// A bucket with a default retention would retain the store's locks and removal markers too: a
// store refuses it, naming the setting, with Object Lock or without, and opens once it is removed.
func TestObjectLockRefusesADefaultRetention(t *testing.T) {
	c := rawClient(t, s3test.Config(t))
	cfg := freshBucket(t, c, s3test.Config(t), true)
	cfg.ObjectLock = s3.LockCompliance
	mode, days, unit := minio.Governance, uint(1), minio.Days
	if err := c.SetObjectLockConfig(t.Context(), cfg.Bucket, &mode, &days, &unit); err != nil {
		t.Fatal(err)
	}
	if s, err := s3.Open(t.Context(), cfg, nil); err == nil || !strings.Contains(err.Error(), "default retention (GOVERNANCE, 1 days)") {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("Open over a bucket with a default retention: %v, want it refused naming the retention", err)
	}
	// A store without Object Lock over it is refused too: every object it puts would be retained.
	plain := cfg
	plain.ObjectLock = ""
	if s, err := s3.Open(t.Context(), plain, nil); err == nil || !strings.Contains(err.Error(), "default retention (GOVERNANCE, 1 days)") {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("Open without object lock over a bucket with a default retention: %v, want it refused", err)
	}
	if err := c.SetObjectLockConfig(t.Context(), cfg.Bucket, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	open(t, cfg)
	open(t, plain)
}

// A store without Object Lock over a bucket that keeps versions warns once opened: removals
// and touches there give no space back without a lifecycle rule. Over a plain bucket it does not.
func TestWarnsOfAVersionedBucket(t *testing.T) {
	plain := s3test.Config(t)
	c := rawClient(t, plain)
	versioned := freshBucket(t, c, plain, false)
	if err := c.EnableVersioning(t.Context(), versioned.Bucket); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  s3.Config
		warn bool
	}{{plain, false}, {versioned, true}} {
		var logs bytes.Buffer
		s, err := s3.Open(t.Context(), tc.cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		if got := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "the bucket keeps versions"); got != tc.warn {
			t.Errorf("bucket %s: warned %v, want %v; logs:\n%s", tc.cfg.Bucket, got, tc.warn, logs.String())
		}
	}
}
