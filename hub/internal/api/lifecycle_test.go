package api_test

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/check"
	"github.com/sendense/sendense/hub/internal/gc"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

func (h *testHub) policies() *policy.Service {
	b := jobs.New(h.Cat, repository.NewRegistry(h.Cat, nil, nil), slog.New(slog.DiscardHandler), nil, jobs.Options{Now: h.Clock.Now})
	return policy.New(h.Cat, b, nil, slog.New(slog.DiscardHandler), nil, h.Clock.Now)
}

func (h *testHub) collector() *gc.Collector {
	return gc.New(h.Cat, gcRepos(repository.NewRegistry(h.Cat, nil, nil)), slog.New(slog.DiscardHandler), nil)
}

// chunksOf returns the distinct non-zero chunk digests of an image.
func chunksOf(img []byte) map[string]bool {
	out := map[string]bool{}
	for off := 0; off < len(img); off += testChunk {
		p := img[off:min(off+testChunk, len(img))]
		d := chunk.Sum(p)
		if d != chunk.ZeroDigest(len(p)) {
			out[d.String()] = true
		}
	}
	return out
}

// Prune with keep_daily 3 and keep_weekly 2 over 20 daily backups keeps exactly the expected
// ones; a protected backup survives prune and DELETE; garbage collection then frees exactly the
// chunks no remaining backup uses, and every remaining backup still restores byte-identically.
func TestPruneProtectAndGC(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC) // a Sunday
		type made struct {
			id  string
			day int
			img []byte
		}
		var backups []made
		for day := 1; day <= 20; day++ {
			h.Clock.t = start.AddDate(0, 0, day-1)
			img := make([]byte, 3*testChunk)
			_, _ = rand.Read(img[:2*testChunk])
			copy(img[2*testChunk:], bytes.Repeat([]byte{7}, testChunk)) // one chunk shared by all
			backups = append(backups, made{h.backupImage(a, operator, img), day, img})
		}
		protected := backups[4].id // Nov 5
		if code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+protected, operator, nil, nil); code != http.StatusNoContent {
			t.Fatalf("delete an unprotected backup: %d %+v", code, e) // prove DELETE works before protecting another
		}
		protected = backups[5].id // Nov 6
		if err := h.Cat.SetProtected(t.Context(), protected, true); err != nil {
			t.Fatal(err)
		}
		code, e := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+protected, operator, nil, nil)
		if code != http.StatusConflict || !strings.Contains(e.Error, "protected") {
			t.Fatalf("DELETE of a protected backup: %d %+v, want 409 naming the protection", code, e)
		}

		ps := h.policies()
		if _, err := ps.Create(t.Context(), api.Policy{Name: "daily", Enabled: true, Schedule: "@daily", Retention: api.Retention{KeepDaily: 3, KeepWeekly: 2}}); err != nil {
			t.Fatal(err)
		}
		dry, err := ps.Prune(t.Context(), policy.PruneOptions{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		keep := map[string][]string{}
		for _, d := range dry.Decisions {
			if d.Keep {
				keep[d.BackupID] = d.Reasons
			}
		}
		// Kept: Nov 20, 19, 18 (daily 3); Nov 15, the newest of ISO week 46 (weekly; week 47's
		// newest is Nov 20); Nov 6 (protected).
		want := map[string]bool{backups[19].id: true, backups[18].id: true, backups[17].id: true, backups[14].id: true, protected: true}
		if len(keep) != len(want) {
			t.Fatalf("dry run keeps %v", keep)
		}
		for id := range want {
			if _, ok := keep[id]; !ok {
				t.Fatalf("dry run does not keep %s: %v", id, keep)
			}
		}
		if r := strings.Join(keep[backups[14].id], " "); !strings.Contains(r, "weekly 2026-W46") {
			t.Fatalf("reasons for Nov 15: %q", r)
		}
		if r := strings.Join(keep[protected], " "); !strings.Contains(r, "protected") {
			t.Fatalf("reasons for the protected backup: %q", r)
		}
		if _, n, _ := h.Cat.Backups(t.Context(), catalog.BackupFilter{}); n != 19 {
			t.Fatalf("a dry run removed backups: %d left", n)
		}

		chunksBefore, _, _ := h.Repo.Stats(t.Context())
		ageChunks(t, h.RepoDir, 48*time.Hour) // the backups were made days ago (the catalog's clock says so)
		rep, err := ps.Prune(t.Context(), policy.PruneOptions{})
		if err != nil || rep.Removed != 14 || len(rep.Errors) != 0 {
			t.Fatalf("prune removed %d (errors %v, err %v), want 14", rep.Removed, rep.Errors, err)
		}
		// Nothing is freed before garbage collection; GC frees exactly what nobody uses.
		if n, _, _ := h.Repo.Stats(t.Context()); n != chunksBefore {
			t.Fatalf("prune removed chunks: %d → %d", chunksBefore, n)
		}
		stillUsed := map[string]bool{}
		for _, b := range backups {
			if want[b.id] {
				for d := range chunksOf(b.img) {
					stillUsed[d] = true
				}
			}
		}
		reps, err := h.collector().Run(t.Context(), "", 0, false)
		if err != nil || len(reps) != 1 {
			t.Fatalf("gc: %v %v", reps, err)
		}
		var left []string
		_ = h.Repo.WalkChunks(t.Context(), func(d chunk.Digest, _ int64, _ time.Time) error { left = append(left, d.String()); return nil })
		if len(left) != len(stillUsed) || reps[0].FreedChunks != int(chunksBefore)-len(stillUsed) {
			t.Fatalf("gc left %d chunks (freed %d of %d); the remaining backups use %d", len(left), reps[0].FreedChunks, chunksBefore, len(stillUsed))
		}
		for _, d := range left {
			if !stillUsed[d] {
				t.Fatalf("gc kept chunk %s that no backup uses", d)
			}
		}
		for _, b := range backups {
			if !want[b.id] {
				continue
			}
			if resp, got, err := h.getImage(operator, b.id, ""); err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, b.img) {
				t.Fatalf("backup of day %d does not restore after prune and gc: %v", b.day, err)
			}
		}
		// And the catalog and the repository agree.
		crep, err := check.New(h.Cat, checkRepos(repository.NewRegistry(h.Cat, nil, nil)), slog.New(slog.DiscardHandler)).Run(t.Context(), false)
		if err != nil || !crep.OK() {
			t.Fatalf("check after prune and gc: %+v %v", crep.Problems, err)
		}
	})
}

// A backup running while garbage collection runs (grace 0, over and over) completes and restores.
func TestGCDuringBackup(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		old := randomImage(t, 6*testChunk)
		oldID := h.backupImage(a, operator, old)
		// The old backup is deleted: its chunks are garbage, and old.
		if code, _ := h.call(h.client(nil), http.MethodDelete, api.PathBackups+"/"+oldID, operator, nil, nil); code != http.StatusNoContent {
			t.Fatal("delete")
		}
		ageChunks(t, h.RepoDir, 48*time.Hour)
		// The new image reuses half of the old chunks (dedup) and adds new ones.
		img := bytes.Clone(old)
		_, _ = rand.Read(img[3*testChunk:])
		var b api.Backup
		h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &b)
		j := a.nextJob("5s")

		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		var gcRuns atomic.Int32
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := gc.New(h.Cat, gcRepos(repository.NewRegistry(h.Cat, nil, nil)), slog.New(slog.NewTextHandler(h.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil).Run(t.Context(), "", 0, false); err != nil {
					if t.Context().Err() == nil {
						t.Error(err)
					}
					return
				}
				gcRuns.Add(1)
			}
		}()
		for _, d := range j.Disks {
			s, code, e := a.openSession(j.ID, d.DiskID, api.OpenSessionRequest{Type: "full", CapacityBytes: d.CapacityBytes, ChunkSize: testChunk})
			if code != http.StatusOK {
				t.Fatalf("open: %d %+v", code, e)
			}
			data := img
			if d.DiskID != "disk-2000" {
				data = make([]byte, testChunk)
			}
			for _, slot := range allSlots(s.SlotCount) { // slot by slot, a collection finished in each gap
				before := gcRuns.Load()
				a.uploadDisk(s.ID, data, []int64{slot})
				for deadline := time.Now().Add(30 * time.Second); gcRuns.Load() == before; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("no garbage collection finished in 30 s")
					}
				}
			}
			var bd api.BackupDisk
			if code, e := a.call(http.MethodPost, "/api/v1/agent/sessions/"+s.ID+"/commit", api.CommitRequest{}, &bd); code != http.StatusOK {
				for i := 0; i < len(data); i += testChunk {
					t.Logf("slot %d: %s (in the old image: %v)", i/testChunk, chunk.Sum(data[i:min(i+testChunk, len(data))]), chunksOf(old)[chunk.Sum(data[i:min(i+testChunk, len(data))]).String()])
				}
				t.Logf("gc log:\n%s", h.Logs.String())
				t.Fatalf("commit while gc runs: %d %+v", code, e)
			}
		}
		close(stop)
		wg.Wait()
		if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete while gc runs: %d %+v", code, e)
		}
		if n := gcRuns.Load(); n < 3 {
			t.Fatalf("only %d gc runs during the backup", n)
		}
		// One more collection after the backup, then restore.
		if _, err := h.collector().Run(t.Context(), "", 0, false); err != nil {
			t.Fatal(err)
		}
		if resp, got, err := h.getImage(operator, j.ID, ""); err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, img) {
			t.Fatalf("the backup made during gc does not restore: %v", err)
		}
	})
}

// check finds an orphaned index (repairs it) and a missing chunk (cannot repair, names the
// backup).
func TestConsistencyCheck(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		img := randomImage(t, 4*testChunk)
		id := h.backupImage(a, operator, img)
		c := check.New(h.Cat, checkRepos(repository.NewRegistry(h.Cat, nil, nil)), slog.New(slog.DiscardHandler))
		if rep, err := c.Run(t.Context(), false); err != nil || !rep.OK() {
			t.Fatalf("clean check: %+v %v", rep.Problems, err)
		}
		// An orphan: an index file no backup names (copied under another backup id).
		src := filepath.Join(h.RepoDir, "indexes", "50120000-0000-4000-8000-000000000001", "disk-2000", id+".fidx")
		orphan := filepath.Join(h.RepoDir, "indexes", "50120000-0000-4000-8000-000000000001", "disk-2000", "bk-gone.fidx")
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(orphan, b, 0o440); err != nil {
			t.Fatal(err)
		}
		// A missing chunk of the real backup.
		d := chunk.Sum(img[0:testChunk])
		if err := h.Repo.RemoveChunk(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		rep, err := c.Run(t.Context(), true)
		if err != nil {
			t.Fatal(err)
		}
		kinds := []string{}
		for _, p := range rep.Problems {
			kinds = append(kinds, p.Kind+":"+p.BackupID+":"+map[bool]string{true: "repaired", false: "open"}[p.Repaired])
		}
		sort.Strings(kinds)
		want := []string{"missing_chunk:" + id + ":open", "orphan_index:bk-gone:repaired"}
		if strings.Join(kinds, " ") != strings.Join(want, " ") || rep.OK() {
			t.Fatalf("problems %v, want %v", kinds, want)
		}
		if _, err := os.Stat(orphan); !os.IsNotExist(err) {
			t.Fatal("the orphaned index was not removed")
		}
		if _, err := os.Stat(src); err != nil {
			t.Fatal("repair removed the index a backup needs")
		}
	})
}

// ageChunks sets every chunk file's time back by age, as if the chunks were written that long ago.
func ageChunks(t *testing.T, repoDir string, age time.Duration) {
	t.Helper()
	past := time.Now().Add(-age)
	err := filepath.Walk(filepath.Join(repoDir, "chunks"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			err = os.Chtimes(p, past, past)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
