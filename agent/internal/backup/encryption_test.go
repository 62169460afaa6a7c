package backup_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sendense/sendense/agent/internal/lab"
	"github.com/sendense/sendense/shared/api"
)

// A full and an incremental backup of a lab VM into an encrypted repository (repo create
// --encrypt on a running hub) restore byte for byte through the image API and the restore
// command; strings written into the disk appear in no file of the repository; verify and check
// are clean; and after the password is changed and the hub restarted, every backup still
// restores.
func TestBackupIntoEncryptedRepository(t *testing.T) {
	e := newEnv(t, lab.Spec{VMs: []lab.VMSpec{{Name: "secret-vm-name-7f3a", CBT: true, Disks: []lab.DiskSpec{
		{Key: 2000, Size: "24MiB", Fill: lab.FillSparse, Data: "8MiB", Seed: 11},
	}}}}, envOptions{})
	markers := []string{"ENCRYPTION-TEST-MARKER-FULL", "ENCRYPTION-TEST-MARKER-INCREMENTAL"}
	write := func(marker string, off int64) {
		t.Helper()
		if err := e.lab.Write("secret-vm-name-7f3a", "disk-2000", off, bytes.Repeat([]byte(marker+" "), 4096)); err != nil {
			t.Fatal(err)
		}
	}
	write(markers[0], 5<<20)
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "sec-repo")
	pw := filepath.Join(dir, "sec.password")
	if err := os.WriteFile(pw, []byte("a passphrase for the test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.hub.CLI("repo", "create", "sec", "--path", repoDir, "--encrypt", "--password-file", pw)

	full := e.run(api.StartBackupRequest{VM: "secret-vm-name-7f3a", Type: "full", Repository: "sec"})
	fullSum := e.diskSum("secret-vm-name-7f3a", "disk-2000")
	write(markers[1], 17<<20)
	incr := e.run(api.StartBackupRequest{VM: "secret-vm-name-7f3a", Type: "incremental", Repository: "sec"})
	incrSum := e.diskSum("secret-vm-name-7f3a", "disk-2000")
	for _, b := range []api.Backup{full, incr} {
		if b.Status != api.JobSucceeded || b.Repository != "sec" {
			t.Fatalf("backup %s: %s into %q\n%s", b.ID, b.Status, b.Repository, e.logs)
		}
	}
	if fullSum == incrSum {
		t.Fatal("the incremental's disk did not change")
	}
	restores := func() {
		t.Helper()
		for id, want := range map[string][32]byte{full.ID: fullSum, incr.ID: incrSum} {
			if e.imageSum(id, "disk-2000") != want {
				t.Fatalf("the image of %s differs from the disk it backed up", id)
			}
			out := filepath.Join(t.TempDir(), id)
			e.hub.CLI("restore", "--backup", id, "--output", out)
			if got := paddedSum(t, filepath.Join(out, "disk-2000.raw"), 24<<20); got != want {
				t.Fatalf("restore --backup %s differs from the disk it backed up", id)
			}
		}
	}
	restores()

	var files int
	err := filepath.WalkDir(repoDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		for _, m := range append(markers, "secret-vm-name-7f3a") {
			if bytes.Contains(b, []byte(m)) {
				t.Errorf("%s holds %q", p, m)
			}
		}
		files++
		return err
	})
	if err != nil || files < 5 {
		t.Fatalf("scan of %d files: %v", files, err)
	}
	if out, err := e.hub.TryCLI("repo", "verify"); err != nil {
		t.Fatalf("repo verify: %v\n%s", err, out)
	}
	if out, err := e.hub.TryCLI("repo", "check"); err != nil {
		t.Fatalf("repo check: %v\n%s", err, out)
	}

	// Rotation: a new password replaces the old; the restarted hub unlocks with the new one.
	pw2 := filepath.Join(dir, "sec.password.new")
	if err := os.WriteFile(pw2, []byte("the rotated passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.hub.CLI("repo", "key", "change", "sec", "--new-password-file", pw2)
	if _, err := e.hub.TryCLI("repo", "key", "list", "sec", "--password-file", pw); err == nil {
		t.Fatal("the old password still opens the repository")
	}
	e.hub.Restart()
	restores()
}

// paddedSum is the SHA-256 of the file at p read as size bytes (zeros past its end), as diskSum
// reads a lab disk.
func paddedSum(t *testing.T, p string, size int64) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil || n > size {
		t.Fatalf("%s: %d bytes, %v", p, n, err)
	}
	if _, err := io.CopyN(h, zeroReader{}, size-n); err != nil {
		t.Fatal(err)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
