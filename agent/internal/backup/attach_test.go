package backup_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/backup"
	"github.com/sendense/sendense/agent/internal/config"
	"github.com/sendense/sendense/agent/internal/daemon"
	"github.com/sendense/sendense/agent/internal/enroll"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/sources"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// Losing the hub loses no restore point: backups into an encrypted repository (a full, a
// protected incremental, and one deleted afterwards) are rebuilt by a fresh hub — new catalog,
// new data directory, new CA — that attaches the repository: the same backup ids, types,
// parents, protection and VM configuration, each disk restoring byte-identical; the deleted one
// stays deleted. Attaching again changes nothing.
func TestAttachRebuildsCatalogOnFreshHub(t *testing.T) {
	e := newEnv(t, twoDiskSpec("keep"), envOptions{})
	vault := filepath.Join(t.TempDir(), "vault")
	pw := filepath.Join(t.TempDir(), "vault.password")
	if err := os.WriteFile(pw, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := e.hub.CLI("repo", "create", "vault", "--path", vault, "--encrypt", "--password-file", pw); !strings.Contains(out, "created repository vault") {
		t.Fatalf("repo create: %s", out)
	}
	disks := []string{"disk-2000", "disk-2001"}
	sums := map[string][32]byte{}
	full := e.run(api.StartBackupRequest{VM: "keep", Repository: "vault"})
	for _, d := range disks {
		sums[full.ID+"/"+d] = e.diskSum("keep", d)
	}
	if _, err := e.lab.WritePercent("keep", "disk-2000", 10, 21); err != nil {
		t.Fatal(err)
	}
	inc := e.run(api.StartBackupRequest{VM: "keep", Repository: "vault"})
	for _, d := range disks {
		sums[inc.ID+"/"+d] = e.diskSum("keep", d)
	}
	gone := e.run(api.StartBackupRequest{VM: "keep", Repository: "vault"})
	if full.Type != "full" || inc.Type != "incremental" || gone.Status != "succeeded" {
		t.Fatalf("backups: full %+v, incremental %+v, third %+v", full, inc, gone)
	}
	if code := e.api(http.MethodPost, strings.Replace(api.PathBackupProtect, "{id}", inc.ID, 1), nil, nil); code != http.StatusOK {
		t.Fatalf("protect %s: %d", inc.ID, code)
	}
	if code := e.api(http.MethodDelete, api.PathBackups+"/"+gone.ID, nil, nil); code >= 300 {
		t.Fatalf("delete %s: %d", gone.ID, code)
	}
	// A backup whose record is missing (as one taken before records were written) gets one
	// from repo describe.
	recs, err := filepath.Glob(filepath.Join(vault, "backups", "*", full.ID+".json"))
	if err != nil || len(recs) != 1 {
		t.Fatalf("the full backup's record: %v %v", recs, err)
	}
	if err := os.Remove(recs[0]); err != nil {
		t.Fatal(err)
	}
	if out := e.hub.CLI("repo", "describe", "--repository", "vault"); !strings.Contains(out, "described 2 backups") {
		t.Fatalf("repo describe: %s", out)
	}
	if _, err := os.Stat(recs[0]); err != nil {
		t.Fatalf("repo describe wrote no record of %s: %v", full.ID, err)
	}
	if left, _ := filepath.Glob(filepath.Join(vault, "backups", "*", gone.ID+".json")); len(left) != 0 {
		t.Fatalf("the deleted backup's record is left: %v", left)
	}
	before := map[string]api.Backup{full.ID: e.get(full.ID), inc.ID: e.get(inc.ID)}
	if before[full.ID].VMConfig == nil || before[full.ID].VMConfig.Error != "" {
		t.Fatalf("the full backup has no readable VM configuration: %+v", before[full.ID].VMConfig)
	}

	// The hub is lost: its catalog, keys and data directory.
	e.hub.Stop()
	if err := os.RemoveAll(e.hub.DataDir); err != nil {
		t.Fatal(err)
	}
	hub := hubtest.Start(t)
	e.hub, e.operator, e.op = hub, hub.APIToken("operator"), operatorClient(t, hub)

	out := hub.CLI("repo", "attach", "vault", "--path", vault, "--password-file", pw)
	if !strings.Contains(out, "attached repository vault") || !strings.Contains(out, "imported 2 backups, 0 already in the catalog") ||
		strings.Contains(out, "UNDESCRIBED") || strings.Contains(out, "NOT IMPORTED") {
		t.Fatalf("repo attach: %s", out)
	}
	for id, was := range before {
		got := e.get(id)
		if got.Status != "succeeded" || got.Type != was.Type || got.Repository != "vault" || got.VMName != "keep" ||
			got.Protected != was.Protected || !got.CreatedAt.Equal(was.CreatedAt) || len(got.Disks) != len(was.Disks) {
			t.Fatalf("backup %s after attach: %+v\nbefore: %+v", id, got, was)
		}
		for i, d := range got.Disks {
			w := was.Disks[i]
			if d.DiskID != w.DiskID || d.ParentBackupID != w.ParentBackupID || d.CapacityBytes != w.CapacityBytes || d.Type != w.Type ||
				d.Status != w.Status || d.ChangeID != w.ChangeID || d.SlotsChanged != w.SlotsChanged {
				t.Fatalf("backup %s disk %d after attach: %+v, before %+v", id, i, d, w)
			}
		}
		if got.VMConfig == nil || got.VMConfig.Error != "" || got.VMConfig.Digest != was.VMConfig.Digest {
			t.Fatalf("backup %s: VM configuration after attach %+v, before %+v", id, got.VMConfig, was.VMConfig)
		}
		for _, d := range disks {
			if e.imageSum(id, d) != sums[id+"/"+d] {
				t.Fatalf("backup %s disk %s does not restore its bytes after attach", id, d)
			}
		}
	}
	if before[inc.ID].Disks[0].ParentBackupID != full.ID {
		t.Fatalf("the incremental's parent: %+v", before[inc.ID].Disks)
	}
	if code := e.api(http.MethodGet, api.PathBackups+"/"+gone.ID, nil, nil); code != http.StatusNotFound {
		t.Fatalf("the deleted backup %s came back with the attach: %d", gone.ID, code)
	}
	if code := e.api(http.MethodDelete, api.PathBackups+"/"+inc.ID, nil, nil); code != http.StatusConflict {
		t.Fatalf("deleting the protected backup after attach: %d, want 409", code)
	}
	if out := hub.CLI("repo", "check"); !strings.Contains(out, "consistent") {
		t.Fatalf("repo check after attach: %s", out)
	}

	list := func() string {
		var l json.RawMessage
		if code := e.api(http.MethodGet, api.PathBackups, nil, &l); code != http.StatusOK {
			t.Fatalf("list backups: %d", code)
		}
		return string(l)
	}
	had := list()
	out = hub.CLI("repo", "attach", "vault", "--path", vault, "--password-file", pw)
	if !strings.Contains(out, "already attached: repository vault") || !strings.Contains(out, "imported 0 backups, 2 already in the catalog") {
		t.Fatalf("second repo attach: %s", out)
	}
	if now := list(); now != had {
		t.Fatalf("attaching again changed the backups:\nbefore %s\nafter  %s", had, now)
	}
	if _, err := hub.TryCLI("repo", "attach", "other", "--path", vault, "--password-file", pw); err == nil {
		t.Fatal("the repository was attached a second time under another name")
	}

	// A new agent for the same vCenter takes the source over (sources move, as when an
	// appliance is replaced): the chain of the attached VM continues with an incremental on the
	// attached incremental, which restores byte-identical.
	agentID := e.reenroll()
	conn, err := e.srcs.Get("lab")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := daemon.DiscoverOnce(t.Context(), conn, e.hc); err == nil {
		t.Fatal("the new agent's inventory of the attached source was taken without a move")
	}
	if out := hub.CLI("sources", "move", "lab", "--agent", agentID); !strings.Contains(out, agentID) {
		t.Fatalf("sources move: %s", out)
	}
	e.discover()
	if _, err := e.lab.WritePercent("keep", "disk-2000", 10, 33); err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		sums["next/"+d] = e.diskSum("keep", d)
	}
	next := e.run(api.StartBackupRequest{VM: "keep", Repository: "vault"})
	if next.Status != "succeeded" || next.Type != "incremental" || next.VMContextID != before[full.ID].VMContextID ||
		next.Disks[0].ParentBackupID != inc.ID || next.Disks[0].SlotsChanged == 0 {
		t.Fatalf("backup after attach: %+v", next)
	}
	for _, d := range disks {
		if e.imageSum(next.ID, d) != sums["next/"+d] {
			t.Fatalf("the backup after attach: %s does not restore its bytes", d)
		}
	}
}

// reenroll enrolls a new agent with the env's (new) hub and makes it the env's agent; it
// returns the agent's id.
func (e *env) reenroll() string {
	e.t.Helper()
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	stateDir := filepath.Join(e.t.TempDir(), "agent2")
	id, err := enroll.Enroll(e.t.Context(), enroll.Options{Token: e.hub.JoinToken(), StateDir: stateDir, Name: "new-agent"}, log)
	if err != nil {
		e.t.Fatalf("enroll: %v", err)
	}
	hc, err := hubclient.New(id.HubURL(), id.TLSConfig(), log, hubclient.Options{RetryWaitMin: 50 * time.Millisecond, RetryWaitMax: time.Second, RetryMax: 10})
	if err != nil {
		e.t.Fatal(err)
	}
	srcs := sources.New([]config.Source{e.srcCfg}, stateDir, log)
	e.t.Cleanup(func() { srcs.Close(context.Background()) })
	e.hc, e.srcs = hc, srcs
	e.runner = backup.NewRunner(hc, func(name string) (backup.Source, error) {
		c, err := srcs.Get(name)
		if err != nil {
			return nil, err
		}
		return c, nil
	}, log, e.metrics, backup.RunnerOptions{ProgressInterval: 200 * time.Millisecond})
	return id.AgentID()
}

// An S3 repository (SeaweedFS) is attached by a fresh hub with the same --s3-* flags as repo
// create: its backup restores byte-identical.
func TestAttachS3RepositoryOnFreshHub(t *testing.T) {
	srv := testenv.S3(t)
	e := newEnv(t, twoDiskSpec("cloud"), envOptions{})
	creds := createS3Repo(t, e.hub, srv, "offsite")
	var rs []api.Repository
	if err := json.Unmarshal([]byte(e.hub.CLI("repo", "list", "--json")), &rs); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(rs, func(r api.Repository) bool { return r.Name == "offsite" })
	if i < 0 || rs[i].S3Prefix == "" {
		t.Fatalf("repo list: %+v", rs)
	}
	b := e.run(api.StartBackupRequest{VM: "cloud", Repository: "offsite"})
	want := map[string][32]byte{}
	for _, d := range []string{"disk-2000", "disk-2001"} {
		want[d] = e.diskSum("cloud", d)
	}

	e.hub.Stop()
	if err := os.RemoveAll(e.hub.DataDir); err != nil {
		t.Fatal(err)
	}
	hub := hubtest.Start(t)
	e.hub, e.operator, e.op = hub, hub.APIToken("operator"), operatorClient(t, hub)
	out := hub.CLI("repo", "attach", "offsite", "--s3-endpoint", srv.Endpoint, "--s3-bucket", srv.Bucket,
		"--s3-prefix", rs[i].S3Prefix, "--s3-credentials-file", creds)
	if !strings.Contains(out, "attached repository offsite") || !strings.Contains(out, "imported 1 backups") {
		t.Fatalf("repo attach: %s", out)
	}
	if got := e.get(b.ID); got.Status != "succeeded" || got.Repository != "offsite" || got.Type != b.Type {
		t.Fatalf("backup after attach: %+v", got)
	}
	for d, sum := range want {
		if e.imageSum(b.ID, d) != sum {
			t.Fatalf("%s does not restore its bytes from the attached S3 repository", d)
		}
	}
}
