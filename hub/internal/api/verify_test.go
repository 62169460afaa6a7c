package api_test

import (
	"crypto/rand"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

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
