package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// EventFilter selects events for listing.
type EventFilter struct {
	VM     string // a VM name or context id
	Type   string
	Since  time.Time // events at or after
	Limit  int       // 0: all
	Offset int
}

// RecordEvents inserts events; an event without a time gets the catalog's current time.
func (c *Catalog) RecordEvents(ctx context.Context, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	now := c.now()
	for i := range evs {
		if evs[i].OccurredAt.IsZero() {
			evs[i].OccurredAt = now
		}
	}
	return insertEvents(ctx, c.db, evs)
}

func insertEvents(ctx context.Context, db bun.IDB, evs []Event) error {
	for start := 0; start < len(evs); start += 200 {
		part := evs[start:min(start+200, len(evs))]
		if _, err := db.NewInsert().Model(&part).Exec(ctx); err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
	}
	return nil
}

// Events lists events matching f, newest first, and the total number matching.
func (c *Catalog) Events(ctx context.Context, f EventFilter) ([]Event, int, error) {
	var out []Event
	q := c.db.NewSelect().Model(&out)
	if f.VM != "" {
		q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("ev.vm_name = ?", f.VM).WhereOr("ev.vm_context_id = ?", f.VM)
		})
	}
	if f.Type != "" {
		q = q.Where("ev.type = ?", f.Type)
	}
	if !f.Since.IsZero() {
		q = q.Where("ev.occurred_at >= ?", f.Since.UTC())
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit)).Offset(int64(f.Offset))
	}
	n, err := q.Order("ev.occurred_at DESC", "ev.id DESC").ScanAndCount(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list events: %w", err)
	}
	return out, int(n), nil
}
