package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// forgedName is a VM name as an old catalog may hold it (stored before the API refused control
// characters): it clears the screen, returns the cursor and prints a fake row, then flips text.
const forgedName = "evil\x1b[2J\r\nctx-fake-1  pgtest1  protected\x07\u202etxt.exe\u2066\u0085"

// seedForged stores a VM with forgedName and an event naming it directly in the catalog, the way
// rows written before validation look.
func seedForged(t *testing.T, dataDir string) {
	t.Helper()
	cat, err := catalog.Open(t.Context(), catalog.Options{SQLitePath: filepath.Join(dataDir, "catalog.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	ctx := t.Context()
	if err := cat.CreateJoinToken(ctx, &catalog.JoinToken{ID: "jt-1", SecretHash: "h", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	a := &catalog.Agent{ID: "agent-1", Name: "a1", Hostname: "host\x1b]0;pwned\x07", Status: api.AgentActive, CertSerial: "1", CertFingerprint: "f", CertNotAfter: time.Now().Add(time.Hour)}
	if err := cat.RedeemJoinToken(ctx, "jt-1", "h", a); err != nil {
		t.Fatal(err)
	}
	err = cat.ApplyInventory(ctx, "agent-1", api.Source{Name: "vc1", InstanceUUID: "0ba3d9a4-8f39-4a3c-9d36-2c1b6f1e7a10"}, nil, func(st *catalog.InventoryState) (*catalog.InventoryChanges, error) {
		return &catalog.InventoryChanges{
			NewVMs: []catalog.VMContext{{ContextID: "ctx-evil-1", SourceID: st.Source.ID, AgentID: "agent-1", InstanceUUID: "5012abcd-1111-2222-3333-444455556666",
				VMName: forgedName, PowerState: "on\x1b[1m", CurrentStatus: api.VMDiscovered, CreatedAt: st.Now, UpdatedAt: st.Now}},
			NewDisks: []catalog.VMDisk{{VMContextID: "ctx-evil-1", DiskID: "disk-2000", DeviceKey: 2000, Datastore: "ds\r\nfake", VMDKPath: "[ds] a\x1b[Kb.vmdk",
				Status: api.DiskPresent, CreatedAt: st.Now, UpdatedAt: st.Now}},
			Events: []catalog.Event{{Type: api.EventVMAdded, OccurredAt: st.Now, VMContextID: "ctx-evil-1", VMName: forgedName, AgentID: "agent-1",
				Actor: "agent-1", Outcome: api.OutcomeOK, Details: map[string]string{"detail": "x\x1b[31my"}}},
		}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Old rows cannot forge output: every table escapes non-printable runes the way strconv does.
func TestTablesEscapeControlCharacters(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String()
	}
	hub("migrate", "up")
	seedForged(t, dataDir)
	for _, args := range [][]string{{"vms", "list"}, {"vms", "show", "ctx-evil-1"}, {"events", "list"}, {"agents", "list"}} {
		out := hub(args...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		for _, l := range lines {
			for _, r := range l {
				if api.UnsafeRune(r) && r != '\t' {
					t.Fatalf("%v printed the raw character %U:\n%q", args, r, out)
				}
			}
		}
		if args[0] == "vms" && !strings.Contains(out, `evil\x1b[2J\r\nctx-fake-1  pgtest1  protected\a\u202etxt.exe\u2066\u0085`) {
			t.Fatalf("%v: the name is not shown escaped:\n%s", args, out)
		}
	}
	if out := hub("vms", "list"); strings.Count(out, "\n") != 3 { // header, one row, total
		t.Fatalf("vms list printed %d lines, want 3:\n%s", strings.Count(out, "\n"), out)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"pgtest1":               "pgtest1",
		"Ünïcode VM / prod 数据":  "Ünïcode VM / prod 数据",
		"a\tb\x1b[0m\r\n":       `a\tb\x1b[0m\r\n`,
		"\u202eabc\u2069\u061c": `\u202eabc\u2069\u061c`,
		"bad\xffutf8":           `bad\xffutf8`,
		"c1\u0085\u009b":        `c1\u0085\u009b`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSourcesListAndMove(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	seedForged(t, dataDir)
	cat, err := catalog.Open(t.Context(), catalog.Options{SQLitePath: filepath.Join(dataDir, "catalog.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.CreateJoinToken(t.Context(), &catalog.JoinToken{ID: "jt-2", SecretHash: "h", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	err = cat.RedeemJoinToken(t.Context(), "jt-2", "h", &catalog.Agent{ID: "agent-2", Name: "a2", Status: api.AgentActive, CertSerial: "2", CertFingerprint: "f2", CertNotAfter: time.Now().Add(time.Hour)})
	_ = cat.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := hub("sources", "list")
	if err != nil || !strings.Contains(out, "vc1") || !strings.Contains(out, "agent-1") || !strings.Contains(out, "0ba3d9a4-8f39-4a3c-9d36-2c1b6f1e7a10") {
		t.Fatalf("sources list: %v\n%s", err, out)
	}
	if _, err := hub("sources", "move", "vc1", "--agent", "nobody"); err == nil {
		t.Fatal("moved a source to an unknown agent")
	}
	if out, err := hub("sources", "move", "0ba3d9a4-8f39-4a3c-9d36-2c1b6f1e7a10", "--agent", "agent-2"); err != nil || !strings.Contains(out, "agent-2") {
		t.Fatalf("sources move: %v\n%s", err, out)
	}
	out, err = hub("vms", "list", "--agent", "agent-2")
	if err != nil || !strings.Contains(out, "ctx-evil-1") {
		t.Fatalf("the source's vms did not move: %v\n%s", err, out)
	}
}

// A finished backup's line shows the VM name, notes and error of old rows escaped: they came
// from an agent.
func TestBackupSummaryEscapesControlCharacters(t *testing.T) {
	line := summary(api.Backup{ID: "job-1", VMName: forgedName, Status: api.JobFailed, Notes: "\r\x1b[1A", Error: "x\x1b]0;pwned\x07"})
	for _, r := range line {
		if api.UnsafeRune(r) {
			t.Fatalf("summary printed the raw character %U: %q", r, line)
		}
	}
	if !strings.Contains(line, `(\r\x1b[1A): x\x1b]0;pwned\a`) {
		t.Fatalf("notes and error not shown escaped: %q", line)
	}
}

// A command pointed at a data directory without a catalog, or at a catalog not migrated, says
// so and what to run, instead of an SQL error; it creates no catalog file.
func TestCommandsNeedAMigratedCatalog(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) error {
		return run(t.Context(), append(args, "--data-dir", dataDir), io.Discard, io.Discard, noEnv)
	}
	for _, args := range [][]string{{"vms", "list"}, {"apitoken", "create", "--name", "x", "--role", "admin"}, {"user", "list"}} {
		if err := hub(args...); err == nil || !strings.Contains(err.Error(), "no catalog at "+filepath.Join(dataDir, "")) {
			t.Fatalf("%v on an empty data directory: %v", args, err)
		}
	}
	if ents, _ := os.ReadDir(dataDir); len(ents) != 0 {
		t.Fatalf("a refused command left %d files in the data directory", len(ents))
	}
	if err := hub("migrate", "status"); err != nil {
		t.Fatal(err)
	}
	if err := hub("vms", "list"); err == nil || !strings.Contains(err.Error(), "migrate up") {
		t.Fatalf("vms list on a catalog not migrated: %v", err)
	}
	if err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	if err := hub("vms", "list"); err != nil {
		t.Fatalf("vms list once migrated: %v", err)
	}
}
