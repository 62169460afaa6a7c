package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/chunk"
)

// The key commands as an operator runs them: create an encrypted repository (loudly), add a key
// file, export the key, change the password (the catalog follows), remove slots but never the
// last, and refuse a wrong password naming the repository. The chunk stored at the start reads
// back after every step.
func TestRepoKeyCommands(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	hub := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, &errOut, noEnv)
		return out.String(), errOut.String(), err
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(dir, "repo")
	pw := write("pw", "first password\n")
	if _, _, err := hub("repo", "create", "sec", "--path", repoDir, "--encrypt"); err == nil || !strings.Contains(err.Error(), "--password-file") {
		t.Fatalf("--encrypt without a password file: %v", err)
	}
	if _, _, err := hub("repo", "create", "sec", "--path", repoDir, "--password-file", pw); err == nil || !strings.Contains(err.Error(), "--encrypt") {
		t.Fatalf("--password-file without --encrypt: %v", err)
	}
	out, errOut, err := hub("repo", "create", "sec", "--path", repoDir, "--encrypt", "--password-file", pw)
	if err != nil || !strings.Contains(out, "created repository sec") {
		t.Fatalf("create: %q %v", out, err)
	}
	if !strings.Contains(errOut, "WARNING") || !strings.Contains(errOut, "every backup in it is lost") {
		t.Fatalf("no loud warning at creation: %q", errOut)
	}

	plain := bytes.Repeat([]byte("key rotation keeps this readable "), 2000)
	d := chunk.Sum(plain)
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
	if err != nil {
		t.Fatal(err)
	}
	readable := func(passwordFile string) error {
		r, err := repository.OpenDir(t.Context(), repoDir, nil, repository.WithPasswordFile(passwordFile))
		if err != nil {
			return err
		}
		defer r.Close()
		got, err := r.ReadChunk(t.Context(), d, nil)
		if err == nil && !bytes.Equal(got, plain) {
			t.Fatal("wrong plaintext")
		}
		return err
	}
	r, err := repository.OpenDir(t.Context(), repoDir, nil, repository.WithPasswordFile(pw))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutChunk(t.Context(), d, blob); err != nil {
		t.Fatal(err)
	}
	_ = r.Close()

	// A key file slot: the command creates the file, 0600, and it opens the repository.
	kf := filepath.Join(dir, "sec.key")
	if out, _, err := hub("repo", "key", "add", "sec", "--new-key-file", kf); err != nil || !strings.Contains(out, "key-file slot") {
		t.Fatalf("key add: %q %v", out, err)
	}
	if fi, err := os.Stat(kf); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if err := readable(kf); err != nil {
		t.Fatalf("open with the new key file: %v", err)
	}
	if _, _, err := hub("repo", "key", "add", "sec", "--new-key-file", kf); err == nil {
		t.Fatal("key add overwrote an existing key file")
	}

	// A wrong password is refused, naming the repository.
	bad := write("bad", "not the password\n")
	if _, _, err := hub("repo", "key", "list", "sec", "--password-file", bad); err == nil || !strings.Contains(err.Error(), `repository "sec"`) || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("wrong password: %v", err)
	}

	// Escrow: the exported key, written to a new file, opens the repository.
	esc := filepath.Join(dir, "escrow")
	if _, errOut, err := hub("repo", "key", "export", "sec", "--output", esc); err != nil || !strings.Contains(errOut, "warning") {
		t.Fatalf("export: %q %v", errOut, err)
	}
	if err := readable(esc); err != nil {
		t.Fatalf("open with the exported key: %v", err)
	}

	// Change: the recorded password is rewrapped under the new one, which the catalog records.
	pw2 := write("pw2", "second password\n")
	if out, _, err := hub("repo", "key", "change", "sec", "--new-password-file", pw2); err != nil || !strings.Contains(out, "the hub now reads") {
		t.Fatalf("change: %q %v", out, err)
	}
	if err := readable(pw); err == nil {
		t.Fatal("the old password still opens the repository after a change")
	}
	if err := readable(pw2); err != nil {
		t.Fatalf("the new password: %v", err)
	}
	var listed []struct {
		ID     string `json:"id"`
		Kind   string `json:"kind"`
		Opened bool   `json:"opened"`
	}
	out, _, err = hub("repo", "key", "list", "sec", "--json") // unlocks with the recorded pw2
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 2 {
		t.Fatalf("key list: %q %v", out, err)
	}
	if out, _, err := hub("repo", "verify"); err != nil {
		t.Fatalf("repo verify of the encrypted repository: %q %v", out, err)
	}

	// Remove the key file's slot; the last slot stays.
	var kfSlot, pwSlot string
	for _, s := range listed {
		if s.Kind == repository.SlotKeyFile {
			kfSlot = s.ID
		} else if s.Opened {
			pwSlot = s.ID
		}
	}
	if _, _, err := hub("repo", "key", "remove", "sec", kfSlot); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hub("repo", "key", "remove", "sec", pwSlot); err == nil || !strings.Contains(err.Error(), "last key slot") {
		t.Fatalf("removing the last slot: %v", err)
	}
	if err := readable(pw2); err != nil {
		t.Fatalf("after removals: %v", err)
	}

	// A hub whose recorded password file no longer opens the repository says so at start,
	// naming the repository, and serves the others.
	write("pw2", "someone changed this file\n")
	_, _, logs, stop := startHub(t, "--data-dir", dataDir)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "repository cannot be opened") && strings.Contains(line, `"repository":"sec"`) && strings.Contains(line, "wrong password") {
			found = true
		}
	}
	if !found {
		t.Fatalf("the hub did not report the locked repository at start:\n%s", logs.String())
	}
}
