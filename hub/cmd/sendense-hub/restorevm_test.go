package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// "restore vm" is a subcommand beside the image restore: it checks its request like the API
// (naming the field) and queues nothing for a bad one; list and the image restore keep working.
func TestRestoreVMCommand(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	_, err := hub("restore", "vm", "--backup", "bk-none", "--source", "vc1", "--datacenter", "DC0", "--datastore", "LocalDS_0", "--name", "x")
	if err == nil || !strings.Contains(err.Error(), "backup_id") {
		t.Fatalf("restore vm of a missing backup: %v", err)
	}
	if _, err := hub("restore", "vm", "--backup", "bk-none", "--source", "vc1", "--datacenter", "DC0", "--datastore", "LocalDS_0", "--name", "x", "--network-map", "novalue"); err == nil || !strings.Contains(err.Error(), "key=value") {
		t.Fatalf("bad --network-map: %v", err)
	}
	if _, err := hub("restore", "vm", "--backup", "bk-none"); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("missing flags: %v", err)
	}
	if _, err := hub("restore", "in-place", "--backup", "bk-none", "--confirm", "db1"); err == nil || !strings.Contains(err.Error(), "backup_id") {
		t.Fatalf("in-place restore of a missing backup: %v", err)
	}
	if _, err := hub("restore", "in-place", "--backup", "bk-none"); err == nil || !strings.Contains(err.Error(), "confirm") {
		t.Fatalf("in-place restore without --confirm: %v", err)
	}
	out, err := hub("restore", "list")
	if err != nil || !strings.HasPrefix(out, "ID") || strings.Count(out, "\n") != 1 {
		t.Fatalf("restore list: %q %v", out, err)
	}
	if _, err := hub("restore", "--backup", "bk-none", "--output", t.TempDir()); err == nil || !strings.Contains(err.Error(), "bk-none") {
		t.Fatalf("image restore of a missing backup: %v", err)
	}
}
