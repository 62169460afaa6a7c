package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sendense/sendense/agent/internal/daemon"
	"github.com/sendense/sendense/agent/internal/hubclient"
	"github.com/sendense/sendense/agent/internal/hubtest"
	"github.com/sendense/sendense/agent/internal/identity"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

func TestMain(m *testing.M) { os.Exit(hubtest.Main(m)) }

func noEnv(string) string { return "" }

// agentCLI runs one sendense-agent command in-process.
func agentCLI(t *testing.T, logs io.Writer, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(t.Context(), append(args, "--metrics-listen", ""), &out, logs, noEnv)
	return out.String(), err
}

type tokenInfo struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func tokenStatus(t *testing.T, hub *hubtest.Hub, id string) string {
	t.Helper()
	var ts []tokenInfo
	if err := json.Unmarshal([]byte(hub.CLI("token", "list", "--json")), &ts); err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		if tk.ID == id {
			return tk.Status
		}
	}
	t.Fatalf("token %s not listed", id)
	return ""
}

func TestEnrollStatusRenewRevoke(t *testing.T) {
	hub := hubtest.Start(t)
	logs := &testenv.LogBuffer{}
	state := filepath.Join(t.TempDir(), "state")
	tokStr := hub.JoinToken()
	tok, err := api.ParseJoinToken(tokStr)
	if err != nil {
		t.Fatal(err)
	}

	// The token from a file, as the documentation says: out of ps and shell history.
	tokFile := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(tokFile, []byte(tokStr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := agentCLI(t, logs, "enroll", "--token-file", tokFile, "--token", tokStr, "--state-dir", state); err == nil || !strings.Contains(err.Error(), "once") {
		t.Fatalf("enroll with both --token and --token-file: %v", err)
	}
	out, err := agentCLI(t, logs, "enroll", "--token-file", tokFile, "--state-dir", state, "--name", "appliance-1")
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, logs)
	}
	if !strings.Contains(out, "enrolled as agent-") {
		t.Fatalf("enroll printed %q", out)
	}
	fi, err := os.Stat(filepath.Join(state, "agent.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key pair file: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	if got := tokenStatus(t, hub, tok.ID); got != "redeemed" {
		t.Fatalf("token status %q after enrollment", got)
	}

	// A second enrollment into the same state dir is refused before any token is spent.
	tok2Str := hub.JoinToken()
	tok2, _ := api.ParseJoinToken(tok2Str)
	if _, err := agentCLI(t, logs, "enroll", "--token", tok2Str, "--state-dir", state); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("re-enrollment without --force: %v", err)
	}
	if got := tokenStatus(t, hub, tok2.ID); got != "active" {
		t.Fatalf("a refused re-enrollment spent the token: %q", got)
	}

	out, err = agentCLI(t, logs, "status", "--state-dir", state)
	if err != nil || !strings.Contains(out, "hub answers:  yes") {
		t.Fatalf("status: %v\n%s", err, out)
	}

	// Renewal swaps the certificate inside a running agent.
	id, err := identity.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logs, nil))
	hc, err := hubclient.New(id.HubURL(), id.TLSConfig(), log, hubclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	oldSerial := id.Certificate().Leaf.SerialNumber.String()
	ctx, cancel := context.WithCancel(t.Context())
	renewed := make(chan error, 1)
	var calls atomic.Int32
	future := func() time.Time { // the first certificate is due at once, the renewed one is not
		if calls.Add(1) == 1 {
			return time.Now().Add(365 * 24 * time.Hour)
		}
		return time.Now()
	}
	go func() { renewed <- daemon.Renewal(ctx, id, hc, future, log) }()
	testenv.WaitFor(t, 30*time.Second, "the certificate to be renewed", func() bool {
		return id.Certificate().Leaf.SerialNumber.String() != oldSerial
	})
	cancel()
	if err := <-renewed; err != nil {
		t.Fatal(err)
	}
	if _, err := hc.Heartbeat(t.Context(), api.HeartbeatRequest{Hostname: "h", Version: "v"}); err != nil {
		t.Fatalf("heartbeat with the renewed certificate: %v", err)
	}
	var shown api.Agent
	if err := json.Unmarshal([]byte(hub.CLI("agents", "show", id.AgentID())), &shown); err != nil {
		t.Fatal(err)
	}
	if want := id.Certificate().Leaf.SerialNumber.Text(16); shown.CertSerial != want {
		t.Fatalf("hub records serial %s, agent uses %s", shown.CertSerial, want)
	}
	reloaded, err := identity.Load(state)
	if err != nil || reloaded.Certificate().Leaf.SerialNumber.String() == oldSerial {
		t.Fatalf("renewed certificate not persisted: %v", err)
	}

	// Revocation: the agent is refused on its next request.
	hub.CLI("agents", "revoke", id.AgentID())
	out, err = agentCLI(t, logs, "status", "--state-dir", state)
	if err == nil || !strings.Contains(out, "403") {
		t.Fatalf("status after revocation: %v\n%s", err, out)
	}

	for _, secret := range []string{tok.Secret, tok2.Secret} {
		if strings.Contains(logs.String(), secret) || strings.Contains(hub.Logs(), secret) {
			t.Fatal("a join token secret appears in the agent or hub logs")
		}
	}
}

func TestEnrollRefusesWrongPin(t *testing.T) {
	hub := hubtest.Start(t)
	tok, err := api.ParseJoinToken(hub.JoinToken())
	if err != nil {
		t.Fatal(err)
	}
	tok.CAFingerprint = strings.Repeat("ab", 32) // an attacker's hub, or a copy-paste mix-up
	state := filepath.Join(t.TempDir(), "state")
	logs := &testenv.LogBuffer{}
	_, err = agentCLI(t, logs, "enroll", "--token", tok.String(), "--state-dir", state)
	if err == nil || !errors.Is(err, hubclient.ErrPinMismatch) && !strings.Contains(err.Error(), "pinned CA") {
		t.Fatalf("enroll against a hub with another CA: %v", err)
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Fatalf("a refused enrollment wrote %d files", len(entries))
	}
	if got := tokenStatus(t, hub, tok.ID); got != "active" {
		t.Fatalf("the token was spent although the hub was not trusted: %q", got)
	}
	if strings.Contains(logs.String(), tok.Secret) {
		t.Fatal("the token secret appears in the agent logs")
	}
}

func TestRunWithoutIdentity(t *testing.T) {
	_, err := agentCLI(t, io.Discard, "run", "--state-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "sendense-agent enroll") {
		t.Fatalf("run without identity: %v", err)
	}
}

// readToken takes the first line of its file or of standard input, trimmed; nothing is an error.
func TestReadToken(t *testing.T) {
	if tok, err := readToken(strings.NewReader("  SDJ1.abc \nsecond line\n"), "-"); err != nil || tok != "SDJ1.abc" {
		t.Fatalf("from standard input: %q, %v", tok, err)
	}
	if _, err := readToken(strings.NewReader("\n"), "-"); err == nil || !strings.Contains(err.Error(), "standard input") {
		t.Fatalf("empty standard input: %v", err)
	}
	if _, err := readToken(nil, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing token file was accepted")
	}
}
