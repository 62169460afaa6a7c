package chaostest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

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

const (
	// loadDiskSize is each agent's VM disk, filled with incompressible bytes (no dedup across
	// agents: every byte is read, hashed, compressed, sent and stored).
	loadDiskSize = 24 * mib
	// loadRSSBound bounds the hub's peak resident memory (VmHWM) while every agent uploads at
	// once: 512 MiB, four times the peak measured with 50 agents on a two-core machine (125 MiB).
	// A hub that held every agent's data in memory at once (50 x 24 MiB) would exceed it.
	loadRSSBound = 512 << 20
)

// loadAgent is one in-process agent: its own key and certificate (enrolled with its own join
// token), its own hub client speaking mutual TLS to the hub process, its own connection to the
// lab, its own job loop, and one VM of the lab as its whole inventory.
type loadAgent struct {
	vm        string
	contextID string
	hc        *hubclient.Client
	srcs      *sources.Set
	runner    *backup.Runner
}

// TestLoad has CHAOS_LOAD_AGENTS agents (default 50, about 25 s) back up at once into one
// hub process: every backup must succeed and restore byte-identical, and the hub's peak resident
// memory must stay under loadRSSBound. It reports the aggregate throughput.
//
// The agents run in this process (50 agent processes would not fit next to the hub on a
// two-core machine), each with its own identity and TLS connections. They share one lab
// vCenter with a VM per agent; each pushes an inventory holding only its own VM, as if each
// protected its own vCenter (an agent speaks for its sources only).
func TestLoad(t *testing.T) {
	n := envInt(t, "CHAOS_LOAD_AGENTS", 50)
	if n == 0 {
		t.Skip("CHAOS_LOAD_AGENTS=0")
	}
	ctx := t.Context()
	spec := lab.Spec{}
	for i := range n {
		spec.VMs = append(spec.VMs, lab.VMSpec{Name: fmt.Sprintf("load-%03d", i+1), CBT: true,
			Disks: []lab.DiskSpec{{Key: 2000, Size: fmt.Sprint(loadDiskSize), Fill: lab.FillRandom, Seed: int64(i + 1)}}})
	}
	l, err := lab.Start(ctx, spec, lab.Options{})
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	defer l.Close()
	// Every agent here connects from 127.0.0.1; in production each has its own address and the
	// per-address connection cap (128) applies to each alone.
	hub := hubtest.Start(t, "--max-connections-per-address", "4096")
	admin := hub.APIToken("admin")
	w := &world{t: t, hub: hub, op: operatorClient(t, hub), token: admin}

	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	pw := filepath.Join(t.TempDir(), "vc.password")
	if err := os.WriteFile(pw, []byte(l.Password()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := config.Source{Name: "lab", URL: l.SDKURL(), Username: l.Username(), PasswordFile: pw, CAFile: l.CACertFile()}

	agents := make([]*loadAgent, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			a, err := enrollLoadAgent(gctx, w, i, src, log)
			agents[i] = a
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("enroll the agents: %v\n%s", err, tail(logs.String(), 40))
	}
	jctx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	defer func() { stop(); running.Wait() }()
	for _, a := range agents {
		defer a.srcs.Close(context.Background())
		running.Go(func() { _ = daemon.Jobs(jctx, a.hc, a.runner, 1, log) })
	}

	// Every agent's backup at once.
	start := time.Now()
	ids := make([]string, n)
	for i, a := range agents {
		var b api.Backup
		if code := w.api(http.MethodPost, api.PathBackups, api.StartBackupRequest{VM: a.contextID}, &b); code != http.StatusAccepted {
			t.Fatalf("start the backup of %s: status %d", a.vm, code)
		}
		ids[i] = b.ID
	}
	results := make([]api.Backup, n)
	failed := 0
	var read int64
	var first, last time.Time
	for i, id := range ids {
		b, ok := w.waitFinal(id, 15*time.Minute)
		results[i] = b
		if !ok || b.Status != api.JobSucceeded {
			failed++
			t.Errorf("backup %s of %s: %s %s", id, agents[i].vm, b.Status, b.Error)
			continue
		}
		read += b.BytesRead
		if first.IsZero() || b.CreatedAt.Before(first) {
			first = b.CreatedAt
		}
		if b.FinishedAt.After(last) {
			last = b.FinishedAt
		}
	}
	wall := time.Since(start)
	rss, err := peakRSS(hub.PID())
	if err != nil {
		t.Fatalf("hub peak memory: %v", err)
	}
	elapsed := last.Sub(first).Seconds()
	if elapsed <= 0 {
		elapsed = wall.Seconds()
	}
	t.Logf("load summary: agents=%d backups_failed=%d data=%.0f MiB in %.1fs (queued to last finished) aggregate=%.1f MB/s hub_peak_rss=%.0f MiB (bound %d MiB)",
		n, failed, float64(read)/float64(mib), elapsed, float64(read)/elapsed/1e6, float64(rss)/float64(mib), loadRSSBound>>20)
	if rss > loadRSSBound {
		t.Errorf("the hub's peak resident memory is %d MiB, over the bound of %d MiB", rss>>20, loadRSSBound>>20)
	}
	if failed > 0 {
		t.Fatalf("%d of %d backups failed\nagents' log (tail):\n%s", failed, n, tail(logs.String(), 60))
	}

	// Every restore point holds its agent's disk.
	for i, b := range results {
		info, err := l.VM(agents[i].vm)
		if err != nil {
			t.Fatal(err)
		}
		d := info.Disks[0]
		want, err := fileSum(d.FlatPath, d.CapacityBytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.imageSum(b.ID, d.DiskID); got != want {
			t.Errorf("backup %s of %s does not restore the disk's bytes", b.ID, agents[i].vm)
		}
	}
}

// enrollLoadAgent enrolls agent i with its own join token and prepares its hub client, lab
// connection and runner; its inventory, pushed now, holds only its own VM.
func enrollLoadAgent(ctx context.Context, w *world, i int, src config.Source, log *slog.Logger) (*loadAgent, error) {
	var tok api.CreateJoinTokenResponse
	if code := w.api(http.MethodPost, api.PathJoinTokens, api.CreateJoinTokenRequest{Name: fmt.Sprintf("load-%d", i+1), TTL: "1h"}, &tok); code != http.StatusCreated {
		return nil, fmt.Errorf("create a join token: status %d", code)
	}
	a := &loadAgent{vm: fmt.Sprintf("load-%03d", i+1)}
	alog := log.With("agent", a.vm)
	state := filepath.Join(w.t.TempDir(), "agent")
	id, err := enroll.Enroll(ctx, enroll.Options{Token: tok.Token, HubURL: w.hub.URL, StateDir: state, Name: a.vm}, alog)
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", a.vm, err)
	}
	a.hc, err = hubclient.New(id.HubURL(), id.TLSConfig(), alog, hubclient.Options{})
	if err != nil {
		return nil, err
	}
	a.srcs = sources.New([]config.Source{src}, state, alog)
	a.runner = backup.NewRunner(a.hc, func(name string) (backup.Source, error) {
		c, err := a.srcs.Get(name)
		if err != nil {
			return nil, err
		}
		return c, nil
	}, alog, backup.NewMetrics(nil), backup.RunnerOptions{})
	conn, err := a.srcs.Get("lab")
	if err != nil {
		return nil, err
	}
	inv, err := conn.Inventory(ctx)
	if err != nil {
		return nil, fmt.Errorf("inventory of %s: %w", a.vm, err)
	}
	var own []api.VM
	for _, vm := range inv.VMs {
		if vm.Name == a.vm {
			own = append(own, vm)
		}
	}
	inv.VMs = own
	// One lab stands in for 50 vCenters: a source belongs to the agent that registered its
	// vCenter instance UUID, so each agent reports its own.
	inv.Source.InstanceUUID = fmt.Sprintf("0ad0ad00-0000-4000-8000-%012d", i)
	res, err := a.hc.PutInventory(ctx, &inv)
	if err != nil {
		return nil, fmt.Errorf("push the inventory of %s: %w", a.vm, err)
	}
	for _, e := range res.Events {
		if e.Kind == api.EventVMAdded && e.VMName == a.vm {
			a.contextID = e.VMContextID
		}
	}
	if a.contextID == "" {
		return nil, fmt.Errorf("the hub did not add %s: %+v", a.vm, res)
	}
	return a, nil
}

// imageSum streams a restore point's disk from the hub's image API and returns its SHA-256.
func (w *world) imageSum(backupID, diskID string) [32]byte {
	w.t.Helper()
	req, _ := http.NewRequestWithContext(w.t.Context(), http.MethodGet, w.hub.URL+api.PathBackups+"/"+backupID+"/disks/"+diskID+"/image", nil)
	req.Header.Set("Authorization", "Bearer "+w.token)
	resp, err := w.op.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		w.t.Fatalf("image %s/%s: status %d", backupID, diskID, resp.StatusCode)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		w.t.Fatalf("image %s/%s: %v", backupID, diskID, err)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
