package catalog_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"
)

func TestEventsRecordAndList(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
		c.SetClock(func() time.Time { return t0.Add(time.Hour) })
		in := []catalog.Event{
			{Type: api.EventVMAdded, OccurredAt: t0, VMContextID: "ctx-a-1", VMName: "a", AgentID: "agent-1", Actor: "agent-1", SourceAddress: "192.0.2.1", Outcome: api.OutcomeOK, Details: map[string]string{"source": "vc1"}},
			{Type: api.EventDiskAdded, OccurredAt: t0.Add(time.Minute), VMContextID: "ctx-a-1", VMName: "a", AgentID: "agent-1", Actor: "agent-1", Outcome: api.OutcomeOK, Details: map[string]string{"disk_id": "disk-2001"}},
			{Type: api.EventVMAdded, OccurredAt: t0.Add(time.Minute), VMContextID: "ctx-b-1", VMName: "b", AgentID: "agent-1", Actor: "agent-1", Outcome: api.OutcomeOK},
			{Type: api.EventAudit, Actor: "ops", SourceAddress: "2001:db8::1", Outcome: "201", Details: map[string]string{"method": "POST"}}, // now
		}
		if err := c.RecordEvents(t.Context(), in); err != nil {
			t.Fatal(err)
		}
		ids := func(f catalog.EventFilter) ([]int64, int) {
			t.Helper()
			evs, n, err := c.Events(t.Context(), f)
			if err != nil {
				t.Fatal(err)
			}
			var out []int64
			for _, e := range evs {
				out = append(out, e.ID)
			}
			return out, n
		}
		all, n := ids(catalog.EventFilter{})
		// Newest first; of two at one time, the later recorded first.
		if want := []int64{in[3].ID, in[2].ID, in[1].ID, in[0].ID}; n != 4 || !cmp.Equal(all, want) {
			t.Fatalf("all: %v (total %d), want %v", all, n, want)
		}
		for _, tc := range []struct {
			name  string
			f     catalog.EventFilter
			want  []int64
			total int
		}{
			{"vm by name", catalog.EventFilter{VM: "a"}, []int64{in[1].ID, in[0].ID}, 2},
			{"vm by context id", catalog.EventFilter{VM: "ctx-b-1"}, []int64{in[2].ID}, 1},
			{"type", catalog.EventFilter{Type: api.EventVMAdded}, []int64{in[2].ID, in[0].ID}, 2},
			{"vm and type", catalog.EventFilter{VM: "a", Type: api.EventVMAdded}, []int64{in[0].ID}, 1},
			{"since is inclusive", catalog.EventFilter{Since: t0.Add(time.Minute)}, []int64{in[3].ID, in[2].ID, in[1].ID}, 3},
			{"page", catalog.EventFilter{Limit: 2, Offset: 1}, []int64{in[2].ID, in[1].ID}, 4},
			{"nothing", catalog.EventFilter{VM: "c"}, nil, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, n := ids(tc.f)
				if !cmp.Equal(got, tc.want) || n != tc.total {
					t.Fatalf("%v (total %d), want %v (total %d)", got, n, tc.want, tc.total)
				}
			})
		}
		evs, _, err := c.Events(t.Context(), catalog.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if got := evs[3]; !cmp.Equal(got, in[0]) {
			t.Fatalf("read back %+v, wrote %+v", got, in[0])
		}
		if got := evs[0]; !got.OccurredAt.Equal(t0.Add(time.Hour)) || got.VMName != "" || got.AgentID != "" || got.Details["method"] != "POST" {
			t.Fatalf("audit event read back as %+v", got)
		}
		if !catalog.EventColumnIsNullForTest(t, c, evs[0].ID, "vm_context_id") || !catalog.EventColumnIsNullForTest(t, c, evs[1].ID, "details") {
			t.Fatal("absent values are not stored as NULL")
		}
	})
}

func TestInventoryEventsAreWrittenWithTheChanges(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		seedAgent(t, c, "agent-1")
		write(t, c, "agent-1", func(st *catalog.InventoryState) *catalog.InventoryChanges {
			return &catalog.InventoryChanges{
				NewVMs: []catalog.VMContext{newVM(st, ctxID, "uuid-1")},
				Events: []catalog.Event{{Type: api.EventVMAdded, OccurredAt: st.Now, VMContextID: ctxID, VMName: "pgtest1", Actor: "agent-1", Outcome: api.OutcomeOK}},
			}
		})
		evs, n, err := c.Events(t.Context(), catalog.EventFilter{VM: ctxID})
		if err != nil || n != 1 || evs[0].Type != api.EventVMAdded {
			t.Fatalf("events %+v %d %v", evs, n, err)
		}
		// A decision that fails records neither its rows nor its events: one transaction.
		err = c.ApplyInventory(t.Context(), "agent-1", api.Source{Name: "vc1"}, nil, func(st *catalog.InventoryState) (*catalog.InventoryChanges, error) {
			return &catalog.InventoryChanges{
				NewVMs: []catalog.VMContext{newVM(st, ctxID, "uuid-dup")}, // the context id exists: the insert fails
				Events: []catalog.Event{{Type: api.EventVMAdded, OccurredAt: st.Now, VMContextID: "ctx-other", Actor: "agent-1", Outcome: api.OutcomeOK}},
			}, nil
		})
		if err == nil {
			t.Fatal("inserting a duplicate context id succeeded")
		}
		if _, n, _ := c.Events(t.Context(), catalog.EventFilter{}); n != 1 {
			t.Fatalf("%d events after a failed push, want 1", n)
		}
	})
}
