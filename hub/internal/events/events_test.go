package events_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sendense/sendense/hub/internal/events"
	"github.com/sendense/sendense/shared/api"
)

func TestFilterValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		f     events.Filter
		field string // "" = valid
	}{
		{"zero", events.Filter{}, ""},
		{"every type", events.Filter{Type: api.EventAudit, VM: "pgtest1", Since: time.Now(), Limit: 10, Offset: 5}, ""},
		{"unknown type", events.Filter{Type: "vm_exploded"}, "type"},
		{"long vm", events.Filter{VM: string(make([]byte, 256))}, "vm"},
		{"negative limit", events.Filter{Limit: -1}, "limit"},
		{"negative offset", events.Filter{Offset: -1}, "offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.Validate()
			var fe *api.FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("valid filter refused: %v", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
				t.Fatalf("err %v, want a field error naming %s", err, tc.field)
			}
		})
	}
}

func TestRowRoundTrip(t *testing.T) {
	e := api.Event{ID: 0, Type: api.EventDiskMoved, VM: "pgtest1", VMContextID: "ctx-1", At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		AgentID: "agent-1", Actor: "agent-1", SourceAddress: "192.0.2.1", Outcome: api.OutcomeOK, Details: map[string]string{"disk_id": "disk-2000"}}
	row := events.Row(e)
	if diff := cmp.Diff(e, events.Info(&row)); diff != "" {
		t.Fatalf("round trip (-in +out):\n%s", diff)
	}
}
