package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
)

func (h *testHub) events(token, query string) api.EventList {
	h.t.Helper()
	var l api.EventList
	if code, e := h.call(h.client(nil), http.MethodGet, api.PathEvents+query, token, nil, &l); code != http.StatusOK {
		h.t.Fatalf("list events%s: %d %+v", query, code, e)
	}
	return l
}

func TestInventoryEventsAreServed(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		agentID, cert := h.enrollAgent("a1")
		viewer := h.apiToken(api.RoleViewer)
		if code, e := h.call(h.client(cert), http.MethodPut, api.PathAgentInventory, "", seedInventory(), nil); code != http.StatusOK {
			t.Fatalf("push: %d %+v", code, e)
		}

		// The fixed shape outside scripts read: {"events": [{"type", "vm", "at", ...}], "page": {...}}.
		var body map[string]json.RawMessage
		if err := json.Unmarshal([]byte(h.raw(http.MethodGet, api.PathEvents+"?type=vm_added", viewer)), &body); err != nil {
			t.Fatal(err)
		}
		var evs []map[string]any
		var page map[string]int
		if len(body) != 2 || json.Unmarshal(body["events"], &evs) != nil || json.Unmarshal(body["page"], &page) != nil {
			t.Fatalf("body %s", body)
		}
		if len(evs) != 1 || evs[0]["type"] != "vm_added" || evs[0]["vm"] != "pgtest1" {
			t.Fatalf("events %v", evs)
		}
		if at, ok := evs[0]["at"].(string); !ok {
			t.Fatalf("at %v", evs[0]["at"])
		} else if _, err := time.Parse(time.RFC3339, at); err != nil {
			t.Fatalf("at %q is not RFC 3339: %v", at, err)
		}
		if page["limit"] != 100 || page["offset"] != 0 || page["total"] != 1 {
			t.Fatalf("page %v", page)
		}

		ev := h.events(viewer, "?vm=pgtest1").Events[0]
		if ev.AgentID != agentID || ev.Actor != agentID || ev.SourceAddress != "127.0.0.1" || ev.Outcome != api.OutcomeOK || ev.Details["source"] != "vc1" {
			t.Fatalf("event %+v", ev)
		}
		past, future := url.QueryEscape(ev.At.Add(-time.Second).Format(time.RFC3339)), url.QueryEscape(ev.At.Add(time.Minute).Format(time.RFC3339))
		for q, want := range map[string][2]int{ // events on the page, total
			"?vm=pgtest1":                                 {1, 1},
			"?vm=" + ev.VMContextID:                       {1, 1},
			"?vm=pgtest2":                                 {0, 0},
			"?type=vm_gone":                               {0, 0},
			"?type=vm_added&vm=pgtest1":                   {1, 1},
			"?type=vm_added&since=" + past:                {1, 1},
			"?type=vm_added&since=" + future:              {0, 0},
			"?type=vm_added&since=2026-01-02T15:04:05.5Z": {1, 1},
			"?type=vm_added&limit=1&offset=1":             {0, 1},
			"?type=audit":                                 {1, 1}, // the enrollment
		} {
			if l := h.events(viewer, q); len(l.Events) != want[0] || l.Page.Total != want[1] {
				t.Errorf("%s: %d events of %d, want %d of %d", q, len(l.Events), l.Page.Total, want[0], want[1])
			}
		}

		for q, field := range map[string]string{
			"?since=yesterday":  "since",
			"?since=2026-01-02": "since",
			"?type=vm_exploded": "type",
			"?limit=5000":       "limit",
		} {
			code, e := h.call(h.client(nil), http.MethodGet, api.PathEvents+q, viewer, nil, nil)
			if code != http.StatusBadRequest || e.Field != field || e.Code != api.CodeInvalidField {
				t.Errorf("%s: %d %+v, want 400 naming %s", q, code, e, field)
			}
		}
		if code, _ := h.call(h.client(nil), http.MethodGet, api.PathEvents, "", nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("events without a token: %d", code)
		}
		if !slices.Contains(api.EventTypes, api.EventAudit) {
			t.Fatal("audit is not an event type")
		}
	})
}
