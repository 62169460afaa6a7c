package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sendense/sendense/hub/internal/files/filestest"
	"github.com/sendense/sendense/shared/api"
)

// The restore-test commands check their input like the API, naming the problem, and record
// nothing for a bad request; list, show and the report work on an empty catalog.
func TestRestoreTestCommands(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"restore-test", "run", "--vm", "nope"}, `vm: no VM named "nope"`},
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "boot"}, `host: the "boot" check needs the ESXi host`},
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "boot", "--host", "esx1"}, `network: the "boot" check needs the isolated port group`},
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "boot", "--host", "esx1", "--network", "iso", "--tcp-port", "65536"}, "tcp_port: 65536 is not a TCP port"},
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "boot", "--host", "esx1", "--network", "iso", "--boot-timeout", "2h"}, "boot_timeout: 2h0m0s is outside 1s to 1h0m0s"},
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "boot", "--host", "esx1", "--network", "iso"}, `checks[0]: the boot check needs instant recovery on the hub: set nfs_listen`},
		{[]string{"restore-test", "run", "--vm", "nope", "--host", "esx1"}, `host: is a setting of the "boot" check only`},
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "fsck"}, `unknown check "fsck"`},
		{[]string{"restore-test", "run"}, `required flag(s) "vm"`},
		{[]string{"restore-test", "list", "--result", "maybe"}, "result"},
		{[]string{"restore-test", "show", "rt-none"}, "rt-none"},
		{[]string{"report", "restore-tests", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "paths"}, `paths: the "paths" check needs at least one path`},
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "paths", "--path", "etc/hosts"}, "paths[0]: "},
		{[]string{"restore-test", "run", "--vm", "nope", "--path", "/p1/etc/hosts"}, `paths: paths are checked by the "paths" check only`},
		{[]string{"policy", "create", "--name", "rt", "--schedule", "@daily", "--kind", "restore-test", "--check", "boot"}, `host: the "boot" check needs the ESXi host`},
		{[]string{"policy", "create", "--name", "rt", "--schedule", "@daily", "--kind", "restore-test", "--check", "boot", "--host", "esx1", "--network", "iso", "--boot-timeout", "0s"}, "boot_timeout: 0s is outside"},
		{[]string{"policy", "create", "--name", "rt", "--schedule", "@daily", "--kind", "restore-test", "--network", "iso"}, `network: is a setting of the "boot" check only`},
		{[]string{"policy", "create", "--name", "rt", "--schedule", "@daily", "--tcp-port", "22"}, "tcp_port: only a restore_test policy with the boot check has it"},
		{[]string{"policy", "create", "--name", "rt", "--schedule", "@daily", "--kind", "restore-test", "--check", "paths"}, "at least one path"},
		{[]string{"policy", "create", "--name", "rt", "--schedule", "@daily", "--path", "/p1/etc/hosts"}, "only a restore_test policy has paths"},
		{[]string{"policy", "create", "--name", "rt", "--schedule", "@daily", "--kind", "restore-test", "--keep-daily", "7"}, "retention"},
	} {
		if _, err := hub(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %q", c.args, err, c.want)
		}
	}
	out, err := hub("restore-test", "list")
	if err != nil || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "ID") {
		t.Fatalf("restore-test list: %q %v", out, err)
	}
	out, err = hub("report", "restore-tests", "--since", "30d")
	if err != nil || !strings.Contains(out, "- Runs: 0 (0 passed, 0 failed, 0 not finished)") {
		t.Fatalf("report: %q %v", out, err)
	}
	if _, err := hub("repo", "create", "default", "--path", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	out, err = hub("policy", "create", "--name", "weekly-test", "--schedule", "@weekly", "--kind", "restore-test", "--vm", "db1")
	if err != nil || !strings.Contains(out, `"kind": "restore_test"`) || !strings.Contains(out, `"checks": [`) || strings.Contains(out, "cbt_sample") {
		t.Fatalf("policy create --kind restore-test: %s %v", out, err)
	}
	// --path is not split at commas: a name may hold one.
	out, err = hub("policy", "create", "--name", "paths-test", "--schedule", "@weekly", "--kind", "restore-test", "--vm", "db1",
		"--check", "read", "--check", "paths", "--path", "/p1/etc/hosts", "--path", "disk-2000:/p1/a,b")
	var p api.Policy
	if err != nil || json.Unmarshal([]byte(out), &p) != nil || strings.Join(p.Checks, " ") != "read paths" || len(p.Paths) != 2 || p.Paths[1] != "disk-2000:/p1/a,b" {
		t.Fatalf("policy create --check paths --path: %s %v", out, err)
	}
}

// restore-test run --check paths checks the paths in the restore point's filesystem: exit 0 and
// "passed": true when they are all there, an error naming the missing one otherwise; the
// report shows them.
func TestRestoreTestRunPaths(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := []byte("127.0.0.1 localhost\n")
	if err := os.WriteFile(filepath.Join(src, "etc", "hosts"), hosts, 0o644); err != nil {
		t.Fatal(err)
	}
	id := backupDisk(t, dataDir, filestest.GPTDisk(filestest.MkfsExt4(t, src, 4<<20)))

	out, err := hub("restore-test", "run", "--vm", "pgtest1", "--backup", id, "--check", "read", "--check", "paths",
		"--path", "/p1/etc/hosts", "--path", "disk-2000:/p1/etc", "--json")
	var rt api.RestoreTest
	if err != nil || json.Unmarshal([]byte(out), &rt) != nil || !rt.Passed || len(rt.Checks) != 3 || rt.Checks[1].Path != "/p1/etc/hosts" ||
		!rt.Checks[1].Passed || rt.Checks[1].BytesRead != int64(len(hosts)) || rt.Checks[2].Type != api.FileTypeDir {
		t.Fatalf("restore-test run with present paths: %v\n%s", err, out)
	}
	out, err = hub("restore-test", "run", "--vm", "pgtest1", "--check", "paths", "--path", "/p1/etc/hosts", "--path", "/p1/etc/fstab")
	if err == nil || !strings.Contains(err.Error(), "paths /p1/etc/fstab: missing") || !strings.Contains(out, "paths /p1/etc/fstab (-)") ||
		!strings.Contains(out, "paths /p1/etc/hosts (disk-2000)") {
		t.Fatalf("restore-test run with a missing path: %v\n%s", err, out)
	}
	out, err = hub("report", "restore-tests", "--since", "1h")
	if err != nil || !strings.Contains(out, "paths /p1/etc/hosts: pass") || !strings.Contains(out, "paths /p1/etc/fstab: missing") {
		t.Fatalf("report: %v\n%s", err, out)
	}
}
