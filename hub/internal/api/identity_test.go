package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/pki"
	"github.com/sendense/sendense/shared/api"
)

func TestEnrollThenMutualTLS(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		tokStr, _, err := h.IDs.CreateJoinToken(t.Context(), "site-a", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := api.ParseJoinToken(tokStr)
		if tok.CAFingerprint != h.CA.Fingerprint() {
			t.Fatalf("token pins %s, CA is %s", tok.CAFingerprint, h.CA.Fingerprint())
		}
		key, csrPEM := csr(t)
		var resp api.EnrollResponse
		code, e := h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", api.EnrollRequest{TokenID: tok.ID, TokenSecret: tok.Secret, CSR: csrPEM, Name: "a1", Hostname: "appliance-1", Version: "v1"}, &resp)
		if code != http.StatusCreated {
			t.Fatalf("enroll: %d %+v", code, e)
		}
		cert := tlsCert(t, key, resp.Certificate)
		if cert.Leaf.Subject.CommonName != resp.AgentID {
			t.Fatalf("certificate CN %q, agent %q", cert.Leaf.Subject.CommonName, resp.AgentID)
		}
		if life := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore); life < 24*time.Hour || life > 25*time.Hour {
			t.Fatalf("certificate lifetime %s, want the configured 24h", life)
		}
		a, err := h.Cat.AgentByID(t.Context(), resp.AgentID)
		if err != nil {
			t.Fatal(err)
		}
		if a.Name != "a1" || a.Hostname != "appliance-1" || a.Version != "v1" || a.Status != "active" || a.CertSerial != pki.SerialHex(cert.Leaf) || a.CertFingerprint != pki.Fingerprint(cert.Leaf) {
			t.Fatalf("agent record %+v", a)
		}

		var hb api.HeartbeatResponse
		if code, e := h.call(h.client(cert), http.MethodPost, api.PathAgentHeartbeat, "", api.HeartbeatRequest{Hostname: "appliance-1", Version: "v2"}, &hb); code != http.StatusOK {
			t.Fatalf("heartbeat over mTLS: %d %+v", code, e)
		}
		if hb.AgentID != resp.AgentID {
			t.Fatalf("heartbeat answered for %q", hb.AgentID)
		}
		if a, _ := h.Cat.AgentByID(t.Context(), resp.AgentID); a.Version != "v2" {
			t.Fatalf("heartbeat did not record the version: %+v", a)
		}
		if got := metricValue(t, h.Reg, "sendense_hub_enrollments_total", "result", "success"); got != 1 {
			t.Fatalf("enrollments{success} = %v", got)
		}
		h.assertNoSecret(tok.Secret)
	})
}

func TestAgentRoutesRefuseWithoutValidCertificate(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		// No client certificate → 401.
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathAgentHeartbeat, "", api.HeartbeatRequest{}, nil); code != http.StatusUnauthorized || e.Code != api.CodeUnauthenticated {
			t.Fatalf("no certificate: %d %+v, want 401", code, e)
		}
		// An operator token does not open agent routes.
		admin := h.apiToken(api.RoleAdmin)
		if code, _ := h.call(h.client(nil), http.MethodPost, api.PathAgentHeartbeat, admin, api.HeartbeatRequest{}, nil); code != http.StatusUnauthorized {
			t.Fatalf("api token on an agent route: %d, want 401", code)
		}

		// A certificate from another CA → the handshake is refused.
		other, err := pki.LoadOrCreate(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, foreignPEM, err := other.IssueClientCert(&key.PublicKey, "agent-foreign", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.client(tlsCert(t, key, string(foreignPEM))).Post(h.URL+api.PathAgentHeartbeat, "application/json", strings.NewReader("{}")); err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}

		// An expired certificate from our CA → refused at the handshake.
		agentID, _ := h.enrollAgent("expired")
		_, expiredPEM, err := h.CA.IssueClientCert(&key.PublicKey, agentID, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.client(tlsCert(t, key, string(expiredPEM))).Post(h.URL+api.PathAgentHeartbeat, "application/json", strings.NewReader("{}")); err == nil {
			t.Fatal("an expired certificate was accepted")
		}

		// A valid certificate from our CA naming no enrolled agent → 401.
		_, strayPEM, _ := h.CA.IssueClientCert(&key.PublicKey, "agent-nobody", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		if code, _ := h.call(h.client(tlsCert(t, key, string(strayPEM))), http.MethodPost, api.PathAgentHeartbeat, "", api.HeartbeatRequest{}, nil); code != http.StatusUnauthorized {
			t.Fatalf("unknown agent: %d, want 401", code)
		}
		if got := metricValue(t, h.Reg, "sendense_hub_auth_failures_total", "reason", "no_certificate"); got < 2 {
			t.Fatalf("auth_failures{no_certificate} = %v, want ≥ 2", got)
		}
	})
}

func TestRevokedAgentGets403OnNextRequest(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		agentID, cert := h.enrollAgent("a1")
		c := h.client(cert) // one client: its connection stays open across the revocation
		if code, _ := h.call(c, http.MethodPost, api.PathAgentHeartbeat, "", api.HeartbeatRequest{}, nil); code != http.StatusOK {
			t.Fatalf("before revocation: %d", code)
		}
		admin := h.apiToken(api.RoleAdmin)
		if code, e := h.call(h.client(nil), http.MethodPost, "/api/v1/agents/"+agentID+"/revoke", admin, nil, nil); code != http.StatusOK {
			t.Fatalf("revoke: %d %+v", code, e)
		}
		if code, e := h.call(c, http.MethodPost, api.PathAgentHeartbeat, "", api.HeartbeatRequest{}, nil); code != http.StatusForbidden {
			t.Fatalf("after revocation: %d %+v, want 403", code, e)
		}
		if code, _ := h.call(h.client(nil), http.MethodPost, "/api/v1/agents/"+agentID+"/revoke", admin, nil, nil); code != http.StatusConflict {
			t.Fatalf("second revocation: %d, want 409", code)
		}
	})
}

func TestJoinTokenSingleUseAndExpiry(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		tokStr, _, _ := h.IDs.CreateJoinToken(t.Context(), "", time.Hour)
		tok, _ := api.ParseJoinToken(tokStr)
		_, csr1 := csr(t)
		req := api.EnrollRequest{TokenID: tok.ID, TokenSecret: tok.Secret, CSR: csr1, Name: "first"}
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", req, nil); code != http.StatusCreated {
			t.Fatalf("first use: %d %+v", code, e)
		}
		agentsBefore, _ := h.Cat.Agents(t.Context())
		req.Name = "second"
		code, e := h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", req, nil)
		if code != http.StatusForbidden || !strings.Contains(e.Error, "already been used") {
			t.Fatalf("reuse: %d %+v, want 403 naming the reuse", code, e)
		}
		agentsAfter, _ := h.Cat.Agents(t.Context())
		if len(agentsAfter) != len(agentsBefore) {
			t.Fatalf("a refused enrollment created an agent: %d → %d", len(agentsBefore), len(agentsAfter))
		}

		// Wrong secret → 401 without detail.
		tok2Str, _, _ := h.IDs.CreateJoinToken(t.Context(), "", time.Hour)
		tok2, _ := api.ParseJoinToken(tok2Str)
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", api.EnrollRequest{TokenID: tok2.ID, TokenSecret: "guess", CSR: csr1}, nil); code != http.StatusUnauthorized {
			t.Fatalf("wrong secret: %d %+v, want 401", code, e)
		}

		// Expired: move the clock past the token's TTL.
		h.Clock.Add(2 * time.Hour)
		code, e = h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", api.EnrollRequest{TokenID: tok2.ID, TokenSecret: tok2.Secret, CSR: csr1}, nil)
		if code != http.StatusForbidden || !strings.Contains(e.Error, "expired") {
			t.Fatalf("expired token: %d %+v, want 403 naming the expiry", code, e)
		}

		// Revoked.
		tok3Str, _, _ := h.IDs.CreateJoinToken(t.Context(), "", time.Hour)
		tok3, _ := api.ParseJoinToken(tok3Str)
		if err := h.IDs.RevokeJoinToken(t.Context(), tok3.ID); err != nil {
			t.Fatal(err)
		}
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", api.EnrollRequest{TokenID: tok3.ID, TokenSecret: tok3.Secret, CSR: csr1}, nil); code != http.StatusForbidden {
			t.Fatalf("revoked token: %d %+v, want 403", code, e)
		}

		// A bad CSR is refused before the token is spent.
		tok4Str, _, _ := h.IDs.CreateJoinToken(t.Context(), "", time.Hour)
		tok4, _ := api.ParseJoinToken(tok4Str)
		if code, _ := h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", api.EnrollRequest{TokenID: tok4.ID, TokenSecret: tok4.Secret, CSR: "garbage"}, nil); code != http.StatusBadRequest {
			t.Fatalf("bad CSR: %d, want 400", code)
		}
		if code, e := h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", api.EnrollRequest{TokenID: tok4.ID, TokenSecret: tok4.Secret, CSR: csr1}, nil); code != http.StatusCreated {
			t.Fatalf("token unusable after a refused CSR: %d %+v", code, e)
		}
		h.assertNoSecret(tok.Secret, tok2.Secret, tok3.Secret, tok4.Secret)
	})
}

func TestConcurrentRedemptionsMakeOneAgent(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		tokStr, _, _ := h.IDs.CreateJoinToken(t.Context(), "race", time.Hour)
		tok, _ := api.ParseJoinToken(tokStr)
		const n = 12
		codes := make([]int, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, csrPEM := csr(t)
				<-start
				codes[i], _ = h.call(h.client(nil), http.MethodPost, api.PathEnroll, "", api.EnrollRequest{TokenID: tok.ID, TokenSecret: tok.Secret, CSR: csrPEM}, nil)
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, c := range codes {
			switch c {
			case http.StatusCreated:
				ok++
			case http.StatusForbidden:
			default:
				t.Errorf("unexpected status %d", c)
			}
		}
		agents, _ := h.Cat.Agents(t.Context())
		if ok != 1 || len(agents) != 1 {
			t.Fatalf("%d redemptions succeeded and %d agents exist; want exactly one of each", ok, len(agents))
		}
	})
}

func TestRenewKeepsOnlyTheLatestTwoCertificates(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		agentID, first := h.enrollAgent("a1")
		renew := func(with *tls.Certificate) *tls.Certificate {
			t.Helper()
			key, csrPEM := csr(t)
			var resp api.RenewResponse
			if code, e := h.call(h.client(with), http.MethodPost, api.PathAgentRenew, "", api.RenewRequest{CSR: csrPEM}, &resp); code != http.StatusOK {
				t.Fatalf("renew: %d %+v", code, e)
			}
			return tlsCert(t, key, resp.Certificate)
		}
		heartbeat := func(c *tls.Certificate) int {
			code, _ := h.call(h.client(c), http.MethodPost, api.PathAgentHeartbeat, "", api.HeartbeatRequest{}, nil)
			return code
		}
		second := renew(first)
		a, _ := h.Cat.AgentByID(t.Context(), agentID)
		if a.CertSerial != pki.SerialHex(second.Leaf) || a.PrevCertSerial != pki.SerialHex(first.Leaf) {
			t.Fatalf("after renewal: serial %s prev %s", a.CertSerial, a.PrevCertSerial)
		}
		// Connections opened before the renewal still present the first certificate: it stays
		// valid until the next renewal, also after the new one was used.
		if heartbeat(second) != http.StatusOK || heartbeat(first) != http.StatusOK {
			t.Fatal("current and previous certificates must both be accepted")
		}
		third := renew(second)
		if heartbeat(third) != http.StatusOK || heartbeat(second) != http.StatusOK {
			t.Fatal("current and previous certificates must both be accepted")
		}
		if code := heartbeat(first); code != http.StatusForbidden {
			t.Fatalf("certificate two renewals old: %d, want 403", code)
		}
	})
}

func TestOperatorRoles(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		viewer, operator, admin := h.apiToken(api.RoleViewer), h.apiToken(api.RoleOperator), h.apiToken(api.RoleAdmin)
		c := h.client(nil)
		for _, tc := range []struct {
			name, method, path, token string
			body                      any
			want                      int
		}{
			{"no token", http.MethodGet, api.PathAgents, "", nil, http.StatusUnauthorized},
			{"garbage token", http.MethodGet, api.PathAgents, "sdt_nope.nope", nil, http.StatusUnauthorized},
			{"viewer lists agents", http.MethodGet, api.PathAgents, viewer, nil, http.StatusOK},
			{"viewer cannot create join tokens", http.MethodPost, api.PathJoinTokens, viewer, api.CreateJoinTokenRequest{}, http.StatusForbidden},
			{"operator cannot create join tokens", http.MethodPost, api.PathJoinTokens, operator, api.CreateJoinTokenRequest{}, http.StatusForbidden},
			{"admin creates join tokens", http.MethodPost, api.PathJoinTokens, admin, api.CreateJoinTokenRequest{TTL: "10m"}, http.StatusCreated},
			{"bad ttl names the field", http.MethodPost, api.PathJoinTokens, admin, api.CreateJoinTokenRequest{TTL: "soon"}, http.StatusBadRequest},
			{"unknown field", http.MethodPost, api.PathAPITokens, admin, map[string]string{"nmae": "x"}, http.StatusBadRequest},
			{"bad role", http.MethodPost, api.PathAPITokens, admin, api.CreateAPITokenRequest{Name: "x", Role: "root"}, http.StatusBadRequest},
			{"viewer cannot revoke agents", http.MethodPost, "/api/v1/agents/agent-x/revoke", viewer, nil, http.StatusForbidden},
			{"unknown agent", http.MethodGet, "/api/v1/agents/agent-x", viewer, nil, http.StatusNotFound},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if code, e := h.call(c, tc.method, tc.path, tc.token, tc.body, nil); code != tc.want {
					t.Fatalf("%d %+v, want %d", code, e, tc.want)
				}
			})
		}
		// An agent certificate does not open operator routes.
		_, cert := h.enrollAgent("a1")
		if code, _ := h.call(h.client(cert), http.MethodGet, api.PathAgents, "", nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("agent certificate on an operator route: %d, want 401", code)
		}
		// A revoked token stops working at once.
		info, _ := h.IDs.APITokens(context.Background())
		var viewerID string
		for _, i := range info {
			if i.Role == api.RoleViewer {
				viewerID = i.ID
			}
		}
		if code, _ := h.call(c, http.MethodDelete, "/api/v1/apitokens/"+viewerID, admin, nil, nil); code != http.StatusNoContent {
			t.Fatalf("revoke api token: %d", code)
		}
		if code, _ := h.call(c, http.MethodGet, api.PathAgents, viewer, nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("revoked token: %d, want 401", code)
		}
		h.assertNoSecret(strings.SplitN(viewer, ".", 2)[1], strings.SplitN(admin, ".", 2)[1])
	})
}

func TestTLS12Refused(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		c := h.client(nil)
		c.Transport.(*http.Transport).TLSClientConfig.MinVersion = tls.VersionTLS12
		c.Transport.(*http.Transport).TLSClientConfig.MaxVersion = tls.VersionTLS12
		if _, err := c.Get(h.URL + api.PathHealth); err == nil {
			t.Fatal("a TLS 1.2 client was served")
		}
	})
}
