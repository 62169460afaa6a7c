package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/api"
)

func TestPolicyAPI(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		inv := twoDiskInventory(testChunk, testChunk)
		inv.VMs = append(inv.VMs, api.VM{InstanceUUID: "50120000-0000-4000-8000-00000000eb01", Name: "web-1", Disks: []api.Disk{{Key: 2000, DiskID: "disk-2000", CapacityBytes: testChunk, Backupable: true}}})
		a.push(inv)
		viewer, operator := h.apiToken(api.RoleViewer), h.apiToken(api.RoleOperator)
		c := h.client(nil)
		var un api.VMList
		if code, _ := h.call(c, http.MethodGet, api.PathVMs+"?protected=false", viewer, nil, &un); code != http.StatusOK || un.Page.Total != 2 {
			t.Fatalf("unprotected before any policy: %d %+v", code, un.Page)
		}
		p := api.Policy{Name: "pg", Enabled: true, VMs: []string{"pgtest1"}, Schedule: "0 2 * * *", Timezone: "Europe/Berlin", Retention: api.Retention{KeepDaily: 7, KeepWeekly: 4}}
		if code, _ := h.call(c, http.MethodPost, api.PathPolicies, viewer, p, nil); code != http.StatusForbidden {
			t.Fatalf("viewer created a policy: %d", code)
		}
		var got api.Policy
		if code, e := h.call(c, http.MethodPost, api.PathPolicies, operator, p, &got); code != http.StatusCreated {
			t.Fatalf("create: %d %+v", code, e)
		}
		if got.Repository != "default" || got.NextRunAt.IsZero() || got.ID == "" {
			t.Fatalf("created %+v", got)
		}
		if code, _ := h.call(c, http.MethodPost, api.PathPolicies, operator, p, nil); code != http.StatusConflict {
			t.Fatalf("duplicate name: %d", code)
		}
		bad := p
		bad.Name, bad.Schedule = "bad", "61 * * * *"
		if code, e := h.call(c, http.MethodPost, api.PathPolicies, operator, bad, nil); code != http.StatusBadRequest || e.Field != "schedule" {
			t.Fatalf("bad schedule: %d %+v", code, e)
		}
		h.call(c, http.MethodGet, api.PathVMs+"?protected=false", viewer, nil, &un)
		if un.Page.Total != 1 || un.VMs[0].VMName != "web-1" {
			t.Fatalf("unprotected with a policy: %+v", un)
		}
		p.VMs, p.VMGlob = nil, "*"
		if code, e := h.call(c, http.MethodPut, api.PathPolicies+"/pg", operator, p, &got); code != http.StatusOK || got.VMGlob != "*" {
			t.Fatalf("update: %d %+v", code, e)
		}
		var list struct{ Policies []api.Policy }
		if code, _ := h.call(c, http.MethodGet, api.PathPolicies, viewer, nil, &list); code != http.StatusOK || len(list.Policies) != 1 {
			t.Fatalf("list: %d %+v", code, list)
		}
		if code, _ := h.call(c, http.MethodDelete, api.PathPolicies+"/pg", operator, nil, nil); code != http.StatusNoContent {
			t.Fatalf("delete: %d", code)
		}
		if code, _ := h.call(c, http.MethodGet, api.PathPolicies+"/pg", viewer, nil, nil); code != http.StatusNotFound {
			t.Fatalf("deleted policy: %d", code)
		}
	})
}

func TestPruneAPI(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		a := h.newAgent("a1")
		viewer, operator := h.apiToken(api.RoleViewer), h.apiToken(api.RoleOperator)
		c := h.client(nil)
		older := h.backupImage(a, operator, randomImage(t, 2*testChunk))
		h.Clock.Add(time.Hour)
		newer := h.backupImage(a, operator, randomImage(t, 2*testChunk))
		p := api.Policy{Name: "pg", Enabled: true, VMs: []string{"pgtest1"}, Schedule: "@daily", Retention: api.Retention{KeepLast: 1}}
		if code, e := h.call(c, http.MethodPost, api.PathPolicies, operator, p, nil); code != http.StatusCreated {
			t.Fatalf("create: %d %+v", code, e)
		}
		if code, e := h.call(c, http.MethodPost, api.PathPrune, viewer, api.PruneRequest{}, nil); code != http.StatusForbidden || !strings.Contains(e.Error, "operator role is needed") {
			t.Fatalf("viewer pruned: %d %+v", code, e)
		}
		if code, e := h.call(c, http.MethodPost, api.PathPrune, operator, api.PruneRequest{Policy: "nope"}, nil); code != http.StatusNotFound {
			t.Fatalf("prune of an unknown policy: %d %+v", code, e)
		}
		backups := func() int {
			var l api.BackupList
			if code, e := h.call(c, http.MethodGet, api.PathBackups, viewer, nil, &l); code != http.StatusOK {
				t.Fatalf("list: %d %+v", code, e)
			}
			return l.Page.Total
		}
		decided := func(r api.PruneResult) map[string]bool {
			out := map[string]bool{}
			for _, d := range r.Decisions {
				if len(d.Reasons) == 0 && d.Keep {
					t.Fatalf("kept without a reason: %+v", d)
				}
				out[d.BackupID] = d.Keep
			}
			return out
		}
		var dry api.PruneResult
		if code, e := h.call(c, http.MethodPost, api.PathPrune, operator, api.PruneRequest{VM: "pgtest1", DryRun: true}, &dry); code != http.StatusOK {
			t.Fatalf("dry run: %d %+v", code, e)
		}
		if d := decided(dry); dry.Removed != 0 || len(d) != 2 || !d[newer] || d[older] || backups() != 2 {
			t.Fatalf("dry run: %+v, %d backups", dry, backups())
		}
		var res api.PruneResult
		if code, e := h.call(c, http.MethodPost, api.PathPrune, operator, api.PruneRequest{Policy: "pg"}, &res); code != http.StatusOK {
			t.Fatalf("prune: %d %+v", code, e)
		}
		if d := decided(res); res.Removed != 1 || len(res.Errors) != 0 || !d[newer] || d[older] || backups() != 1 {
			t.Fatalf("prune: %+v, %d backups", res, backups())
		}
		if code, _ := h.call(c, http.MethodGet, api.Path(api.PathBackup, older), viewer, nil, nil); code != http.StatusNotFound {
			t.Fatalf("the pruned backup is still there: %d", code)
		}
	})
}
