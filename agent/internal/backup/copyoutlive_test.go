package backup_test

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/shared/api"
)

// filesNaming lists the files under dir whose path names the backup id.
func filesNaming(t *testing.T, dir, id string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(p, id) {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A copy outlives its source: a backup copied off site and then pruned at home by a backup
// policy keeping only the last one moves to its copy under the same id — it restores
// byte-identical from there and its home keeps no file of it — while a protected backup stays
// at home. The copy policy, keeping more, keeps it and counts it; when its retention drops it,
// it is deleted for good. `backup rm` still deletes a backup and its copies everywhere. Every
// step leaves `repo check` clean. With both catalogs.
func TestCopyOutlivesItsSource(t *testing.T) {
	for _, dialect := range hubtest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, twoDiskSpec("ol"), envOptions{hubArgs: hubtest.CatalogArgs(t, dialect)})
			offsite := filepath.Join(t.TempDir(), "offsite")
			if out := e.hub.CLI("repo", "create", "offsite", "--path", offsite); !strings.Contains(out, "created repository offsite") {
				t.Fatalf("repo create: %s", out)
			}
			var rs []api.Repository
			if err := json.Unmarshal([]byte(e.hub.CLI("repo", "list", "--json")), &rs); err != nil {
				t.Fatal(err)
			}
			home := ""
			for _, r := range rs {
				if r.Name == "default" {
					home = r.Path
				}
			}
			if home == "" {
				t.Fatalf("no default repository: %+v", rs)
			}
			checkClean := func(when string) {
				t.Helper()
				if out := e.hub.CLI("repo", "check"); !strings.Contains(out, "consistent") {
					t.Fatalf("repo check %s: %s", when, out)
				}
			}
			disks := []string{"disk-2000", "disk-2001"}
			b1 := e.run(api.StartBackupRequest{VM: "ol"})
			sums := map[string][32]byte{}
			for _, d := range disks {
				sums[d] = e.diskSum("ol", d)
			}
			var bs []api.Backup
			for i := range 2 {
				if _, err := e.lab.WritePercent("ol", "disk-2000", 5, int64(90+i)); err != nil {
					t.Fatal(err)
				}
				bs = append(bs, e.run(api.StartBackupRequest{VM: "ol"}))
			}
			b2, b3 := bs[0], bs[1]
			e.hub.CLI("backup", "protect", b2.ID)

			e.hub.CLI("policy", "create", "keep-off", "--kind", "copy", "--from", "default", "--to", "offsite", "--schedule", "@daily", "--keep-last", "3")
			if r := runCopyPolicy(t, e.hub, "keep-off"); r.status != "succeeded" || r.copied != 3 || r.pruned != 0 {
				t.Fatalf("first copy run: %+v", r)
			}

			// At home only the newest is kept (and the protected one): b1 moves to its copy.
			e.hub.CLI("policy", "create", "local", "--vm", "ol", "--schedule", "@daily", "--keep-last", "1")
			if out := e.hub.CLI("prune", "--policy", "local"); !strings.Contains(out, "1 backups removed") {
				t.Fatalf("prune at home: %s", out)
			}
			moved := e.get(b1.ID)
			if moved.Status != api.JobSucceeded || moved.Repository != "offsite" || len(moved.Copies) != 0 {
				t.Fatalf("backup %s after prune at home: %+v, want it in offsite without copies", b1.ID, moved)
			}
			for _, b := range []api.Backup{b2, b3} {
				if got := e.get(b.ID); got.Repository != "default" || !slices.Equal(copiesOf(got), []string{"offsite"}) {
					t.Fatalf("backup %s kept at home: %+v", b.ID, got)
				}
			}
			if f := filesNaming(t, home, b1.ID); len(f) != 0 {
				t.Fatalf("home repository still holds %v of the moved backup", f)
			}
			if f := filesNaming(t, offsite, b1.ID); len(f) == 0 {
				t.Fatal("offsite holds no file of the moved backup")
			}
			checkClean("after the move")
			out := t.TempDir()
			e.hub.CLI("restore", "--backup", b1.ID, "--output", out)
			for _, d := range disks {
				if fileSum(t, filepath.Join(out, d+".raw")) != sums[d] {
					t.Fatalf("moved backup: %s restores other bytes than the disk backed up", d)
				}
				if e.imageSum(b1.ID, d) != sums[d] {
					t.Fatalf("moved backup: the image of %s has other bytes than the disk backed up", d)
				}
			}
			// Pruning again at home leaves it alone: it no longer lives there.
			if out := e.hub.CLI("prune", "--policy", "local"); !strings.Contains(out, "0 backups removed") {
				t.Fatalf("prune at home again: %s", out)
			}
			// A backup policy of the copy's repository leaves it to the copy policy.
			e.hub.CLI("policy", "create", "far", "--vm", "ol", "--repository", "offsite", "--schedule", "@daily", "--keep-last", "1")
			if out := e.hub.CLI("prune", "--policy", "far"); !strings.Contains(out, "0 backups removed") || !strings.Contains(out, "copy policy's retention applies") {
				t.Fatalf("prune of the copy's repository: %s", out)
			}
			e.hub.CLI("policy", "rm", "far")

			// The copy policy keeps 3 unprotected backups: the moved one counts and stays.
			if r := runCopyPolicy(t, e.hub, "keep-off"); r.status != "succeeded" || r.copied != 0 || r.present != 3 || r.pruned != 0 {
				t.Fatalf("copy run after the move: %+v", r)
			}
			if _, err := e.lab.WritePercent("ol", "disk-2000", 5, 95); err != nil {
				t.Fatal(err)
			}
			b4 := e.run(api.StartBackupRequest{VM: "ol"})
			if r := runCopyPolicy(t, e.hub, "keep-off"); r.status != "succeeded" || r.copied != 1 || r.present != 3 || r.pruned != 0 {
				t.Fatalf("copy run with b4: %+v", r)
			}
			if got := e.get(b1.ID); got.Repository != "offsite" {
				t.Fatalf("the copy policy keeping 3 lost the moved backup: %+v", got)
			}

			// One more backup: the copy policy's retention drops the moved backup, for good.
			if _, err := e.lab.WritePercent("ol", "disk-2000", 5, 96); err != nil {
				t.Fatal(err)
			}
			b5 := e.run(api.StartBackupRequest{VM: "ol"})
			if r := runCopyPolicy(t, e.hub, "keep-off"); r.status != "succeeded" || r.copied != 1 || r.present != 3 || r.pruned != 1 {
				t.Fatalf("copy run with b5: %+v", r)
			}
			var gone api.Error
			if code := e.apiError(http.MethodGet, api.PathBackups+"/"+b1.ID, &gone); code != http.StatusNotFound {
				t.Fatalf("backup %s dropped by the copy policy: %d %+v", b1.ID, code, gone)
			}
			if f := filesNaming(t, offsite, b1.ID); len(f) != 0 {
				t.Fatalf("offsite still holds %v of the dropped backup", f)
			}
			for _, b := range []api.Backup{b2, b3, b4, b5} {
				if got := e.get(b.ID); got.Repository != "default" || !slices.Equal(copiesOf(got), []string{"offsite"}) {
					t.Fatalf("backup %s after the copy policy's prune: %+v", b.ID, got)
				}
			}
			checkClean("after the copy policy dropped the moved backup")

			// The protected backup is neither moved nor deleted; `backup rm` refuses it.
			if _, err := e.hub.TryCLI("backup", "rm", b2.ID); err == nil {
				t.Fatal("backup rm removed a protected backup")
			}
			if out := e.hub.CLI("prune", "--policy", "local"); !strings.Contains(out, "2 backups removed") {
				t.Fatalf("prune at home with b4 and b5: %s", out)
			}
			if got := e.get(b2.ID); got.Repository != "default" || !slices.Equal(copiesOf(got), []string{"offsite"}) {
				t.Fatalf("protected backup after prune: %+v", got)
			}
			for _, b := range []api.Backup{b3, b4} {
				if got := e.get(b.ID); got.Repository != "offsite" {
					t.Fatalf("backup %s pruned at home: %+v, want it moved to offsite", b.ID, got)
				}
			}

			// `backup rm` deletes everywhere: the newest, at home with a copy off site.
			e.hub.CLI("backup", "rm", b5.ID)
			if code := e.apiError(http.MethodGet, api.PathBackups+"/"+b5.ID, &gone); code != http.StatusNotFound {
				t.Fatalf("backup %s after backup rm: %d", b5.ID, code)
			}
			for _, dir := range []string{home, offsite} {
				if f := filesNaming(t, dir, b5.ID); len(f) != 0 {
					t.Fatalf("%s still holds %v after backup rm", dir, f)
				}
			}
			checkClean("after backup rm")
		})
	}
}
