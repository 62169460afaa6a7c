package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sendense/sendense/shared/api"
)

// "repo verify" over --hub runs the hub's verification in the request and prints what it prints
// on the hub host (but for the time taken); only an admin may, and a bad backup is named.
func TestRemoteRepoVerifyMatchesLocal(t *testing.T) {
	dataDir := t.TempDir()
	local := func(args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := local("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 1<<20) // 16 distinct chunks of 64 KiB
	_, _ = rand.Read(img)
	backupID := backupDisk(t, dataDir, img)
	addr, _, _, _ := startHub(t, "--data-dir", dataDir)
	secrets := t.TempDir()
	tokenFile := func(name, role string) string {
		tok, err := local("apitoken", "create", "--name", name, "--role", role)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(secrets, name)
		if err := os.WriteFile(p, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	adminFile, opFile := tokenFile("admin", api.RoleAdmin), tokenFile("ops", api.RoleOperator)
	caFile := filepath.Join(dataDir, "pki", "ca.crt")
	t.Chdir(t.TempDir())
	remoteAs := func(tokFile string, args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--hub", "https://"+addr, "--token-file", tokFile, "--ca-file", caFile), &out, io.Discard, noEnv)
		return out.String(), err
	}
	took := regexp.MustCompile(` in [0-9.]+[µnm]?s\n`)
	for _, args := range [][]string{{"repo", "verify"}, {"repo", "verify", "--backup", backupID}} {
		r, err := remoteAs(adminFile, args...)
		if err != nil {
			t.Fatalf("remote %v: %v", args, err)
		}
		l, err := local(args...)
		if err != nil {
			t.Fatalf("local %v: %v", args, err)
		}
		if !took.MatchString(r) || took.ReplaceAllString(r, " in T\n") != took.ReplaceAllString(l, " in T\n") {
			t.Fatalf("%v: remote output differs from local\nremote:\n%s\nlocal:\n%s", args, r, l)
		}
		if want := "verified 1 backups, 0 copies, 16 chunks in T\nno damage found\n"; took.ReplaceAllString(r, " in T\n") != want {
			t.Fatalf("%v printed %q, want %q", args, r, want)
		}
	}

	_, lerr := local("repo", "verify", "--backup", "bk-none")
	_, rerr := remoteAs(adminFile, "repo", "verify", "--backup", "bk-none")
	if lerr == nil || rerr == nil || !strings.HasPrefix(rerr.Error(), "hub answered 400") || !strings.Contains(rerr.Error(), "backup_id") ||
		!strings.HasSuffix(rerr.Error(), ": "+lerr.Error()) {
		t.Fatalf("verify of a missing backup:\nremote %v\nlocal  %v", rerr, lerr)
	}
	if _, err := remoteAs(opFile, "repo", "verify"); err == nil || !strings.Contains(err.Error(), "hub answered 403") || !strings.Contains(err.Error(), "admin") {
		t.Fatalf("operator verify: %v", err)
	}
	if _, err := remoteAs(adminFile, "repo", "verify", "--parallel", "8"); err == nil || !strings.Contains(err.Error(), "--parallel") {
		t.Fatalf("--parallel with --hub: %v", err)
	}
	// The audit trail has the admin's verification and the operator's refusal.
	out, err := local("events", "list", "--type", "audit", "--json")
	var evs api.EventList
	if err != nil || json.Unmarshal([]byte(out), &evs) != nil {
		t.Fatalf("audit events: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, e := range evs.Events {
		if e.Details["route"] == api.PathRepositoryVerify {
			seen[e.Actor+" "+e.Outcome] = true
		}
	}
	if !seen["admin 200"] || !seen["ops 403"] || !seen["admin 400"] {
		t.Fatalf("audit of %s: %v", api.PathRepositoryVerify, seen)
	}
}
