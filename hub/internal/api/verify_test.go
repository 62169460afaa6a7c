package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/copies"
	"github.com/sendense/sendense/hub/internal/jobs"
	"github.com/sendense/sendense/hub/internal/policy"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/verify"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// A flipped byte in a chunk: verify names the damaged backup and records it, restore of it
// fails, and a backup that does not use the chunk still verifies and restores.
func TestVerifyFindsDamage(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		imgA := make([]byte, 5*testChunk)
		_, _ = rand.Read(imgA)
		first := h.backupImage(a, operator, imgA)
		imgB := make([]byte, 5*testChunk)
		_, _ = rand.Read(imgB)
		second := h.backupImage(a, operator, imgB) // shares no data chunk with the first

		v := verify.New(h.Cat, verifyRepos(repository.NewRegistry(h.Cat, nil, nil)), slog.New(slog.DiscardHandler), nil, 2)
		rep, err := v.Run(t.Context(), "")
		if err != nil || !rep.OK() || rep.Backups != 2 || rep.Chunks < 10 {
			t.Fatalf("clean verify: %+v %v", rep, err)
		}

		d := chunk.Sum(imgA[2*testChunk : 3*testChunk]).String()
		p := filepath.Join(h.RepoDir, "chunks", d[:2], d[2:4], d)
		_ = os.Chmod(p, 0o640)
		b, _ := os.ReadFile(p)
		b[len(b)-1] ^= 1
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}

		rep, err = v.Run(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, bad := rep.DamagedBackups[first]; !bad || len(rep.DamagedBackups) != 1 || len(rep.DamagedChunks) != 1 || rep.DamagedChunks[0] != d {
			t.Fatalf("verify after damage: %+v", rep)
		}
		var got api.Backup
		h.call(h.client(nil), http.MethodGet, api.PathBackups+"/"+first, operator, nil, &got)
		if got.VerifyStatus != "damaged" || got.VerifiedAt.IsZero() {
			t.Fatalf("damage not recorded: %+v", got)
		}
		h.call(h.client(nil), http.MethodGet, api.PathBackups+"/"+second, operator, nil, &got)
		if got.VerifyStatus != "ok" {
			t.Fatalf("the intact backup: %+v", got)
		}
		if _, _, err := h.getImage(operator, first, ""); err == nil {
			t.Fatal("restore of the damaged backup did not fail")
		}
		if resp, body, err := h.getImage(operator, second, ""); err != nil || resp.StatusCode != http.StatusOK || len(body) != len(imgB) {
			t.Fatalf("restore of the intact backup: %v", err)
		}
		if one, err := v.Run(t.Context(), second); err != nil || !one.OK() || one.Backups != 1 {
			t.Fatalf("verify of one intact backup: %+v %v", one, err)
		}
	})
}

// The finding this guards against: after verify named a damaged chunk, the next full backup
// of the same data sent nothing (the hub still counted the damaged chunk as present) and was
// damaged too. Now verify quarantines the chunk and records it; the next backup is told the
// chunk is missing and uploads it; verify then reports the first backup healed, and it
// restores byte for byte.
func TestDamagedChunkIsUploadedAgainAndTheBackupHeals(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		img := make([]byte, 5*testChunk)
		_, _ = rand.Read(img)
		first := h.backupImage(a, operator, img)

		d := chunk.Sum(img[2*testChunk : 3*testChunk]).String()
		p := filepath.Join(h.RepoDir, "chunks", d[:2], d[2:4], d)
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0x10
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}

		v := verify.New(h.Cat, verifyRepos(repository.NewRegistry(h.Cat, nil, nil)), slog.New(slog.DiscardHandler), nil, 2)
		rep, err := v.Run(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, bad := rep.DamagedBackups[first]; !bad || len(rep.DamagedChunks) != 1 || rep.DamagedChunks[0] != d {
			t.Fatalf("verify after damage: %+v", rep)
		}
		if len(rep.Quarantined) != 1 || rep.Quarantined[0] != d {
			t.Fatalf("verify quarantined %v, want [%s]", rep.Quarantined, d)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("the damaged chunk is still in chunks/: %v", err)
		}
		if q, _ := filepath.Glob(filepath.Join(h.RepoDir, "quarantine", d+".*")); len(q) != 1 {
			t.Fatalf("quarantine holds %q, want one object of %s", q, d)
		}
		evs := h.events(operator, "?type=chunk_quarantined")
		if len(evs.Events) != 1 || evs.Events[0].Details["digest"] != d || evs.Events[0].Details["found_by"] != "verify" ||
			evs.Events[0].Details["backup_ids"] != first || evs.Events[0].Details["repository"] != repository.DefaultName {
			t.Fatalf("quarantine events: %+v", evs.Events)
		}

		// The next full backup of the same data: the hub answers that exactly the damaged chunk
		// is missing, the agent uploads it, and the backup succeeds.
		a.push(twoDiskInventory(int64(len(img)), testChunk))
		var started api.Backup
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathBackups, operator, api.StartBackupRequest{VM: "pgtest1"}, &started); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, e)
		}
		j := a.nextJob("5s")
		for _, disk := range j.Disks {
			s, code, e := a.openSession(j.ID, disk.DiskID, api.OpenSessionRequest{Type: "full", CapacityBytes: disk.CapacityBytes, ChunkSize: testChunk})
			if code != http.StatusOK {
				t.Fatalf("open: %d %+v", code, e)
			}
			if disk.DiskID != "disk-2000" {
				a.uploadDisk(s.ID, make([]byte, testChunk), allSlots(s.SlotCount))
				a.commit(s.ID)
				continue
			}
			var batch api.SlotBatch
			for i := range int64(5) {
				batch.Slots = append(batch.Slots, api.SlotDigest{Slot: i, Digest: chunk.Sum(img[i*testChunk : (i+1)*testChunk]).String()})
			}
			var res api.SlotBatchResult
			if code, e := a.call(http.MethodPost, api.Path(api.PathAgentSlots, s.ID), batch, &res); code != http.StatusOK {
				t.Fatalf("record slots: %d %+v", code, e)
			}
			if len(res.Missing) != 1 || res.Missing[0] != d {
				t.Fatalf("the hub says %v are missing, want the damaged chunk %s: a damaged chunk was reused", res.Missing, d)
			}
			if code := a.putChunk(s.ID, img[2*testChunk:3*testChunk], 2); code != http.StatusCreated {
				t.Fatalf("upload the chunk again: %d", code)
			}
			a.commit(s.ID)
		}
		if code, e := a.complete(j.ID, "succeeded"); code != http.StatusOK {
			t.Fatalf("complete: %d %+v", code, e)
		}

		rep, err = v.Run(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || rep.Backups != 2 || len(rep.Quarantined) != 0 || len(rep.Healed) != 1 || rep.Healed[0] != first {
			t.Fatalf("verify after the new backup: %+v", rep)
		}
		var got api.Backup
		h.call(h.client(nil), http.MethodGet, api.PathBackups+"/"+first, operator, nil, &got)
		if got.VerifyStatus != verify.StatusOK {
			t.Fatalf("the healed backup is recorded %q", got.VerifyStatus)
		}
		healed := h.events(operator, "?type=backup_healed")
		if len(healed.Events) != 1 || healed.Events[0].Details["backup_id"] != first || healed.Events[0].VM != "pgtest1" {
			t.Fatalf("healed events: %+v", healed.Events)
		}
		if resp, body, err := h.getImage(operator, first, ""); err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, img) {
			t.Fatalf("restore of the healed backup: %v", err)
		}
		// Healing is reported once: the next verification finds nothing new.
		if rep, err = v.Run(t.Context(), ""); err != nil || !rep.OK() || len(rep.Healed) != 0 {
			t.Fatalf("verify again: %+v %v", rep, err)
		}
	})
}

// offsiteCopy makes a local repository "offsite" and a daily copy policy "off" into it from the
// default repository, and returns the policy service, the repository's directory and a verifier
// of every repository.
func (h *testHub) offsiteCopy(t *testing.T) (*policy.Service, string, *verify.Verifier) {
	t.Helper()
	ctx := t.Context()
	repos := repository.NewRegistry(h.Cat, nil, nil)
	t.Cleanup(func() { _ = repos.Close() })
	dir := t.TempDir()
	if _, err := repos.Create(ctx, "offsite", dir, testChunk); err != nil {
		t.Fatal(err)
	}
	b := jobs.New(h.Cat, repos, slog.New(slog.DiscardHandler), nil, jobs.Options{Now: time.Now})
	ps := policy.New(h.Cat, b, nil, slog.New(slog.DiscardHandler), nil, time.Now)
	open := func(ctx context.Context, id string) (copies.Repository, error) { return repos.Open(ctx, id) }
	ps.SetCopies(copies.New(h.Cat, open, slog.New(slog.DiscardHandler), 2), b)
	if _, err := ps.Create(ctx, api.Policy{Name: "off", Kind: api.PolicyCopy, From: repository.DefaultName, To: "offsite", Enabled: true,
		Schedule: "@daily", Retention: api.Retention{KeepLast: 5}}); err != nil {
		t.Fatal(err)
	}
	return ps, dir, verify.New(h.Cat, verifyRepos(repos), slog.New(slog.DiscardHandler), nil, 2)
}

// flipByte changes one byte in the middle of the file at p, as bit rot would.
func flipByte(t *testing.T, p string) {
	t.Helper()
	_ = os.Chmod(p, 0o640)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

// A copy is verified where it is: damage in the copy is the copy's (the backup stays a sound
// restore point, and the copy is recorded damaged), the damaged chunk is quarantined there, and
// the next run of the copy policy copies the backup again, the missing chunk only, after which
// the copy verifies and restores byte for byte.
func TestDamagedCopyIsFoundAndCopiedAgain(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		ctx := t.Context()
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		img := randomImage(t, 4*testChunk)
		id := h.backupImage(a, operator, img)
		ps, offDir, v := h.offsiteCopy(t)
		if run, err := ps.RunCopy(ctx, "off"); err != nil || run.BackupsCopied != 1 || run.Error != "" {
			t.Fatalf("copy run: %+v %v", run, err)
		}
		if rep, err := v.Run(ctx, ""); err != nil || !rep.OK() || rep.Copies != 1 {
			t.Fatalf("clean verify: %+v %v", rep, err)
		}

		d := chunk.Sum(img[2*testChunk : 3*testChunk]).String()
		flipByte(t, filepath.Join(offDir, "chunks", d[:2], d[2:4], d))
		rep, err := v.Run(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.DamagedBackups) != 0 || len(rep.DamagedCopies) != 1 || len(rep.DamagedCopies[id]["offsite"]) != 1 ||
			len(rep.Quarantined) != 1 || rep.Quarantined[0] != d {
			t.Fatalf("verify after damaging the copy: %+v", rep)
		}
		var got api.Backup
		h.call(h.client(nil), http.MethodGet, api.PathBackups+"/"+id, operator, nil, &got)
		if got.VerifyStatus != api.VerifyOK || len(got.Copies) != 1 || got.Copies[0].VerifyStatus != api.VerifyDamaged || got.Copies[0].VerifiedAt.IsZero() {
			t.Fatalf("after the damage: %+v", got)
		}
		if n, err := h.Cat.DamagedCopies(ctx); err != nil || n != 1 {
			t.Fatalf("damaged copies counted: %d %v", n, err)
		}
		if resp, body, err := h.getImage(operator, id, ""); err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, img) {
			t.Fatalf("restore from the backup's own repository: %v", err)
		}
		// Until the copy is repaired, the backup does not leave its sound home for it (as a
		// prune of its home would have it).
		row, err := h.Cat.BackupByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		repos := repository.NewRegistry(h.Cat, nil, nil)
		t.Cleanup(func() { _ = repos.Close() })
		js := jobs.New(h.Cat, repos, slog.New(slog.DiscardHandler), nil, jobs.Options{Now: time.Now})
		if err := js.DeleteFrom(ctx, id, row.RepositoryID); !errors.Is(err, catalog.ErrConflict) || !strings.Contains(err.Error(), "damaged") {
			t.Fatalf("removal from home with only a damaged copy: %v, want a conflict naming the damage", err)
		}
		if after, err := h.Cat.BackupByID(ctx, id); err != nil || after.RepositoryID != row.RepositoryID {
			t.Fatalf("the backup after the refused removal: %+v %v", after, err)
		}

		run, err := ps.RunCopy(ctx, "off")
		if err != nil || run.BackupsCopied != 1 || run.BackupsPresent != 0 || run.ChunksCopied != 1 || run.Error != "" {
			t.Fatalf("the copy run after the damage: %+v %v, want the backup copied again with its one missing chunk", run, err)
		}
		got = api.Backup{}
		h.call(h.client(nil), http.MethodGet, api.PathBackups+"/"+id, operator, nil, &got)
		if len(got.Copies) != 1 || got.Copies[0].VerifyStatus != "" || !got.Copies[0].VerifiedAt.IsZero() {
			t.Fatalf("the copy made anew is still recorded verified: %+v", got.Copies)
		}
		if run, err := ps.RunCopy(ctx, "off"); err != nil || run.BackupsCopied != 0 || run.BackupsPresent != 1 {
			t.Fatalf("a third copy run: %+v %v, want the copy present", run, err)
		}
		if rep, err = v.Run(ctx, ""); err != nil || !rep.OK() || rep.Copies != 1 {
			t.Fatalf("verify after the copy run: %+v %v", rep, err)
		}
		if n, err := h.Cat.DamagedCopies(ctx); err != nil || n != 0 {
			t.Fatalf("damaged copies counted: %d %v", n, err)
		}
		body, err := io.ReadAll(h.startDownload(operator, id, "?repository=offsite").Body)
		if err != nil || !bytes.Equal(body, img) {
			t.Fatalf("restore from the copy: %v (%d bytes)", err, len(body))
		}
	})
}

// A copy whose index is damaged (verification cannot read its chunks, so it quarantines none)
// is repaired by the next copy run all the same: the damaged index is written again, and every
// chunk the copy holds is verified, the damaged one quarantined and copied again.
func TestCopyWithADamagedIndexIsRepaired(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		ctx := t.Context()
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		img := randomImage(t, 4*testChunk)
		id := h.backupImage(a, operator, img)
		ps, offDir, v := h.offsiteCopy(t)
		if run, err := ps.RunCopy(ctx, "off"); err != nil || run.BackupsCopied != 1 {
			t.Fatalf("copy run: %+v %v", run, err)
		}
		idx, _ := filepath.Glob(filepath.Join(offDir, "indexes", "*", "disk-2000", id+".fidx"))
		if len(idx) != 1 {
			t.Fatalf("the copy's index: %v", idx)
		}
		flipByte(t, idx[0])
		d := chunk.Sum(img[3*testChunk:]).String()
		flipByte(t, filepath.Join(offDir, "chunks", d[:2], d[2:4], d))
		rep, err := v.Run(ctx, "")
		if err != nil || len(rep.DamagedCopies[id]["offsite"]) != 1 || !strings.Contains(rep.DamagedCopies[id]["offsite"][0], "index") ||
			len(rep.Quarantined) != 0 || len(rep.DamagedBackups) != 0 {
			t.Fatalf("verify: %+v %v, want the copy's index named and nothing quarantined", rep, err)
		}
		run, err := ps.RunCopy(ctx, "off")
		if err != nil || run.BackupsCopied != 1 || run.ChunksCopied != 1 || run.Error != "" {
			t.Fatalf("the copy run after the damage: %+v %v, want the copy repaired with the damaged chunk copied again", run, err)
		}
		if rep, err = v.Run(ctx, ""); err != nil || !rep.OK() {
			t.Fatalf("verify after the repair: %+v %v", rep, err)
		}
		body, err := io.ReadAll(h.startDownload(operator, id, "?repository=offsite").Body)
		if err != nil || !bytes.Equal(body, img) {
			t.Fatalf("restore from the repaired copy: %v (%d bytes)", err, len(body))
		}
	})
}
