package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"
)

// TestTwoHubsShareCA: a hub that ran alone (CA in its data directory) is given a hub key and
// moves its CA into the catalog; a second hub with an empty data directory, the same catalog and
// key, serves with the same CA; an agent enrolled through the first authenticates to the
// second; a hub on that catalog without the key refuses to start.
func TestTwoHubsShareCA(t *testing.T) {
	dsn := catalogtest.NewMySQLDatabase(t)
	keyFile := filepath.Join(t.TempDir(), "hub.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5e", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	caOf := func(dataDir string) []byte {
		b, err := os.ReadFile(filepath.Join(dataDir, "pki", "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// The single hub from before, without a key.
	_, dirA, _, stop := startHub(t, "--db", dsn)
	before := caOf(dirA)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	addrA, logsA, _ := startHubIn(t, dirA, "--db", dsn, "--hub-key-file", keyFile)
	if !bytes.Equal(caOf(dirA), before) || !strings.Contains(logsA.String(), "CA moved into the catalog") {
		t.Fatalf("the hub's CA was not moved into the catalog unchanged:\n%s", logsA.String())
	}
	if !strings.Contains(logsA.String(), "the CA's key is still in a file in plain") {
		t.Fatalf("the hub does not say that its CA key file is left to delete:\n%s", logsA.String())
	}
	addrB, dirB, _, _ := startHub(t, "--db", dsn, "--hub-key-file", keyFile)
	if !bytes.Equal(caOf(dirB), before) {
		t.Fatal("the second hub does not use the shared CA")
	}
	if _, err := os.Stat(filepath.Join(dirB, "pki", "ca.key")); err == nil {
		t.Fatal("the second hub wrote the CA key to its disk")
	}

	// Enroll through hub A, trusting only the CA.
	var out bytes.Buffer
	if err := run(t.Context(), []string{"token", "create", "--data-dir", dirA, "--db", dsn, "--hub-key-file", keyFile, "--name", "agent-1"}, &out, io.Discard, noEnv); err != nil {
		t.Fatalf("token create: %v", err)
	}
	tok, err := api.ParseJoinToken(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(before)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	var enrolled api.EnrollResponse
	code := postJSON(t, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, "https://"+addrA+api.PathEnroll,
		api.EnrollRequest{TokenID: tok.ID, TokenSecret: tok.Secret, Name: "agent-1", Hostname: "agent-1.example",
			CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}, &enrolled)
	if code != http.StatusCreated {
		t.Fatalf("enroll through hub A: %d", code)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(enrolled.Certificate), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	agent := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	// The agent, knowing only the CA it pinned on hub A, is served and accepted by hub B.
	var hb api.HeartbeatResponse
	if code := postJSON(t, agent, "https://"+addrB+api.PathAgentHeartbeat, api.HeartbeatRequest{Hostname: "agent-1.example", Version: "test"}, &hb); code != http.StatusOK || hb.AgentID != enrolled.AgentID {
		t.Fatalf("heartbeat to hub B: %d, agent %q want %q", code, hb.AgentID, enrolled.AgentID)
	}

	// Without the key, a hub on this catalog would make a CA of its own: refused.
	err = run(t.Context(), []string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", filepath.Join(t.TempDir(), "c"), "--db", dsn}, io.Discard, io.Discard, noEnv)
	if err == nil || !strings.Contains(err.Error(), "hub key") {
		t.Fatalf("hub without the key on a shared catalog: %v", err)
	}
}

func postJSON(t *testing.T, c *http.Client, url string, in, out any) int {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 300 {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
	} else {
		t.Logf("POST %s: %d %s", url, resp.StatusCode, body)
	}
	return resp.StatusCode
}
