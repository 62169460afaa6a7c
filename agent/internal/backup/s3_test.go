package backup_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// createS3Repo creates a repository called name on a fresh prefix of the tests' S3 bucket with
// the hub's CLI and returns the credentials file it names.
func createS3Repo(t *testing.T, hub *hubtest.Hub, srv *testenv.S3Server, name string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	creds := srv.CredentialsFile(t, t.TempDir())
	out := hub.CLI("repo", "create", name, "--s3-endpoint", srv.Endpoint, "--s3-bucket", srv.Bucket,
		"--s3-prefix", "e2e-"+hex.EncodeToString(b[:]), "--s3-credentials-file", creds, "--chunk-size", "4MiB")
	if !strings.Contains(out, "created repository "+name) || !strings.Contains(out, ", s3)") {
		t.Fatalf("repo create: %q", out)
	}
	return creds
}

// A full and an incremental backup into an S3 repository (SeaweedFS) restore byte-identical;
// repo check, verify and gc work on it; the secret appears in no log and not in the catalog.
func TestBackupToS3Repository(t *testing.T) {
	srv := testenv.S3(t)
	e := newEnv(t, twoDiskSpec("s3vm"), envOptions{})
	createS3Repo(t, e.hub, srv, "offsite")

	full := e.run(api.StartBackupRequest{VM: "s3vm", Repository: "offsite"})
	fullDone := time.Now()
	if full.Status != "succeeded" || full.Repository != "offsite" || full.Type != "full" {
		t.Fatalf("full backup into S3: %+v\n%s", full, e.logs)
	}
	for _, id := range []string{"disk-2000", "disk-2001"} {
		if e.imageSum(full.ID, id) != e.diskSum("s3vm", id) {
			t.Fatalf("full backup in S3: %s does not restore its bytes", id)
		}
	}
	if _, err := e.lab.WritePercent("s3vm", "disk-2000", 5, 41); err != nil {
		t.Fatal(err)
	}
	inc := e.run(api.StartBackupRequest{VM: "s3vm", Repository: "offsite"})
	if inc.Status != "succeeded" || inc.Type != "incremental" {
		t.Fatalf("incremental into S3: %+v", inc)
	}
	for _, id := range []string{"disk-2000", "disk-2001"} {
		if e.imageSum(inc.ID, id) != e.diskSum("s3vm", id) {
			t.Fatalf("incremental in S3: %s does not restore its bytes", id)
		}
	}

	if out := e.hub.CLI("repo", "check"); !strings.Contains(out, "consistent") {
		t.Fatalf("repo check: %s", out)
	}
	if out := e.hub.CLI("repo", "verify"); !strings.Contains(out, "no damage found") {
		t.Fatalf("repo verify: %s", out)
	}
	// Without the full backup, the chunks only it named are garbage: gc frees them from the
	// bucket and the incremental still restores.
	if code := e.api(http.MethodDelete, api.PathBackups+"/"+full.ID, nil, nil); code >= 300 {
		t.Fatalf("delete the full backup: %d", code)
	}
	// GC spares objects younger than an S3 store's clock margin (11 s) beyond the grace: wait
	// until the full's own chunks are old enough for a 0s grace.
	time.Sleep(time.Until(fullDone.Add(13 * time.Second)))
	out := e.hub.CLI("repo", "gc", "--repository", "offsite", "--grace", "0s")
	if !strings.Contains(out, "offsite:") || strings.Contains(out, "freed 0 chunks") {
		t.Fatalf("repo gc freed nothing after the full backup was deleted: %s", out)
	}
	for _, id := range []string{"disk-2000", "disk-2001"} {
		if e.imageSum(inc.ID, id) != e.diskSum("s3vm", id) {
			t.Fatalf("after gc: %s of the incremental does not restore its bytes", id)
		}
	}
	if out := e.hub.CLI("repo", "check"); !strings.Contains(out, "consistent") {
		t.Fatalf("repo check after gc: %s", out)
	}

	// The secret is in the credentials file only.
	if strings.Contains(e.hub.Logs(), srv.SecretKey) {
		t.Fatal("the hub logged the S3 secret")
	}
	entries, err := os.ReadDir(e.hub.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range entries {
		if !strings.HasPrefix(ent.Name(), "catalog") && !strings.HasSuffix(ent.Name(), ".db") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(e.hub.DataDir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), srv.SecretKey) {
			t.Fatalf("the catalog file %s holds the S3 secret", ent.Name())
		}
	}
	if list := e.hub.CLI("repo", "list", "--json"); strings.Contains(list, srv.SecretKey) || !strings.Contains(list, srv.Bucket) {
		t.Fatalf("repo list: %s", list)
	}
}

// The S3 server killed (SIGKILL) in the middle of an incremental backup and started again: the
// backup completes or fails cleanly; every backup committed before — and the incremental if it
// succeeded — restores byte-identical, and the repository checks consistent.
func TestS3ServerKilledMidBackup(t *testing.T) {
	srv := testenv.PrivateS3(t)
	spec := lab.Spec{VMs: []lab.VMSpec{{Name: "vm1", CBT: true, Disks: []lab.DiskSpec{{Key: 2000, Size: "320MiB", Fill: lab.FillRandom, Seed: 3}}}}}
	e := newEnv(t, spec, envOptions{})
	createS3Repo(t, e.hub, srv, "offsite")
	full := e.run(api.StartBackupRequest{VM: "vm1", Repository: "offsite"})
	if full.Status != "succeeded" {
		t.Fatalf("full: %+v", full)
	}
	fullSum := e.diskSum("vm1", "disk-2000")
	if _, err := e.lab.WritePercent("vm1", "disk-2000", 60, 5); err != nil {
		t.Fatal(err)
	}
	incSum := e.diskSum("vm1", "disk-2000")

	queued := e.start(api.StartBackupRequest{VM: "vm1", Repository: "offsite"})
	job, err := e.hc.NextJob(t.Context(), 10*time.Second, nil)
	if err != nil || job == nil || job.ID != queued.ID {
		t.Fatalf("claim job %s: %+v %v", queued.ID, job, err)
	}
	received := e.hubChunks(t)
	runErr := make(chan error, 1)
	go func() { runErr <- e.runner.Run(t.Context(), job) }()
	testenv.WaitFor(t, 2*time.Minute, "some chunks of the incremental stored", func() bool { return e.hubChunks(t) >= received+5 })
	srv.Kill(t)
	if st := e.get(queued.ID); st.Status != "running" {
		t.Fatalf("the backup was %s when the S3 server died, not running: the test did not cut it", st.Status)
	}
	time.Sleep(2 * time.Second) // the hub meets a dead server for a while
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	err = <-runErr
	b := e.get(queued.ID)
	t.Logf("backup across the S3 restart: status %s, run error %v; the hub logged %d S3 connection failures",
		b.Status, err, strings.Count(e.hub.Logs(), "connection refused"))
	switch b.Status {
	case "succeeded":
		if e.imageSum(b.ID, "disk-2000") != incSum {
			t.Fatal("the backup that survived the S3 restart does not restore its bytes")
		}
	case "failed":
		// A failed backup is followed by one that succeeds.
		again := e.run(api.StartBackupRequest{VM: "vm1", Repository: "offsite"})
		if again.Status != "succeeded" || e.imageSum(again.ID, "disk-2000") != incSum {
			t.Fatalf("the backup after the failed one: %+v", again)
		}
	default:
		t.Fatalf("backup across the S3 restart ended %s (run error %v)", b.Status, err)
	}
	if e.imageSum(full.ID, "disk-2000") != fullSum {
		t.Fatal("the full backup committed before the S3 restart does not restore its bytes")
	}
	if out := e.hub.CLI("repo", "check"); !strings.Contains(out, "consistent") {
		t.Fatalf("repo check after the S3 restart: %s", out)
	}
}

// The same full backup and image restore into the default (local) repository and into an S3
// repository (SeaweedFS on loopback): both restore byte-identical; the rates are logged.
// SENDENSE_TEST_S3_MIB sets the disk's size (default 256 MiB of random data).
func TestS3AgainstLocalThroughput(t *testing.T) {
	srv := testenv.S3(t)
	size := 256
	if v, err := strconv.Atoi(os.Getenv("SENDENSE_TEST_S3_MIB")); err == nil && v > 0 {
		size = v
	}
	spec := lab.Spec{VMs: []lab.VMSpec{{Name: "tp", CBT: true, Disks: []lab.DiskSpec{{Key: 2000, Size: fmt.Sprintf("%dMiB", size), Fill: lab.FillRandom, Seed: 11}}}}}
	e := newEnv(t, spec, envOptions{transport: "file"})
	createS3Repo(t, e.hub, srv, "offsite")
	want := e.diskSum("tp", "disk-2000")
	mb := float64(size) * (1 << 20) / 1e6
	for _, repo := range []string{"default", "offsite"} {
		start := time.Now()
		b := e.run(api.StartBackupRequest{VM: "tp", Type: "full", Repository: repo})
		backupSecs := time.Since(start).Seconds()
		if b.Status != "succeeded" || b.Repository != repo {
			t.Fatalf("full backup into %s: %+v", repo, b)
		}
		start = time.Now()
		if e.imageSum(b.ID, "disk-2000") != want {
			t.Fatalf("the backup in %s does not restore its bytes", repo)
		}
		restoreSecs := time.Since(start).Seconds()
		t.Logf("%s: full backup of %d MiB in %.2fs (%.0f MB/s), restore stream in %.2fs (%.0f MB/s)",
			repo, size, backupSecs, mb/backupSecs, restoreSecs, mb/restoreSecs)
	}
}
