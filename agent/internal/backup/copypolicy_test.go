package backup_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

var copyRunRE = regexp.MustCompile(`copy run cr-[0-9a-f]+ (\w+): (\d+) backups copied, (\d+) there already, (\d+) failed, (\d+) copies pruned: (\d+) chunks`)

type copyRun struct {
	status                                  string
	copied, present, failed, pruned, chunks int
}

// runCopyPolicy runs a copy policy now with the hub's CLI and returns what the run reports.
func runCopyPolicy(t *testing.T, hub *hubtest.Hub, name string) copyRun {
	t.Helper()
	out := hub.CLI("policy", "run", name)
	t.Logf("policy run %s: %s", name, strings.TrimSpace(out))
	m := copyRunRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("policy run: %s", out)
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	return copyRun{status: m[1], copied: n(2), present: n(3), failed: n(4), pruned: n(5), chunks: n(6)}
}

func copiesOf(b api.Backup) []string {
	var out []string
	for _, c := range b.Copies {
		out = append(out, c.Repository)
	}
	return out
}

// A copy policy copies into S3 (SeaweedFS) the backups its retention keeps — the newest
// (keep-last 1) and the protected one — and only those; the next run copies the new backup
// with only the chunks S3 lacks, leaves the protected copy, and prunes the copy retention no
// longer keeps, never a backup of the source. Each run is recorded as an event and in the
// policy's status. With both catalogs.
func TestCopyPolicy(t *testing.T) {
	srv := testenv.S3(t)
	for _, dialect := range hubtest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, twoDiskSpec("cp"), envOptions{hubArgs: hubtest.CatalogArgs(t, dialect)})
			createS3Repo(t, e.hub, srv, "offsite")
			b1 := e.run(api.StartBackupRequest{VM: "cp"})
			e.hub.CLI("backup", "protect", b1.ID)
			var later []api.Backup
			for i := range 3 {
				if _, err := e.lab.WritePercent("cp", "disk-2000", 5, int64(60+i)); err != nil {
					t.Fatal(err)
				}
				later = append(later, e.run(api.StartBackupRequest{VM: "cp"}))
			}
			b2, b3, b4 := later[0], later[1], later[2]
			if b4.Type != "incremental" {
				t.Fatalf("fourth backup: %+v", b4)
			}

			out := e.hub.CLI("policy", "create", "offsite-copy", "--kind", "copy", "--from", "default", "--to", "offsite",
				"--schedule", "@daily", "--keep-last", "2")
			var p api.Policy
			if err := json.Unmarshal([]byte(out), &p); err != nil || p.Kind != api.PolicyCopy || p.From != "default" || p.To != "offsite" {
				t.Fatalf("policy create: %s (%v)", out, err)
			}

			// Before its first run the policy is behind by what it keeps: b1 (protected), b3, b4.
			behind := `sendense_hub_copies_behind{policy="offsite-copy"}`
			lag := `sendense_hub_copy_lag_seconds{policy="offsite-copy"}`
			if n, l := e.hubMetric(t, behind), e.hubMetric(t, lag); n != 3 || l <= 0 {
				t.Fatalf("before the first run: %s = %v, %s = %v; want 3 and the age of b1", behind, n, lag, l)
			}
			first := runCopyPolicy(t, e.hub, "offsite-copy")
			// keep-last 2 keeps b3 and b4, protection keeps b1; b2 is never copied.
			if first.status != "succeeded" || first.copied != 3 || first.present != 0 || first.pruned != 0 || first.chunks == 0 {
				t.Fatalf("first run: %+v", first)
			}
			for _, b := range []api.Backup{b1, b3, b4} {
				if got := copiesOf(e.get(b.ID)); !slices.Equal(got, []string{"offsite"}) {
					t.Fatalf("backup %s has copies %v after the first run, want offsite", b.ID, got)
				}
			}
			if got := copiesOf(e.get(b2.ID)); len(got) != 0 {
				t.Fatalf("backup %s, which keep-last 2 does not keep, was copied to %v", b2.ID, got)
			}
			if n, l := e.hubMetric(t, behind), e.hubMetric(t, lag); n != 0 || l != 0 {
				t.Fatalf("after the first run: %s = %v, %s = %v; want 0 and 0", behind, n, lag, l)
			}
			if again := runCopyPolicy(t, e.hub, "offsite-copy"); again.copied != 0 || again.present != 3 || again.chunks != 0 || again.pruned != 0 {
				t.Fatalf("a run with nothing new: %+v", again)
			}

			// A new backup: the next run copies it (only its changed chunks) and prunes b3's copy.
			if _, err := e.lab.WritePercent("cp", "disk-2000", 5, 70); err != nil {
				t.Fatal(err)
			}
			b5 := e.run(api.StartBackupRequest{VM: "cp"})
			if n := e.hubMetric(t, behind); n != 1 {
				t.Fatalf("a new backup: %s = %v, want 1", behind, n)
			}
			second := runCopyPolicy(t, e.hub, "offsite-copy")
			if second.status != "succeeded" || second.copied != 1 || second.present != 2 || second.pruned != 1 || second.chunks == 0 || second.chunks >= first.chunks {
				t.Fatalf("second run: %+v (first copied %d chunks)", second, first.chunks)
			}
			want := map[string][]string{b1.ID: {"offsite"}, b2.ID: nil, b3.ID: nil, b4.ID: {"offsite"}, b5.ID: {"offsite"}}
			for id, w := range want {
				got := e.get(id)
				if got.Status != "succeeded" || got.Repository != "default" {
					t.Fatalf("backup %s in the source after copy retention: %+v", id, got)
				}
				if !slices.Equal(copiesOf(got), w) {
					t.Fatalf("backup %s has copies %v, want %v", id, copiesOf(got), w)
				}
			}
			if out := e.hub.CLI("repo", "check"); !strings.Contains(out, "consistent") {
				t.Fatalf("repo check after copy retention: %s", out)
			}

			var evs api.EventList
			if err := json.Unmarshal([]byte(e.hub.CLI("events", "list", "--type", api.EventCopyRun, "--json")), &evs); err != nil {
				t.Fatal(err)
			}
			if len(evs.Events) != 3 || evs.Events[0].Outcome != "succeeded" || evs.Events[0].Details["copies_pruned"] != "1" ||
				evs.Events[0].Details["to"] != "offsite" || evs.Events[0].Details["backups_copied"] != "1" {
				t.Fatalf("copy run events: %+v", evs.Events)
			}
			if err := json.Unmarshal([]byte(e.hub.CLI("policy", "show", "offsite-copy")), &p); err != nil || p.LastStatus != "succeeded" {
				t.Fatalf("policy show after its runs: %+v (%v)", p, err)
			}
		})
	}
}
