package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// "instant-recovery" checks its request like the API (naming the field), starts nothing for a
// bad one, and refuses to run on a hub whose configuration has instant recovery off.
func TestInstantRecoveryCommand(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	if _, err := hub("instant-recovery", "list"); err == nil || !strings.Contains(err.Error(), "nfs_listen") {
		t.Fatalf("list with instant recovery off: %v", err)
	}
	nfs := []string{"--nfs-listen", "127.0.0.1:2049", "--nfs-address", "127.0.0.1"}
	ir := func(args ...string) (string, error) {
		return hub(append(append([]string{"instant-recovery"}, args...), nfs...)...)
	}
	if _, err := ir("start", "--backup", "bk-none", "--host", "esx1", "--name", "x"); err == nil || !strings.Contains(err.Error(), "backup_id") {
		t.Fatalf("start of a missing backup: %v", err)
	}
	if _, err := ir("start", "--backup", "bk-none", "--host", "esx1", "--name", "x", "--network-map", "novalue"); err == nil || !strings.Contains(err.Error(), "key=value") {
		t.Fatalf("bad --network-map: %v", err)
	}
	if _, err := ir("start", "--backup", "bk-none"); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("missing flags: %v", err)
	}
	out, err := ir("list")
	if err != nil || !strings.HasPrefix(out, "ID") || strings.Count(out, "\n") != 1 {
		t.Fatalf("list: %q %v", out, err)
	}
	if _, err := ir("show", "ir-none"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("show of a missing session: %v", err)
	}
	if _, err := ir("stop", "ir-none"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("stop of a missing session: %v", err)
	}
}
