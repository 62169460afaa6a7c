package backup_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// imageFrom GETs a disk image of a backup read from the repository repo (the query's
// repository) and returns the status, the body's SHA-256 and, for an error, the body.
func (e *env) imageFrom(backupID, diskID, repo string) (int, [32]byte, string) {
	e.t.Helper()
	return e.send(http.MethodGet, api.PathBackups+"/"+backupID+"/disks/"+diskID+"/image?repository="+url.QueryEscape(repo), nil)
}

// send sends a request with in as its JSON body (nil: none) as the operator and returns the
// status, the body's SHA-256 and, for an error, the body.
func (e *env) send(method, path string, in any) (int, [32]byte, string) {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(e.t.Context(), method, e.hub.URL+path, body)
	req.Header.Set("Authorization", "Bearer "+e.operator)
	resp, err := e.op.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum [32]byte
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, sum, string(b)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	copy(sum[:], h.Sum(nil))
	return resp.StatusCode, sum, ""
}

// errorBody decodes an API error body.
func errorBody(t *testing.T, body string) api.Error {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("not a JSON error body: %q", body)
	}
	return e
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// A backup copied into S3 (SeaweedFS) restores from its copy after the chunks of its own
// repository are gone — as an image (CLI and API) and as a new VM — byte-identical; a repository
// that does not exist, or holds no copy of the backup, is refused naming it. With both catalogs.
func TestRestoreFromCopy(t *testing.T) {
	srv := testenv.S3(t)
	for _, dialect := range hubtest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, twoDiskSpec("rc"), envOptions{hubArgs: hubtest.CatalogArgs(t, dialect)})
			configureVM(t, e.lab, "rc")
			createS3Repo(t, e.hub, srv, "offsite")
			full := e.run(api.StartBackupRequest{VM: "rc"})
			if _, err := e.lab.WritePercent("rc", "disk-2000", 10, 81); err != nil {
				t.Fatal(err)
			}
			inc := e.run(api.StartBackupRequest{VM: "rc"})
			disks := []string{"disk-2000", "disk-2001"}
			sums := map[string][32]byte{}
			for _, d := range disks {
				sums[d] = e.diskSum("rc", d)
			}
			if out := e.hub.CLI("repo", "copy", "--from", "default", "--to", "offsite", "--backup", inc.ID); !strings.Contains(out, "copied 1 backups") {
				t.Fatalf("repo copy: %s", out)
			}

			// Refusals, each naming the repository.
			if code, _, body := e.imageFrom(full.ID, "disk-2000", "offsite"); code != http.StatusNotFound || !strings.Contains(errorBody(t, body).Error, `"offsite"`) {
				t.Fatalf("the full backup, never copied, from offsite: %d %s", code, body)
			}
			if code, _, body := e.imageFrom(inc.ID, "disk-2000", "nowhere"); code != http.StatusBadRequest ||
				errorBody(t, body).Field != "repository" || !strings.Contains(body, `nowhere`) {
				t.Fatalf("from a repository that does not exist: %d %s", code, body)
			}
			if code, _, body := e.send(http.MethodGet, api.Path(api.PathBackupFiles, inc.ID, "disk-2000")+"?repository=nowhere", nil); code != http.StatusBadRequest ||
				errorBody(t, body).Field != "repository" {
				t.Fatalf("files from a repository that does not exist: %d %s", code, body)
			}
			target := api.RestoreTarget{Source: "lab", Datacenter: e.lab.Datacenter(), Datastore: e.lab.Datastore(), Name: "rc-from-copy"}
			if code, _, body := e.send(http.MethodPost, api.PathRestores, api.RestoreRequest{BackupID: full.ID, Repository: "offsite", Target: target}); code != http.StatusNotFound ||
				!strings.Contains(errorBody(t, body).Error, `"offsite"`) {
				t.Fatalf("restore vm of a backup without a copy there: %d %s", code, body)
			}

			// The source repository loses its chunks: its own restore fails, the copy restores.
			var rs []api.Repository
			if err := json.Unmarshal([]byte(e.hub.CLI("repo", "list", "--json")), &rs); err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if r.Name == "default" {
					if err := os.RemoveAll(filepath.Join(r.Path, "chunks")); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := e.hub.TryCLI("restore", "--backup", inc.ID, "--output", t.TempDir()); err == nil {
				t.Fatal("the backup restored from its own repository without its chunks")
			}
			out := t.TempDir()
			e.hub.CLI("restore", "--backup", inc.ID, "--repository", "offsite", "--output", out)
			for _, d := range disks {
				if fileSum(t, filepath.Join(out, d+".raw")) != sums[d] {
					t.Fatalf("restore --repository offsite: %s differs from the disk backed up", d)
				}
				if code, sum, body := e.imageFrom(inc.ID, d, "offsite"); code != http.StatusOK || sum != sums[d] {
					t.Fatalf("image of %s from offsite: %d %s, or other bytes", d, code, body)
				}
			}

			r := e.restoreVM(api.RestoreRequest{BackupID: inc.ID, Repository: "offsite", Target: target})
			if r.Status != api.JobSucceeded || r.Repository != "offsite" {
				t.Fatalf("restore vm from the copy: %+v\n%s", r, e.logs)
			}
			src, err := e.lab.VM("rc")
			if err != nil {
				t.Fatal(err)
			}
			got, ok := e.sourceVM("rc-from-copy")
			if !ok || len(got.Disks) != len(src.Disks) {
				t.Fatalf("restored vm %+v", got)
			}
			dir := datastoreDir(t, e.lab)
			for i, d := range src.Disks {
				rd := got.Disks[i]
				rel := strings.TrimSuffix(strings.TrimPrefix(rd.BackingFile, "["+rd.Datastore+"] "), ".vmdk") + "-flat.vmdk"
				if err := lab.CompareFiles(d.FlatPath, filepath.Join(dir, rel), d.CapacityBytes); err != nil {
					t.Fatalf("disk %s restored from the copy: %v", d.DiskID, err)
				}
			}
		})
	}
}
