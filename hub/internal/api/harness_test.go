package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	hubapi "github.com/sendense/sendense/hub/internal/api"
	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/check"
	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/hub/internal/files"
	"github.com/sendense/sendense/hub/internal/gc"
	"github.com/sendense/sendense/hub/internal/identity"
	"github.com/sendense/sendense/hub/internal/ingest"
	"github.com/sendense/sendense/hub/internal/instantrecovery"
	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/nfsexport"
	"github.com/sendense/sendense/hub/internal/pki"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/hub/internal/repository/store/s3/s3test"
	"github.com/sendense/sendense/hub/internal/restore"
	"github.com/sendense/sendense/hub/internal/restoretest"
	"github.com/sendense/sendense/hub/internal/verify"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// testHub is a hub API on real TLS 1.3 on loopback with a real catalog.
type testHub struct {
	t       *testing.T
	URL     string
	CA      *pki.CA
	Cat     *catalog.Catalog
	IDs     *identity.Service
	Reg     *prometheus.Registry
	CatReg  *prometheus.Registry // sendense_hub_catalog_* only
	Logs    *testenv.LogBuffer
	Clock   *fakeClock
	Repo    *repository.Repository
	RepoDir string
	Tests   *restoretest.Service // runs nothing by itself: a test calls Tests.Run
	// Restores serves the restore points; its bound on reads served to clients is the API's.
	Restores *restore.Service
	// NFSAddr is the instant-recovery NFS listener (loopback); IRRoot holds its sessions.
	NFSAddr string
	IRRoot  string
	IR      *instantrecovery.Service
	S3      s3.Config // the default repository's bucket with hubOptions.s3Lock
	Ingest  *ingest.Service
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// hubOptions change the test hub's defaults.
type hubOptions struct {
	// pollInterval is how often a waiting long poll looks for jobs queued elsewhere (default
	// 50ms); an hour leaves the in-process wake-up as the only way a poll learns of a job.
	pollInterval time.Duration
	// limits are the API's limits for slow and anonymous clients (zero: the defaults).
	limits hubapi.Limits
	// encrypted makes the default repository an encrypted one, unlocked by a password file.
	encrypted bool
	// s3Lock makes the default repository an S3 one in an Object Lock bucket, with retention
	// dates of this mode set one day (by the hub's clock) after each backup.
	s3Lock string
	// ingest tunes the intake (zero: its defaults).
	ingest ingest.Options
	// noInstantRecovery serves the API of a hub without NFS, where instant recovery is not configured.
	noInstantRecovery bool
}

func newTestHub(t *testing.T, c *catalog.Catalog, opts ...hubOptions) *testHub {
	t.Helper()
	o := hubOptions{pollInterval: 50 * time.Millisecond}
	for _, x := range opts {
		if x.pollInterval > 0 {
			o.pollInterval = x.pollInterval
		}
		o.limits = x.limits
		o.encrypted = o.encrypted || x.encrypted
		if x.s3Lock != "" {
			o.s3Lock = x.s3Lock
		}
		o.noInstantRecovery = o.noInstantRecovery || x.noInstantRecovery
		if x.ingest.UploadMemory != 0 || x.ingest.UploadMemoryWait != 0 {
			o.ingest = x.ingest
		}
	}
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ca, err := pki.LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Now().UTC()}
	reg := prometheus.NewRegistry()
	c.SetClock(clock.Now)
	ids := identity.New(c, ca, log, reg, identity.Options{HubURL: "https://127.0.0.1:1", CertLifetime: 24 * time.Hour, Now: clock.Now})
	repoDir := t.TempDir()
	inv := inventory.New(c, log, reg)
	repos := repository.NewRegistry(c, nil, nil)
	t.Cleanup(func() { _ = repos.Close() })
	passwordFile := ""
	if o.encrypted {
		passwordFile = filepath.Join(t.TempDir(), "repo.password")
		if err := os.WriteFile(passwordFile, []byte("test password of the harness\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// Cheap argon2id: the slot records its parameters, so every later unlock is cheap too.
		repos.SetKDFCost(repository.KDF{Name: "argon2id", Time: 1, MemoryKiB: 64, Threads: 1})
	}
	var s3cfg s3.Config
	if o.s3Lock != "" {
		s3cfg = s3test.LockedConfig(t, o.s3Lock)
		creds := filepath.Join(t.TempDir(), "s3.creds")
		if err := os.WriteFile(creds, []byte(s3cfg.AccessKey+"\n"+s3cfg.SecretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		set := api.S3Settings{S3Endpoint: s3cfg.Endpoint, S3Bucket: s3cfg.Bucket, S3Prefix: s3cfg.Prefix, S3CredentialsFile: creds, S3ObjectLock: o.s3Lock, S3LockDays: 1}
		if _, err := repos.CreateS3(context.Background(), repository.DefaultName, set, 64<<10, passwordFile); err != nil {
			t.Fatal(err)
		}
	} else if _, err := repos.CreateEncrypted(context.Background(), repository.DefaultName, repoDir, 64<<10, passwordFile); err != nil {
		t.Fatal(err)
	}
	repo, err := repos.Open(context.Background(), mustRepoID(t, c))
	if err != nil {
		t.Fatal(err)
	}
	backups := jobs.New(c, repos, log, reg, jobs.Options{Now: clock.Now, PollInterval: o.pollInterval})
	restores := restore.New(c, restoreRepos(repos), reg)
	tests := restoretest.New(c, restores, log, reg, restoretest.Options{HeartbeatInterval: 20 * time.Millisecond, Now: clock.Now})
	irRoot := filepath.Join(t.TempDir(), "instant-recovery")
	nfsSrv, err := nfsexport.New(irRoot, log)
	if err != nil {
		t.Fatal(err)
	}
	irs := newIRService(c, restores, backups, nfsSrv, log, reg, clock.Now)
	tests.EnableBoot(irs, backups)
	nfsln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nfsDone := make(chan error, 1)
	go func() { nfsDone <- nfsSrv.Serve(context.Background(), nfsln) }()
	t.Cleanup(func() { nfsln.Close(); <-nfsDone })
	ing := ingest.New(c, repos, log, reg, o.ingest)
	deps := hubapi.Deps{Log: log, Registry: reg, Catalog: c, Repository: repo, Identity: ids, Inventory: inv, Backup: backups, Restores: backups, Ingest: ing, Restore: restores, Files: files.NewService(restores, reg), Repositories: repos,
		Policies: policy.New(c, backups, tests, log, reg, clock.Now), RestoreTests: tests, Events: events.New(c, log), Limits: o.limits, InstantRecoveries: irs}
	if o.noInstantRecovery {
		deps.InstantRecoveries = nil
	}
	srv := hubapi.New(deps)
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Config.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	ts.TLS = &tls.Config{
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool(),
	}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return &testHub{t: t, URL: ts.URL, CA: ca, Cat: c, IDs: ids, Reg: reg, Logs: logs, Clock: clock, Repo: repo, RepoDir: repoDir, Tests: tests, Restores: restores, Ingest: ing,
		NFSAddr: nfsln.Addr().String(), IRRoot: irRoot, IR: irs, S3: s3cfg}
}

// forEachHub runs fn against a test hub on each catalog dialect.
func forEachHub(t *testing.T, fn func(t *testing.T, h *testHub), opts ...hubOptions) {
	for _, d := range catalogtest.Dialects {
		t.Run(d, func(t *testing.T) {
			// The catalog's query counters on a registry of their own: gathering h.Reg runs
			// collectors that query the catalog, which would count themselves.
			catReg := prometheus.NewRegistry()
			co := catalogtest.Options(t, d)
			co.Registerer = catReg
			c, err := catalog.Open(t.Context(), co)
			if err != nil {
				t.Fatalf("open %s catalog: %v", d, err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if _, err := c.MigrateUp(t.Context(), slog.New(slog.DiscardHandler)); err != nil {
				t.Fatalf("migrate up: %v", err)
			}
			h := newTestHub(t, c, opts...)
			h.CatReg = catReg
			fn(t, h)
		})
	}
}

// client returns an HTTP client trusting the hub CA, presenting cert when not nil.
func (h *testHub) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: h.CA.Pool(), MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// call sends a JSON request and decodes the answer into out (when 2xx) or returns the error body.
func (h *testHub) call(c *http.Client, method, path, bearer string, in, out any) (int, api.Error) {
	h.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			h.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, h.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e api.Error
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &e); err != nil {
			h.t.Fatalf("%s %s: status %d with a non-JSON error body %q", method, path, resp.StatusCode, b)
		}
		if e.Error == "" || e.Code == "" {
			h.t.Fatalf("%s %s: status %d with an empty error body %q", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, e
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, e
}

// csr makes a P-256 key and its PEM certificate request.
func csr(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func tlsCert(t *testing.T, key *ecdsa.PrivateKey, certPEM string) *tls.Certificate {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.X509KeyPair([]byte(certPEM), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return &tc
}

// enrollAgent creates a join token and enrolls an agent with it, returning its id and certificate.
func (h *testHub) enrollAgent(name string) (string, *tls.Certificate) {
	h.t.Helper()
	tokStr, _, err := h.IDs.CreateJoinToken(context.Background(), name, time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	tok, err := api.ParseJoinToken(tokStr)
	if err != nil {
		h.t.Fatal(err)
	}
	key, csrPEM := csr(h.t)
	var resp api.EnrollResponse
	code, e := h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", api.EnrollRequest{TokenID: tok.ID, TokenSecret: tok.Secret, CSR: csrPEM, Name: name, Hostname: name + ".example"}, &resp)
	if code != http.StatusCreated {
		h.t.Fatalf("enroll %s: %d %+v", name, code, e)
	}
	return resp.AgentID, tlsCert(h.t, key, resp.Certificate)
}

// apiToken creates an operator token with the role.
func (h *testHub) apiToken(role string) string {
	h.t.Helper()
	tok, _, err := h.IDs.CreateAPIToken(context.Background(), "test-"+role, role)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

func (h *testHub) assertNoSecret(secrets ...string) {
	h.t.Helper()
	logs := h.Logs.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			h.t.Fatalf("a secret appears in the hub logs")
		}
	}
}

func mustRepoID(t *testing.T, c *catalog.Catalog) string {
	t.Helper()
	r, err := c.RepositoryByName(context.Background(), repository.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// The registry adapted to each consumer's Repository, as cmd/sendense-hub wires them.

func gcRepos(g *repository.Registry) gc.OpenFunc {
	return func(ctx context.Context, id string) (gc.Repository, error) {
		r, err := g.Open(ctx, id)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
}

func verifyRepos(g *repository.Registry) verify.OpenFunc {
	return func(ctx context.Context, id string) (verify.Repository, error) {
		r, err := g.Open(ctx, id)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
}

func checkRepos(g *repository.Registry) check.OpenFunc {
	return func(ctx context.Context, id string) (check.Repository, error) {
		r, err := g.Open(ctx, id)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
}

func restoreRepos(g *repository.Registry) restore.OpenFunc {
	return func(ctx context.Context, id string) (restore.Repository, error) {
		r, err := g.Open(ctx, id)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
}

// newIRService is the instant-recovery service of a test hub: every ESXi host name resolves to
// the loopback address, so the test's NFS client is the host.
func newIRService(c *catalog.Catalog, restores *restore.Service, backups *jobs.Service, exp *nfsexport.Server, log *slog.Logger, reg prometheus.Registerer, now func() time.Time) *instantrecovery.Service {
	return instantrecovery.New(c, restores, backups, exp, backups, log, reg, instantrecovery.Options{
		NFSAddress: "127.0.0.1", OverlayLimit: 128 << 10, Now: now, // two blocks
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			if host == "unknown.invalid" {
				return nil, errors.New("no such host")
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		},
	})
}
