package backup_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/backup"
	"github.com/sendense/sendense/agent/internal/config"
	"github.com/sendense/sendense/agent/internal/daemon"
	"github.com/sendense/sendense/agent/internal/enroll"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/agent/internal/sources"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

func TestMain(m *testing.M) { os.Exit(hubtest.Main(m)) }

// env is a lab vCenter, a real hub process and an enrolled in-process agent.
type env struct {
	t        *testing.T
	lab      *lab.Lab
	hub      *hubtest.Hub
	hc       *hubclient.Client
	srcs     *sources.Set
	runner   *backup.Runner
	metrics  *backup.Metrics
	operator string
	op       *http.Client
	logs     *testenv.LogBuffer
	stateDir string
	srcCfg   config.Source
}

type envOptions struct {
	transport string // https (default), file or nbd
	hubURL    func(h *hubtest.Hub) string
	hubArgs   []string
	fallbacks []string // more hub URLs the agent fails over to
	// instantRecovery turns on the hub's NFS listener; the lab's hosts then mount a session's
	// export as the folder the hub serves.
	instantRecovery bool
}

func newEnv(t *testing.T, spec lab.Spec, o envOptions) *env {
	t.Helper()
	ctx := t.Context()
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var hub *hubtest.Hub
	lo := lab.Options{}
	if o.instantRecovery {
		o.hubArgs = append(o.hubArgs, "--nfs-listen", "127.0.0.1:0", "--nfs-address", "127.0.0.1")
		lo.NASDir = func(_, remotePath string) (string, error) {
			return filepath.Join(hub.DataDir, "instant-recovery", strings.TrimPrefix(remotePath, "/"), "export"), nil
		}
	}
	l, err := lab.Start(ctx, spec, lo)
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	hub = hubtest.Start(t, o.hubArgs...)
	stateDir := filepath.Join(t.TempDir(), "agent")
	id, err := enroll.Enroll(ctx, enroll.Options{Token: hub.JoinToken(), StateDir: stateDir, Name: "test-agent"}, log)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	url := id.HubURL()
	if o.hubURL != nil {
		url = o.hubURL(hub)
	}
	hc, err := hubclient.New(url, id.TLSConfig(), log, hubclient.Options{RetryWaitMin: 50 * time.Millisecond, RetryWaitMax: time.Second, RetryMax: 10, Fallbacks: o.fallbacks})
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "vc.password")
	if err := os.WriteFile(pwFile, []byte(l.Password()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := config.Source{Name: "lab", URL: l.SDKURL(), Username: l.Username(), PasswordFile: pwFile, CAFile: l.CACertFile(), Transport: o.transport}
	switch o.transport {
	case "file":
		src.DatastorePaths = map[string]string{l.Datastore(): datastoreDir(t, l)}
	case "nbd":
		src.NBD.Plugin = "curl"
	}
	srcs := sources.New([]config.Source{src}, stateDir, log)
	t.Cleanup(func() { srcs.Close(context.Background()) })
	m := backup.NewMetrics(nil)
	e := &env{
		t: t, lab: l, hub: hub, hc: hc, srcs: srcs, metrics: m, logs: logs, stateDir: stateDir, srcCfg: src,
		runner: backup.NewRunner(hc, func(name string) (backup.Source, error) {
			c, err := srcs.Get(name)
			if err != nil {
				return nil, err
			}
			return c, nil
		}, log, m, backup.RunnerOptions{ProgressInterval: 200 * time.Millisecond}),
		operator: hub.APIToken("operator"),
		op:       operatorClient(t, hub),
	}
	e.discover()
	return e
}

func datastoreDir(t *testing.T, l *lab.Lab) string {
	t.Helper()
	vms, err := l.VMs()
	if err != nil || len(vms) == 0 || len(vms[0].Disks) == 0 {
		t.Fatalf("lab has no disks: %v", err)
	}
	d := vms[0].Disks[0]
	rel := strings.TrimPrefix(d.FlatDatastorePath, "["+d.Datastore+"] ")
	return strings.TrimSuffix(d.FlatPath, "/"+rel)
}

// hubRequests counts the requests the hub has logged for route, in gin's form
// ("/api/v1/agent/sessions/:session/slots").
func (e *env) hubRequests(route string) int {
	return strings.Count(e.hub.Logs(), `"route":"`+route+`"`)
}

func operatorClient(t *testing.T, hub *hubtest.Hub) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(hub.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
}

func (e *env) discover() {
	e.t.Helper()
	conn, err := e.srcs.Get("lab")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, _, err := daemon.DiscoverOnce(e.t.Context(), conn, e.hc); err != nil {
		e.t.Fatalf("discover: %v\n%s", err, e.logs)
	}
}

// api calls the hub's operator API.
func (e *env) api(method, path string, in, out any) int {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(e.t.Context(), method, e.hub.URL+path, body)
	req.Header.Set("Authorization", "Bearer "+e.operator)
	resp, err := e.op.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	if resp.StatusCode >= 300 {
		e.t.Logf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// startBackup queues a backup through the operator API.
func (e *env) startBackup(vm, typ string) api.Backup {
	e.t.Helper()
	return e.start(api.StartBackupRequest{VM: vm, Type: typ})
}

func (e *env) start(req api.StartBackupRequest) api.Backup {
	e.t.Helper()
	var b api.Backup
	if code := e.api(http.MethodPost, api.PathBackups, req, &b); code != http.StatusAccepted {
		e.t.Fatalf("start backup of %s: %d", req.VM, code)
	}
	return b
}

// backup runs one backup of vm in this process and returns it as the hub records it.
func (e *env) backup(vm, typ string) api.Backup {
	e.t.Helper()
	return e.run(api.StartBackupRequest{VM: vm, Type: typ})
}

// run queues a backup as req asks and runs it in this process.
func (e *env) run(req api.StartBackupRequest) api.Backup {
	e.t.Helper()
	queued := e.start(req)
	job, err := e.hc.NextJob(e.t.Context(), 10*time.Second, nil)
	if err != nil || job == nil || job.ID != queued.ID {
		e.t.Fatalf("claim job %s: %+v %v", queued.ID, job, err)
	}
	if err := e.runner.Run(e.t.Context(), job); err != nil {
		e.t.Fatalf("backup %s failed: %v\n%s", job.ID, err, e.logs)
	}
	return e.get(job.ID)
}

func (e *env) get(id string) api.Backup {
	e.t.Helper()
	var b api.Backup
	if code := e.api(http.MethodGet, api.PathBackups+"/"+id, nil, &b); code != http.StatusOK {
		e.t.Fatalf("get backup %s: %d", id, code)
	}
	return b
}

// imageSum streams a restore point's disk over HTTP and returns its SHA-256.
func (e *env) imageSum(backupID, diskID string) [32]byte {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(e.t.Context(), http.MethodGet, e.hub.URL+api.PathBackups+"/"+backupID+"/disks/"+diskID+"/image", nil)
	req.Header.Set("Authorization", "Bearer "+e.operator)
	resp, err := e.op.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("image %s/%s: %d", backupID, diskID, resp.StatusCode)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		e.t.Fatalf("image %s/%s: %v", backupID, diskID, err)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// diskSum returns the SHA-256 of a lab disk's current bytes (what a snapshot taken now holds).
func (e *env) diskSum(vm, diskID string) [32]byte {
	e.t.Helper()
	info, err := e.lab.VM(vm)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, d := range info.Disks {
		if d.DiskID != diskID {
			continue
		}
		f, err := os.Open(d.FlatPath)
		if err != nil {
			e.t.Fatal(err)
		}
		defer f.Close()
		h := sha256.New()
		// The flat file may be shorter than the capacity (sparse, never written to the end).
		n, err := io.Copy(h, f)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := io.CopyN(h, zeroReader{}, d.CapacityBytes-n); err != nil {
			e.t.Fatal(err)
		}
		var out [32]byte
		copy(out[:], h.Sum(nil))
		return out
	}
	e.t.Fatalf("vm %s has no disk %s", vm, diskID)
	return [32]byte{}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func diskOf(t *testing.T, b api.Backup, id string) api.BackupDisk {
	t.Helper()
	for _, d := range b.Disks {
		if d.DiskID == id {
			return d
		}
	}
	t.Fatalf("backup %s has no disk %s: %+v", b.ID, id, b.Disks)
	return api.BackupDisk{}
}

func snapshotsLeft(t *testing.T, e *env) int {
	t.Helper()
	conn, _ := e.srcs.Get("lab")
	snaps, err := conn.Snapshots(t.Context(), api.SnapshotPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return len(snaps)
}

func backupSentBytes(e *env) float64 { return backup.SentBytesForTest(e.metrics) }
