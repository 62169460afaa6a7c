package main

import (
	"bytes"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

func TestEventsList(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(t.Context(), catalog.Options{SQLitePath: filepath.Join(dataDir, "catalog.db")})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err = cat.RecordEvents(t.Context(), []catalog.Event{
		{Type: api.EventVMAdded, OccurredAt: at, VMContextID: "ctx-pgtest1-20260102-030405", VMName: "pgtest1", AgentID: "agent-1", Actor: "agent-1", Outcome: api.OutcomeOK},
		{Type: api.EventDiskResized, OccurredAt: at.Add(time.Hour), VMContextID: "ctx-pgtest1-20260102-030405", VMName: "pgtest1", AgentID: "agent-1", Actor: "agent-1", Outcome: api.OutcomeOK,
			Details: map[string]string{"disk_id": "disk-2000", "detail": "1 → 2 bytes"}},
		{Type: api.EventVMAdded, OccurredAt: at.Add(2 * time.Hour), VMContextID: "ctx-web-20260102-050405", VMName: "web", AgentID: "agent-1", Actor: "agent-1", Outcome: api.OutcomeOK},
	})
	_ = cat.Close()
	if err != nil {
		t.Fatal(err)
	}

	out, err := hub("events", "list", "--vm", "pgtest1", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var l api.EventList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if l.Page.Total != 2 || l.Events[0].Type != api.EventDiskResized || l.Events[1].Type != api.EventVMAdded || l.Events[0].VM != "pgtest1" {
		t.Fatalf("--vm pgtest1: %+v", l)
	}
	out, err = hub("events", "list", "--type", "vm_added", "--since", "2026-01-02T04:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "web") || strings.Contains(out, "pgtest1") || !strings.HasSuffix(out, "1 of 1 events\n") {
		t.Fatalf("--type vm_added --since: %s", out)
	}
	out, err = hub("events", "list")
	if err != nil || !strings.Contains(out, "detail=1 → 2 bytes disk_id=disk-2000") {
		t.Fatalf("table: %v\n%s", err, out)
	}
	if _, err := hub("events", "list", "--since", "yesterday"); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Fatalf("bad --since: %v", err)
	}
	if _, err := hub("events", "list", "--type", "nope"); err == nil || !strings.Contains(err.Error(), "type") {
		t.Fatalf("bad --type: %v", err)
	}
}
