package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/testenv"
)

// audits returns the audit events, oldest first, once there are want of them.
func (h *testHub) audits(admin string, want int) []api.Event {
	h.t.Helper()
	var l api.EventList
	testenv.WaitFor(h.t, 10*time.Second, "audit events", func() bool {
		l = h.events(admin, "?type=audit&limit=1000")
		return len(l.Events) >= want
	})
	if len(l.Events) != want {
		h.t.Fatalf("%d audit events, want %d: %+v", len(l.Events), want, l.Events)
	}
	for i, j := 0, len(l.Events)-1; i < j; i, j = i+1, j-1 {
		l.Events[i], l.Events[j] = l.Events[j], l.Events[i]
	}
	return l.Events
}

func TestOperatorRequestsAreAudited(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		admin, viewer, operator := h.apiToken(api.RoleAdmin), h.apiToken(api.RoleViewer), h.apiToken(api.RoleOperator)
		c := h.client(nil)
		_, cert := h.enrollAgent("a1")
		if code, _ := h.call(h.client(cert), http.MethodPut, api.PathAgentInventory, "", seedInventory(), nil); code != http.StatusOK {
			t.Fatal("push failed")
		}
		base := len(h.audits(admin, 1)) // the enrollment above
		if base != 1 {
			t.Fatalf("%d audit events before the operators act", base)
		}

		// Secrets that pass through requests and answers must never be recorded.
		var jt api.CreateJoinTokenResponse
		if code, e := h.call(c, http.MethodPost, api.PathJoinTokens, admin, api.CreateJoinTokenRequest{Name: "site-b", TTL: "1h"}, &jt); code != http.StatusCreated {
			t.Fatalf("create join token: %d %+v", code, e)
		}
		var at api.CreateAPITokenResponse
		if code, e := h.call(c, http.MethodPost, api.PathAPITokens, admin, api.CreateAPITokenRequest{Name: "ci", Role: api.RoleViewer}, &at); code != http.StatusCreated {
			t.Fatalf("create api token: %d %+v", code, e)
		}
		if code, _ := h.call(c, http.MethodDelete, api.Path(api.PathAPIToken, at.Info.ID), admin, nil, nil); code != http.StatusNoContent {
			t.Fatal("revoke api token failed")
		}
		p := api.Policy{Name: "pg", Enabled: true, VMs: []string{"pgtest1"}, Schedule: "0 2 * * *"}
		if code, _ := h.call(c, http.MethodPost, api.PathPolicies, operator, p, nil); code != http.StatusCreated {
			t.Fatal("create policy failed")
		}
		if code, _ := h.call(c, http.MethodPost, api.PathPolicies, viewer, p, nil); code != http.StatusForbidden {
			t.Fatal("a viewer created a policy")
		}
		if code, _ := h.call(c, http.MethodDelete, api.Path(api.PathPolicy, "pg"), "", nil, nil); code != http.StatusUnauthorized {
			t.Fatal("a policy was deleted without a token")
		}
		if code, _ := h.call(c, http.MethodDelete, api.Path(api.PathBackup, "bk-nope"), operator, nil, nil); code != http.StatusNotFound {
			t.Fatal("deleted a backup that does not exist")
		}
		// The client's claim about its address is not believed.
		req, _ := http.NewRequest(http.MethodDelete, h.URL+api.Path(api.PathPolicy, "pg"), nil)
		req.Header.Set("Authorization", "Bearer "+operator)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		resp, err := c.Do(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("delete policy: %v %v", resp, err)
		}
		resp.Body.Close()
		// Reads are not audited.
		h.events(viewer, "")
		h.vms(viewer)

		got := h.audits(admin, base+8)[base:]
		type row struct{ actor, method, route, outcome string }
		want := []row{
			{"test-admin", "POST", api.PathJoinTokens, "201"},
			{"test-admin", "POST", api.PathAPITokens, "201"},
			{"test-admin", "DELETE", "/api/v1/apitokens/:id", "204"},
			{"test-operator", "POST", api.PathPolicies, "201"},
			{"test-viewer", "POST", api.PathPolicies, "403"},
			{"", "DELETE", "/api/v1/policies/:name", "401"},
			{"test-operator", "DELETE", "/api/v1/backups/:id", "404"},
			{"test-operator", "DELETE", "/api/v1/policies/:name", "204"},
		}
		for i, w := range want {
			e := got[i]
			if (row{e.Actor, e.Details["method"], e.Details["route"], e.Outcome}) != w || e.Details["status"] != w.outcome || e.SourceAddress != "127.0.0.1" || e.At.IsZero() {
				t.Errorf("audit event %d: %+v, want %+v from 127.0.0.1", i, e, w)
			}
			if (w.actor == "") != (e.Details["api_token_id"] == "") {
				t.Errorf("audit event %d: api_token_id %q for actor %q", i, e.Details["api_token_id"], w.actor)
			}
		}
		if got[2].Details["path"] != api.Path(api.PathAPIToken, at.Info.ID) {
			t.Errorf("revocation does not name its token: %+v", got[2])
		}
		raw, _ := json.Marshal(got)
		for _, secret := range []string{jt.Token, at.Token, strings.TrimPrefix(at.Token, "sdt_"+at.Info.ID+"."), admin, operator} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Fatal("a secret was recorded in an audit event")
			}
		}
		h.assertNoSecret(jt.Token, at.Token)
	})
}
