package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sendense/sendense/shared/api"
)

// "instant-recovery" over --hub prints what it prints on the hub host, byte for byte, for
// sessions started either way; the API's refusals reach the remote user naming the field, and
// a viewer is refused a change naming the role it needs.
func TestRemoteInstantRecoveryMatchesLocal(t *testing.T) {
	dataDir := t.TempDir()
	nfs := []string{"--nfs-listen", "127.0.0.1:0", "--nfs-address", "127.0.0.1"}
	local := func(args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := run(t.Context(), append(append(args, "--data-dir", dataDir), nfs...), &out, io.Discard, noEnv)
		return out.String(), err
	}
	mustLocal := func(args ...string) string {
		t.Helper()
		out, err := local(args...)
		if err != nil {
			t.Fatalf("local %v: %v", args, err)
		}
		return out
	}
	mustLocal("migrate", "up")
	backupID := backupDiskOf(t, dataDir, bytes.Repeat([]byte{0x5a}, 2<<20), true)
	addr, _, _, _ := startHub(t, append([]string{"--data-dir", dataDir}, nfs...)...)

	secrets := t.TempDir()
	tokenFile := func(name, role string) string {
		tok := strings.TrimSpace(mustLocal("apitoken", "create", "--name", name, "--role", role))
		p := filepath.Join(secrets, name)
		if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	opFile, viewerFile := tokenFile("ops", api.RoleOperator), tokenFile("auditor", api.RoleViewer)
	caFile := filepath.Join(dataDir, "pki", "ca.crt")
	t.Chdir(t.TempDir()) // remote commands run with no hub data at hand
	remoteAs := func(tokFile string, args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--hub", "https://"+addr, "--token-file", tokFile, "--ca-file", caFile), &out, io.Discard, noEnv)
		return out.String(), err
	}
	remote := func(args ...string) (string, error) { return remoteAs(opFile, args...) }
	same := func(args ...string) string {
		t.Helper()
		r, err := remote(args...)
		if err != nil {
			t.Fatalf("remote %v: %v", args, err)
		}
		if l := mustLocal(args...); r != l {
			t.Fatalf("%v: remote output differs from local\nremote:\n%s\nlocal:\n%s", args, r, l)
		}
		return r
	}

	start := []string{"instant-recovery", "start", "--backup", backupID, "--host", "127.0.0.1"}
	rout, err := remote(append(start, "--name", "remote-ir")...)
	if err != nil {
		t.Fatalf("remote start: %v", err)
	}
	lout := mustLocal(append(start, "--name", "local-ir")...)
	for _, out := range []string{rout, lout} {
		if f := strings.Split(strings.TrimSpace(out), "\t"); len(f) != 3 || !strings.HasPrefix(f[0], api.InstantRecoveryIDPrefix) ||
			f[1] != api.IRStarting || !strings.HasPrefix(f[2], "127.0.0.1:/") {
			t.Fatalf("start printed %q", out)
		}
	}
	rid, lid := strings.Split(rout, "\t")[0], strings.Split(lout, "\t")[0]

	if out := same("instant-recovery", "list"); !strings.Contains(out, rid) || !strings.Contains(out, lid) || strings.Count(out, "\n") != 3 {
		t.Fatalf("list: %s", out)
	}
	var l api.InstantRecoveryList
	if err := json.Unmarshal([]byte(same("instant-recovery", "list", "--json", "--limit", "1")), &l); err != nil ||
		len(l.InstantRecoveries) != 1 || l.Page.Total != 2 || l.InstantRecoveries[0].ID != lid {
		t.Fatalf("list --json --limit 1: %+v %v", l, err)
	}
	same("instant-recovery", "list", "--status", api.IRStarting)
	if out := same("instant-recovery", "show", rid); !strings.Contains(out, `"name": "remote-ir"`) {
		t.Fatalf("show: %s", out)
	}
	same("instant-recovery", "show", lid)

	// Refusals: the field named, the role named, nothing changed.
	if _, err := remote("instant-recovery", "start", "--backup", "bk-none", "--host", "127.0.0.1", "--name", "x"); err == nil ||
		!strings.Contains(err.Error(), "hub answered 400") || !strings.Contains(err.Error(), "backup_id") {
		t.Fatalf("remote start of a missing backup: %v", err)
	}
	if _, err := remote("instant-recovery", "list", "--status", "nope"); err == nil || !strings.Contains(err.Error(), "status") {
		t.Fatalf("remote list --status nope: %v", err)
	}
	if _, err := remote("instant-recovery", "show", "ir-none"); err == nil || !strings.Contains(err.Error(), "hub answered 404") {
		t.Fatalf("remote show of a missing session: %v", err)
	}
	if _, err := remote("instant-recovery", "migrate", rid, "--datastore", "ds2"); err == nil || !strings.Contains(err.Error(), "hub answered 409") {
		t.Fatalf("remote migrate of a starting session: %v", err)
	}
	if _, err := remoteAs(viewerFile, "instant-recovery", "stop", rid); err == nil ||
		!strings.Contains(err.Error(), "hub answered 403") || !strings.Contains(err.Error(), "operator") {
		t.Fatalf("viewer stop: %v", err)
	}
	if out, err := remoteAs(viewerFile, "instant-recovery", "list"); err != nil || !strings.Contains(out, rid) {
		t.Fatalf("viewer list: %q %v", out, err)
	}
	same("instant-recovery", "list", "--json")

	// Stopping either way prints the same line shape and the same state after.
	if out, err := remote("instant-recovery", "stop", lid); err != nil || out != lid+"\t"+api.IRStopping+"\n" {
		t.Fatalf("remote stop: %q %v", out, err)
	}
	if out := mustLocal("instant-recovery", "stop", rid); out != rid+"\t"+api.IRStopping+"\n" {
		t.Fatalf("local stop: %q", out)
	}
	if out := same("instant-recovery", "list", "--status", api.IRStopping); strings.Count(out, "\n") != 3 {
		t.Fatalf("list --status stopping: %s", out)
	}
}
