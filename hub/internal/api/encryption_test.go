package api_test

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/check"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/verify"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// Strings written into the test disk; none may appear in any file of the repository.
var diskMarkers = []string{"SENDENSE-PLAINTEXT-MARKER-TEXT", "SENDENSE-PLAINTEXT-MARKER-RANDOM", "SENDENSE-PLAINTEXT-MARKER-TAIL"}

// markedImage is a 5-slot disk: text carrying a marker (stored zstd), random bytes with a
// marker inside (stored raw), a zero slot, random bytes, and a short text slot with a marker.
func markedImage() []byte {
	img := make([]byte, 0, 5*testChunk)
	text := bytes.Repeat([]byte(diskMarkers[0]+" lorem ipsum dolor sit amet\n"), testChunk)
	img = append(img, text[:testChunk]...)
	rnd := make([]byte, 2*testChunk)
	r := rand.NewChaCha8([32]byte{42})
	_, _ = r.Read(rnd)
	copy(rnd[1000:], diskMarkers[1])
	img = append(img, rnd[:testChunk]...)
	img = append(img, make([]byte, testChunk)...)
	img = append(img, rnd[testChunk:]...)
	tail := bytes.Repeat([]byte(diskMarkers[2]+" "), testChunk)
	return append(img, tail[:testChunk-4096]...)
}

// A backup through the agent protocol into an encrypted repository restores byte for byte;
// nothing the disk or its VM configuration holds is readable in the repository's files; verify,
// repo check and garbage collection work on it; and a flipped bit in any sealed object — VM
// configuration, index, chunk — fails verify and restore, naming the object.
func TestEncryptedRepositoryEndToEnd(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		if !h.Repo.Encrypted() {
			t.Fatal("the harness repository is not encrypted")
		}
		a := h.newAgent("a1")
		operator := h.apiToken(api.RoleOperator)
		id, img := backupOf(t, h, a, markedImage(), true)
		restores := func() bool {
			resp, got, err := h.getImage(operator, id, "")
			return err == nil && resp.StatusCode == http.StatusOK && bytes.Equal(got, img)
		}
		if !restores() {
			t.Fatal("the backup does not restore byte-identical")
		}

		var files []string
		err := filepath.WalkDir(h.RepoDir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			for _, leak := range append(diskMarkers, "otherLinux64Guest", "VM Network", "pgtest1") {
				if bytes.Contains(b, []byte(leak)) {
					t.Errorf("%s holds %q", p, leak)
				}
			}
			for off := 0; off < len(img); off += testChunk {
				if d := chunk.Sum(img[off : off+testChunk]).String(); strings.Contains(p, d) || bytes.Contains(b, []byte(d)) {
					t.Errorf("%s shows the plaintext digest of slot %d", p, off/testChunk)
				}
			}
			files = append(files, p)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(files) < 6 {
			t.Fatalf("the scan saw only %d files: %q", len(files), files)
		}

		reg := func() *repository.Registry { return repository.NewRegistry(h.Cat, nil, nil) }
		v := verify.New(h.Cat, verifyRepos(reg()), slog.New(slog.DiscardHandler), nil, 2)
		if rep, err := v.Run(t.Context(), ""); err != nil || !rep.OK() || rep.Chunks != 4 {
			t.Fatalf("verify of the sound backup: %+v %v", rep, err)
		}
		// Garbage collection maps every digest the index names to its keyed name: with every
		// chunk old enough, it removes the one chunk no backup names and nothing the backup needs.
		garbage := []byte(strings.Repeat("garbage ", testChunk/8))
		gblob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(garbage), garbage)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Repo.PutChunk(t.Context(), chunk.Sum(garbage), gblob); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-48 * time.Hour)
		_ = filepath.WalkDir(filepath.Join(h.RepoDir, "chunks"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				err = os.Chtimes(p, old, old)
			}
			return err
		})
		grep, err := h.collector().Run(t.Context(), "", 0, false)
		if err != nil || len(grep) != 1 || grep[0].FreedChunks != 1 || grep[0].Chunks != 5 {
			t.Fatalf("gc: %+v %v", grep, err)
		}
		if has, err := h.Repo.HasChunk(t.Context(), chunk.Sum(garbage)); has || err != nil {
			t.Fatalf("the unreferenced chunk survived gc: %v", err)
		}
		if crep, err := check.New(h.Cat, checkRepos(reg()), slog.New(slog.DiscardHandler)).Run(t.Context(), false); err != nil || !crep.OK() {
			t.Fatalf("repo check: %+v %v", crep.Problems, err)
		}
		if !restores() {
			t.Fatal("the backup does not restore after gc")
		}

		b, err := h.Cat.BackupByID(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		ref := repository.IndexRef{VMUUID: b.InstanceUUID, DiskID: "disk-2000", BackupID: id}
		flip := func(rel string) (undo func()) {
			t.Helper()
			p := filepath.Join(h.RepoDir, filepath.FromSlash(rel))
			orig, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			damaged := bytes.Clone(orig)
			damaged[len(damaged)/2] ^= 0x08
			_ = os.Chmod(p, 0o600)
			if err := os.WriteFile(p, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			return func() {
				if err := os.WriteFile(p, orig, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		damagedAs := func(what string) {
			t.Helper()
			rep, err := v.Run(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(rep.DamagedBackups[id], "; "); !strings.Contains(got, what) {
				t.Fatalf("verify reports %q, want it to name %s", got, what)
			}
		}

		// The VM configuration: verify names it, and a restore as a new VM is refused.
		undo := flip(repository.VMConfigKey(b.InstanceUUID, id))
		damagedAs(repository.VMConfigKey(b.InstanceUUID, id))
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathRestores, operator, restoreRequest(id), nil); code < 400 {
			t.Fatalf("restore as a VM from a damaged configuration: %d %+v", code, e)
		}
		undo()

		// The index: verify names it, and the image cannot be read.
		undo = flip("indexes/" + ref.String() + ".fidx")
		damagedAs(ref.String())
		if restores() {
			t.Fatal("a damaged index restored")
		}
		undo()
		if !restores() {
			t.Fatal("the repaired index does not restore")
		}

		// A chunk: the restore fails, verify names its digest and quarantines it.
		d := chunk.Sum(img[3*testChunk : 4*testChunk])
		name := h.Repo.ChunkName(d).String()
		flip("chunks/" + name[:2] + "/" + name[2:4] + "/" + name)
		if restores() {
			t.Fatal("a damaged chunk restored")
		}
		rep, err := v.Run(t.Context(), id)
		if err != nil || len(rep.DamagedChunks) != 1 || rep.DamagedChunks[0] != d.String() || !strings.Contains(strings.Join(rep.DamagedBackups[id], ""), d.String()) {
			t.Fatalf("verify of a damaged chunk: %+v %v", rep, err)
		}
		if q, _ := filepath.Glob(filepath.Join(h.RepoDir, "quarantine", name+".*")); len(q) != 1 {
			t.Fatalf("quarantine holds %q, want the chunk under its keyed name", q)
		}
		// The next backup of the same disk uploads it again and the first backup heals.
		backupOf(t, h, a, img, false)
		if !restores() {
			t.Fatal("the healed backup does not restore")
		}
	}, hubOptions{encrypted: true})
}
