package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
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
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "boot"}, `checks[0]: the "boot" check`},
		{[]string{"restore-test", "run", "--vm", "nope", "--check", "fsck"}, `unknown check "fsck"`},
		{[]string{"restore-test", "run"}, `required flag(s) "vm"`},
		{[]string{"restore-test", "list", "--result", "maybe"}, "result"},
		{[]string{"restore-test", "show", "rt-none"}, "rt-none"},
		{[]string{"report", "restore-tests", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"policy", "create", "--name", "rt", "--schedule", "@daily", "--kind", "restore-test", "--check", "paths"}, "not available yet"},
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
}
