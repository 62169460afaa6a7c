package api_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sendense/sendense/shared/api"
)

func seedInventory() api.Inventory {
	return api.Inventory{
		Source: api.Source{Name: "vc1", URL: "https://vc.example/sdk", InstanceUUID: "0ba3d9a4-0000-4000-8000-0000000000aa"},
		VMs: []api.VM{{
			InstanceUUID: "5012aaaa-0000-4000-8000-000000000001", Name: "pgtest1", PowerState: "poweredOn", CBTEnabled: true,
			Disks: []api.Disk{
				{Key: 2000, DiskID: "disk-2000", CapacityBytes: 102_000_000_000, Backupable: true},
				{Key: 2001, DiskID: "disk-2001", CapacityBytes: 5_000_000_000, Backupable: true},
			},
		}},
	}
}

func (h *testHub) vms(token string) api.VMList {
	h.t.Helper()
	var l api.VMList
	if code, e := h.call(h.client(nil), http.MethodGet, api.PathVMs, token, nil, &l); code != http.StatusOK {
		h.t.Fatalf("list vms: %d %+v", code, e)
	}
	return l
}

func TestInventoryPushAndQuery(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		_, cert := h.enrollAgent("a1")
		viewer := h.apiToken(api.RoleViewer)
		inv := seedInventory()
		var res api.InventoryResult
		if code, e := h.call(h.client(cert), http.MethodPut, api.PathAgentInventory, "", inv, &res); code != http.StatusOK {
			t.Fatalf("push: %d %+v", code, e)
		}
		if res.VMs != 1 || res.Disks != 2 || len(res.Events) != 1 || res.Events[0].Kind != "vm_added" {
			t.Fatalf("result %+v", res)
		}
		l := h.vms(viewer)
		if l.Page.Total != 1 || l.VMs[0].VMName != "pgtest1" || l.VMs[0].CurrentStatus != "discovered" || !strings.HasPrefix(l.VMs[0].ContextID, "ctx-pgtest1-") {
			t.Fatalf("list %+v", l)
		}
		var vm api.VMContext
		if code, e := h.call(h.client(nil), http.MethodGet, api.PathVMs+"/pgtest1", viewer, nil, &vm); code != http.StatusOK {
			t.Fatalf("show by name: %d %+v", code, e)
		}
		if len(vm.Disks) != 2 || vm.Disks[0].DiskID != "disk-2000" || vm.Disks[0].CapacityBytes != 102_000_000_000 || vm.Disks[0].JobID != nil || vm.Disks[1].CapacityBytes != 5_000_000_000 {
			t.Fatalf("vm %+v", vm)
		}
		// job_id is explicitly null on the wire.
		raw := h.raw(http.MethodGet, api.PathVMs+"/"+vm.ContextID+"/disks", viewer)
		if !strings.Contains(raw, `"job_id":null`) {
			t.Fatalf("disks body does not show job_id null: %s", raw)
		}
		// Filters and pagination.
		if l := h.vmsQuery(viewer, "?status=gone"); l.Page.Total != 0 {
			t.Fatalf("status filter: %+v", l)
		}
		if code, e := h.call(h.client(nil), http.MethodGet, api.PathVMs+"?limit=0", viewer, nil, nil); code != http.StatusBadRequest || e.Field != "limit" {
			t.Fatalf("bad limit: %d %+v", code, e)
		}
		// The same push again is a no-op.
		if code, _ := h.call(h.client(cert), http.MethodPut, api.PathAgentInventory, "", inv, &res); code != http.StatusOK || !res.Unchanged {
			t.Fatalf("repeat push: %d %+v", code, res)
		}
		if code, _ := h.call(h.client(nil), http.MethodGet, api.PathVMs, "", nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("vms without a token: %d", code)
		}
	})
}

func (h *testHub) raw(method, path, token string) string {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := h.client(nil).Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return b.String()
}

func (h *testHub) vmsQuery(token, q string) api.VMList {
	h.t.Helper()
	var l api.VMList
	if code, e := h.call(h.client(nil), http.MethodGet, api.PathVMs+q, token, nil, &l); code != http.StatusOK {
		h.t.Fatalf("list vms%s: %d %+v", q, code, e)
	}
	return l
}

func TestInventoryRejectsBadInputAndChangesNothing(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		_, cert := h.enrollAgent("a1")
		viewer := h.apiToken(api.RoleViewer)
		good := seedInventory()
		if code, _ := h.call(h.client(cert), http.MethodPut, api.PathAgentInventory, "", good, nil); code != http.StatusOK {
			t.Fatal("seed push failed")
		}
		before := h.vmsQuery(viewer, "")
		for _, tc := range []struct {
			name, field string
			body        any
		}{
			{"negative capacity", "vms[0].disks[0].capacity_bytes", func() api.Inventory { i := seedInventory(); i.VMs[0].Disks[0].CapacityBytes = -1; return i }()},
			{"empty vm uuid", "vms[0].instance_uuid", func() api.Inventory { i := seedInventory(); i.VMs[0].InstanceUUID = ""; return i }()},
			{"path in vm uuid", "vms[0].instance_uuid", func() api.Inventory { i := seedInventory(); i.VMs[0].InstanceUUID = "../../x"; return i }()},
			{"bad disk key", "vms[0].disks[0].key", func() api.Inventory {
				i := seedInventory()
				i.VMs[0].Disks[0].Key, i.VMs[0].Disks[0].DiskID = -1, "disk--1"
				return i
			}()},
			{"bad datastore path", "vms[0].disks[0].backing_file", func() api.Inventory {
				i := seedInventory()
				i.VMs[0].Disks[0].BackingFile = "[ds] ../../etc/passwd"
				return i
			}()},
			{"long name", "vms[0].name", func() api.Inventory { i := seedInventory(); i.VMs[0].Name = strings.Repeat("n", 256); return i }()},
			{"terminal escape in name", "vms[0].name", func() api.Inventory { i := seedInventory(); i.VMs[0].Name = "x\x1b[2J\r\nfake"; return i }()},
			{"bidi control in folder", "vms[0].folder", func() api.Inventory { i := seedInventory(); i.VMs[0].Folder = "/DC0/vm/\u202eexe.txt"; return i }()},
			{"duplicate disk key", "vms[0].disks[1].key", func() api.Inventory {
				i := seedInventory()
				i.VMs[0].Disks[1].Key, i.VMs[0].Disks[1].DiskID = 2000, "disk-2000"
				return i
			}()},
			{"unknown field", "colour", map[string]any{"source": map[string]string{"name": "vc1"}, "vms": []map[string]any{{"instance_uuid": "x", "name": "y", "colour": "red"}}}},
			{"wrong type", "vms.disks.capacity_bytes", map[string]any{"source": map[string]string{"name": "vc1"}, "vms": []map[string]any{{"instance_uuid": "x", "name": "y", "disks": []map[string]any{{"capacity_bytes": "big"}}}}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, e := h.call(h.client(cert), http.MethodPut, api.PathAgentInventory, "", tc.body, nil)
				if code != http.StatusBadRequest || e.Field != tc.field {
					t.Fatalf("%d %+v, want 400 naming %s", code, e, tc.field)
				}
			})
		}
		// A body over the cap → 413.
		big := bytes.Repeat([]byte(" "), api.MaxInventoryBytes+1)
		req, _ := http.NewRequest(http.MethodPut, h.URL+api.PathAgentInventory, bytes.NewReader(big))
		resp, err := h.client(cert).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || e.Code != api.CodeTooLarge {
			t.Fatalf("oversized body: %d %+v", resp.StatusCode, e)
		}
		if diff := cmp.Diff(before, h.vmsQuery(viewer, "")); diff != "" {
			t.Fatalf("a rejected push changed the catalog:\n%s", diff)
		}
	})
}

// A source is the agent's that registered it: another agent can neither report on it (same
// vCenter instance UUID) nor take its VMs (same VM instance UUIDs under another source). Both are
// refused with 409, recorded as events, and change nothing.
func TestInventoryOwnership(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		agentA, certA := h.enrollAgent("a")
		agentB, certB := h.enrollAgent("b")
		viewer := h.apiToken(api.RoleViewer)
		push := func(cert *tls.Certificate, inv api.Inventory) (int, api.Error) {
			t.Helper()
			return h.call(h.client(cert), http.MethodPut, api.PathAgentInventory, "", inv, nil)
		}
		if code, e := push(certA, seedInventory()); code != http.StatusOK {
			t.Fatalf("push: %d %+v", code, e)
		}
		before := h.vmsQuery(viewer, "")
		// B claims A's vCenter: refused whether it reports A's VMs or none.
		empty := seedInventory()
		empty.VMs = nil
		for _, inv := range []api.Inventory{seedInventory(), empty} {
			code, e := push(certB, inv)
			if code != http.StatusConflict || e.Code != api.CodeConflict || !strings.Contains(e.Error, agentA) || !strings.Contains(e.Error, inv.Source.InstanceUUID) {
				t.Fatalf("b pushed a's source: %d %+v, want 409 naming agent %s and the source", code, e, agentA)
			}
		}
		// B reports A's VM under a vCenter of its own: refused too.
		other := seedInventory()
		other.Source.InstanceUUID = "0ba3d9a4-0000-4000-8000-0000000000bb"
		code, e := push(certB, other)
		if code != http.StatusConflict || !strings.Contains(e.Error, other.VMs[0].InstanceUUID) || !strings.Contains(e.Error, agentA) {
			t.Fatalf("b pushed a's vm: %d %+v, want 409 naming the vm and agent %s", code, e, agentA)
		}
		if diff := cmp.Diff(before, h.vmsQuery(viewer, "")); diff != "" {
			t.Fatalf("agent b changed the catalog:\n%s", diff)
		}
		if l := h.vmsQuery(viewer, "?name=pgtest1"); l.Page.Total != 1 {
			t.Fatalf("the name pgtest1 must stay unambiguous: %+v", l)
		}
		evs := h.events(viewer, "?type="+api.EventSourceConflict)
		if evs.Page.Total != 3 {
			t.Fatalf("want 3 source_conflict events, got %+v", evs)
		}
		for _, ev := range evs.Events {
			if ev.AgentID != agentB || ev.Details["owner_agent_id"] != agentA || ev.Outcome != api.OutcomeRefused {
				t.Fatalf("conflict event %+v", ev)
			}
		}
		// B's own vCenter with its own VMs is fine.
		mine := seedInventory()
		mine.Source.InstanceUUID = other.Source.InstanceUUID
		mine.VMs[0].InstanceUUID = "5012aaaa-0000-4000-8000-0000000000bb"
		if code, e := push(certB, mine); code != http.StatusOK {
			t.Fatalf("b's own source: %d %+v", code, e)
		}
		if l := h.vmsQuery(viewer, "?agent="+agentB); l.Page.Total != 1 {
			t.Fatalf("b's vms: %+v", l)
		}

		// An admin gives A's vCenter to B (an appliance replaced): from then on B speaks for it.
		var srcs api.SourceList
		if code, e := h.call(h.client(nil), http.MethodGet, api.PathSources, viewer, nil, &srcs); code != http.StatusOK || len(srcs.Sources) != 2 {
			t.Fatalf("GET sources: %d %+v %+v", code, e, srcs)
		}
		var srcA api.SourceInfo
		for _, src := range srcs.Sources {
			if src.AgentID == agentA {
				srcA = src
			}
		}
		if srcA.InstanceUUID != seedInventory().Source.InstanceUUID || srcA.VMs != 1 {
			t.Fatalf("a's source: %+v", srcA)
		}
		move := api.Path(api.PathSourceMove, srcA.InstanceUUID)
		for _, role := range []string{api.RoleViewer, api.RoleOperator} {
			code, e := h.call(h.client(nil), http.MethodPost, move, h.apiToken(role), api.MoveSourceRequest{AgentID: agentB}, nil)
			if code != http.StatusForbidden || !strings.Contains(e.Error, "admin role is needed") {
				t.Fatalf("%s moved a source: %d %+v", role, code, e)
			}
		}
		admin := h.apiToken(api.RoleAdmin)
		if code, e := h.call(h.client(nil), http.MethodPost, move, admin, api.MoveSourceRequest{}, nil); code != http.StatusBadRequest || e.Field != "agent_id" {
			t.Fatalf("move without agent_id: %d %+v", code, e)
		}
		if code, e := h.call(h.client(nil), http.MethodPost, api.Path(api.PathSourceMove, "vc-nothing"), admin, api.MoveSourceRequest{AgentID: agentB}, nil); code != http.StatusNotFound {
			t.Fatalf("move of an unknown source: %d %+v", code, e)
		}
		// B already reports a vCenter named vc1: two of one name under one agent are refused.
		if code, e := h.call(h.client(nil), http.MethodPost, move, admin, api.MoveSourceRequest{AgentID: agentB}, nil); code != http.StatusConflict || !strings.Contains(e.Error, "already has a source named vc1") {
			t.Fatalf("move onto a name clash: %d %+v", code, e)
		}
		agentC, certC := h.enrollAgent("c")
		var moved api.SourceInfo
		if code, e := h.call(h.client(nil), http.MethodPost, move, admin, api.MoveSourceRequest{AgentID: agentC}, &moved); code != http.StatusOK || moved.AgentID != agentC || moved.ID != srcA.ID {
			t.Fatalf("move: %d %+v %+v", code, e, moved)
		}
		if code, e := push(certA, seedInventory()); code != http.StatusConflict {
			t.Fatalf("a pushed the source it gave away: %d %+v", code, e)
		}
		if code, e := push(certC, seedInventory()); code != http.StatusOK {
			t.Fatalf("c pushed the source it was given: %d %+v", code, e)
		}
	})
}

// An inventory must say which vCenter it describes.
func TestInventoryRequiresSourceInstanceUUID(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		_, cert := h.enrollAgent("a")
		inv := seedInventory()
		inv.Source.InstanceUUID = ""
		if code, e := h.call(h.client(cert), http.MethodPut, api.PathAgentInventory, "", inv, nil); code != http.StatusBadRequest || e.Field != "source.instance_uuid" {
			t.Fatalf("%d %+v, want 400 naming source.instance_uuid", code, e)
		}
	})
}
