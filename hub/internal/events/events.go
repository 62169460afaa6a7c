// Package events keeps the hub's record of what happened: the inventory changes agents report,
// the requests operators make, and the damage found in repositories. It stores events in the catalog and answers questions about
// them, newest first.
package events

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/api"
)

// eventCatalog is what this package needs from the catalog.
type eventCatalog interface {
	RecordEvents(ctx context.Context, evs []catalog.Event) error
	Events(ctx context.Context, f catalog.EventFilter) ([]catalog.Event, int, error)
}

// Service records and lists events.
type Service struct {
	cat eventCatalog
	log *slog.Logger
}

// New returns the service.
func New(cat eventCatalog, log *slog.Logger) *Service {
	return &Service{cat: cat, log: log}
}

// Filter selects events. The zero Filter selects every event.
type Filter struct {
	// VM is a VM name or context id.
	VM string
	// Type is one of api.EventTypes.
	Type string
	// Since selects events at or after it.
	Since time.Time
	// Limit caps the answer (0: no cap); Offset skips the newest events first.
	Limit, Offset int
}

// Validate checks the filter; each error is an *api.FieldError naming the field.
func (f Filter) Validate() error {
	switch {
	case f.Type != "" && !slices.Contains(api.EventTypes, f.Type):
		return &api.FieldError{Field: "type", Msg: fmt.Sprintf("unknown event type %q", f.Type)}
	case len(f.VM) > 255:
		return &api.FieldError{Field: "vm", Msg: "longer than 255 characters"}
	case f.Limit < 0:
		return &api.FieldError{Field: "limit", Msg: "must not be negative"}
	case f.Offset < 0:
		return &api.FieldError{Field: "offset", Msg: "must not be negative"}
	}
	return nil
}

// List returns the events matching f, newest first.
func (s *Service) List(ctx context.Context, f Filter) (api.EventList, error) {
	if err := f.Validate(); err != nil {
		return api.EventList{}, err
	}
	rows, total, err := s.cat.Events(ctx, catalog.EventFilter{VM: f.VM, Type: f.Type, Since: f.Since, Limit: f.Limit, Offset: f.Offset})
	if err != nil {
		return api.EventList{}, err
	}
	out := api.EventList{Events: make([]api.Event, 0, len(rows)), Page: api.Page{Limit: f.Limit, Offset: f.Offset, Total: total}}
	for i := range rows {
		out.Events = append(out.Events, Info(&rows[i]))
	}
	return out, nil
}

// Record stores one event; a zero At is the catalog's current time.
func (s *Service) Record(ctx context.Context, e api.Event) error {
	if !slices.Contains(api.EventTypes, e.Type) {
		return fmt.Errorf("record event: unknown type %q", e.Type)
	}
	return s.cat.RecordEvents(ctx, []catalog.Event{Row(e)})
}

// Row converts an event to its catalog row.
func Row(e api.Event) catalog.Event {
	return catalog.Event{
		Type: e.Type, OccurredAt: e.At.UTC(), VMContextID: e.VMContextID, VMName: e.VM, AgentID: e.AgentID,
		Actor: e.Actor, SourceAddress: e.SourceAddress, Outcome: e.Outcome, Details: e.Details,
	}
}

// Info converts a catalog row to the API form.
func Info(r *catalog.Event) api.Event {
	return api.Event{
		ID: r.ID, Type: r.Type, VM: r.VMName, VMContextID: r.VMContextID, At: r.OccurredAt, AgentID: r.AgentID,
		Actor: r.Actor, SourceAddress: r.SourceAddress, Outcome: r.Outcome, Details: r.Details,
	}
}

// ChunkQuarantined is the event of a damaged chunk moved into quarantine: the repository (id and
// name), the chunk's digest, where it went, why (the read's error) and who found it ("verify",
// "restore"). The caller adds what it knows of the backup that named the chunk.
func ChunkQuarantined(repositoryID, repositoryName, digest, key, reason, foundBy string) api.Event {
	return api.Event{
		Type: api.EventChunkQuarantined, Actor: foundBy, Outcome: api.OutcomeOK,
		Details: map[string]string{"repository_id": repositoryID, "repository": repositoryName, "digest": digest,
			"quarantine_key": key, "reason": reason, "found_by": foundBy},
	}
}

// BackupHealed is the event of a backup verified sound after an earlier verification had found
// it damaged.
func BackupHealed(backupID, vmContextID, vmName, repositoryName string) api.Event {
	return api.Event{
		Type: api.EventBackupHealed, Actor: "verify", Outcome: api.OutcomeOK, VMContextID: vmContextID, VM: vmName,
		Details: map[string]string{"backup_id": backupID, "repository": repositoryName},
	}
}

// RestoreTestFinished is the event of a finished restore test: its outcome is the result
// (passed or failed), reason the failed checks with their errors.
func RestoreTestFinished(testID, vmContextID, vmName, backupID, result, reason string, bytesRead int64, seconds, mbPerS float64) api.Event {
	d := map[string]string{"restore_test_id": testID, "backup_id": backupID, "result": result,
		"bytes_read": strconv.FormatInt(bytesRead, 10), "seconds": strconv.FormatFloat(seconds, 'f', 3, 64), "mb_per_s": strconv.FormatFloat(mbPerS, 'f', 2, 64)}
	if reason != "" {
		d["reason"] = reason
	}
	return api.Event{Type: api.EventRestoreTest, Actor: "restore-test", Outcome: result, VMContextID: vmContextID, VM: vmName, Details: d}
}
