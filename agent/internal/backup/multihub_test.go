package backup_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// Two hub processes share one MariaDB catalog (and, through it, the CA under one hub key) and
// one SeaweedFS bucket; the agent knows both. The hub it talks to is killed (kill -9) in the
// middle of a backup: the agent fails over, the upload session resumes on the other hub, the
// backup succeeds and restores byte-identical through the survivor.
func TestHubKilledMidBackupFailsOver(t *testing.T) {
	srv := testenv.S3(t)
	keyFile := filepath.Join(t.TempDir(), "hub.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("7c", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(hubtest.CatalogArgs(t, "mysql"), "--hub-key-file", keyFile)
	survivor := hubtest.Start(t, args...)
	spec := lab.Spec{VMs: []lab.VMSpec{{Name: "big", CBT: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "256MiB", Fill: lab.FillRandom, Seed: 9}}}}}
	e := newEnv(t, spec, envOptions{hubArgs: args, fallbacks: []string{survivor.URL}})
	createS3Repo(t, e.hub, srv, "shared")

	queued := e.start(api.StartBackupRequest{VM: "big", Repository: "shared"})
	job, err := e.hc.NextJob(t.Context(), 10*time.Second, nil)
	if err != nil || job == nil || job.ID != queued.ID {
		t.Fatalf("claim: %+v %v", job, err)
	}
	done := make(chan error, 1)
	go func() { done <- e.runner.Run(t.Context(), job) }()
	deadline := time.Now().Add(2 * time.Minute)
	for e.metricsSent() < 64*mib {
		if time.Now().After(deadline) {
			t.Fatal("the upload did not reach 64 MiB within 2 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.hub.Kill()
	killedAt := e.metricsSent()
	if err := <-done; err != nil {
		t.Fatalf("backup after its hub was killed: %v\n%s", err, e.logs)
	}
	if killedAt >= 256*mib {
		t.Fatalf("the upload had finished (%d bytes) before the hub was killed", killedAt)
	}
	if e.hc.Hub() != survivor.URL {
		t.Fatalf("the agent is on %s, not the surviving hub %s", e.hc.Hub(), survivor.URL)
	}
	// The operator asks the surviving hub, with the same API token (it is in the catalog).
	e.hub, e.op = survivor, operatorClient(t, survivor)
	b := e.get(queued.ID)
	if b.Status != "succeeded" || b.Repository != "shared" {
		t.Fatalf("backup after failover: %+v", b)
	}
	if e.imageSum(b.ID, "disk-2000") != e.diskSum("big", "disk-2000") {
		t.Fatal("the backup does not restore byte-identical through the surviving hub")
	}
	t.Logf("hub killed after %d MiB of 256 sent; the backup completed through %s", killedAt/mib, survivor.URL)
}
