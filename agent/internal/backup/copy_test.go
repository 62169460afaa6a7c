package backup_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

var copiedRE = regexp.MustCompile(`copied (\d+) backups from \S+ to \S+ \((\d+) there already\): (\d+) chunks, [^,]+, (\d+) chunks the target had`)

// copyRepo runs repo copy and returns the backups and chunks it copied, and the chunks it did
// not copy because the target had them.
func copyRepo(t *testing.T, hub *hubtest.Hub, from, to string) (backups, chunks, shared int) {
	t.Helper()
	out := hub.CLI("repo", "copy", "--from", from, "--to", to)
	t.Logf("repo copy --from %s --to %s: %s", from, to, strings.TrimSpace(out))
	m := copiedRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("repo copy: %s", out)
	}
	backups, _ = strconv.Atoi(m[1])
	chunks, _ = strconv.Atoi(m[3])
	shared, _ = strconv.Atoi(m[4])
	return backups, chunks, shared
}

// Copies off site: backups of the local repository copied into S3 (SeaweedFS) and a backup of
// the S3 repository copied into another local one, only the chunks each target lacks; a second
// run copies nothing; backup show lists the copies; the check accepts them. Then the hub is
// lost: a fresh hub attaches the copies, and every backup restores byte-identical from them.
func TestCopyOffSite(t *testing.T) {
	srv := testenv.S3(t)
	e := newEnv(t, twoDiskSpec("far"), envOptions{})
	createS3Repo(t, e.hub, srv, "offsite")
	var rs []api.Repository
	if err := json.Unmarshal([]byte(e.hub.CLI("repo", "list", "--json")), &rs); err != nil {
		t.Fatal(err)
	}
	prefix := ""
	for _, r := range rs {
		if r.Name == "offsite" {
			prefix = r.S3Prefix
		}
	}
	near := filepath.Join(t.TempDir(), "near")
	if out := e.hub.CLI("repo", "create", "near", "--path", near); !strings.Contains(out, "created repository near") {
		t.Fatalf("repo create: %s", out)
	}
	disks := []string{"disk-2000", "disk-2001"}
	sums := map[string][32]byte{}
	snap := func(id string) {
		for _, d := range disks {
			sums[id+"/"+d] = e.diskSum("far", d)
		}
	}
	full := e.run(api.StartBackupRequest{VM: "far"})
	snap(full.ID)
	if _, err := e.lab.WritePercent("far", "disk-2000", 10, 51); err != nil {
		t.Fatal(err)
	}
	inc := e.run(api.StartBackupRequest{VM: "far"})
	snap(inc.ID)
	if full.Repository != "default" || inc.Type != "incremental" {
		t.Fatalf("backups: %+v %+v", full, inc)
	}

	// local → S3: the incremental's unchanged chunks travel once.
	if n, chunks, shared := copyRepo(t, e.hub, "default", "offsite"); n != 2 || chunks == 0 || shared == 0 {
		t.Fatalf("first copy: %d backups, %d chunks, %d the target had (the incremental's unchanged ones)", n, chunks, shared)
	}
	if n, chunks, _ := copyRepo(t, e.hub, "default", "offsite"); n != 0 || chunks != 0 {
		t.Fatalf("second copy: %d backups, %d chunks: it copied again", n, chunks)
	}
	if got := e.get(inc.ID); len(got.Copies) != 1 || got.Copies[0].Repository != "offsite" {
		t.Fatalf("backup show lists copies %+v", got.Copies)
	}

	// S3 → local.
	if _, err := e.lab.WritePercent("far", "disk-2001", 20, 52); err != nil {
		t.Fatal(err)
	}
	cloud := e.run(api.StartBackupRequest{VM: "far", Repository: "offsite"})
	snap(cloud.ID)
	if n, chunks, _ := copyRepo(t, e.hub, "offsite", "near"); n != 1 || chunks == 0 {
		t.Fatalf("copy from S3: %d backups, %d chunks", n, chunks)
	}
	if n, _, _ := copyRepo(t, e.hub, "offsite", "near"); n != 0 {
		t.Fatalf("second copy from S3 copied %d backups", n)
	}
	if out := e.hub.CLI("repo", "check"); !strings.Contains(out, "consistent") {
		t.Fatalf("repo check with copies: %s", out)
	}

	// The hub is lost; its copies restore everything.
	creds := srv.CredentialsFile(t, t.TempDir())
	e.hub.Stop()
	if err := os.RemoveAll(e.hub.DataDir); err != nil {
		t.Fatal(err)
	}
	hub := hubtest.Start(t)
	e.hub, e.operator, e.op = hub, hub.APIToken("operator"), operatorClient(t, hub)
	if out := hub.CLI("repo", "attach", "near", "--path", near); !strings.Contains(out, "imported 1 backups") {
		t.Fatalf("attach the local copy: %s", out)
	}
	out := hub.CLI("repo", "attach", "offsite", "--s3-endpoint", srv.Endpoint, "--s3-bucket", srv.Bucket, "--s3-prefix", prefix, "--s3-credentials-file", creds)
	if !strings.Contains(out, "imported 2 backups, 1 already in the catalog") {
		t.Fatalf("attach the S3 copy: %s", out)
	}
	for id, repo := range map[string]string{full.ID: "offsite", inc.ID: "offsite", cloud.ID: "near"} {
		if got := e.get(id); got.Repository != repo {
			t.Fatalf("backup %s restores from %s, want the copy in %s", id, got.Repository, repo)
		}
		for _, d := range disks {
			if e.imageSum(id, d) != sums[id+"/"+d] {
				t.Fatalf("backup %s disk %s does not restore its bytes from its copy", id, d)
			}
		}
	}
}
