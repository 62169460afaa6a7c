package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/sendense/sendense/shared/api"
)

// InventoryState is what the catalog holds for one source of one agent when an inventory push
// arrives: the rows an inventory decision compares the push with.
type InventoryState struct {
	// Source is the source row, created on its first push.
	Source Source
	// VMs are every VM of the source, gone ones included.
	VMs []VMContext
	// Disks are every disk of those VMs, gone ones included.
	Disks []VMDisk
	// Now is the catalog's clock, read once for the whole push.
	Now time.Time
	// ContextIDInUse reports whether any VM of any agent has the context id. It reads inside the
	// push's transaction and is valid only while the decision runs.
	ContextIDInUse func(id string) (bool, error)
}

// InventoryChanges are the rows one inventory push writes. The inventory package decides them;
// ApplyInventory writes them as given, in one transaction.
type InventoryChanges struct {
	// NewVMs and NewDisks are inserted. A new disk's JobID must be empty: it is stored as NULL.
	NewVMs   []VMContext
	NewDisks []VMDisk
	// VMs are existing VMs written whole, except context_id and created_at.
	VMs []VMContext
	// Disks are existing disks written whole, except id, vm_context_id, disk_id, created_at and
	// job_id and change_id, which belong to backups and are never written by discovery.
	Disks []VMDisk
	// GoneVMs are context ids of VMs marked gone, with every disk of theirs not already gone.
	GoneVMs []string
	// GoneDisks are ids (vm_disks.id) of disks marked gone.
	GoneDisks []int64
	// Events are recorded with the changes they describe.
	Events []Event
}

// Empty reports whether the changes write nothing.
func (ch *InventoryChanges) Empty() bool {
	return len(ch.NewVMs)+len(ch.NewDisks)+len(ch.VMs)+len(ch.Disks)+len(ch.GoneVMs)+len(ch.GoneDisks)+len(ch.Events) == 0
}

// ApplyInventory records one inventory push of agentID for source src in one transaction: it
// records the source (and the time of its last push), loads the source's VMs and disks, lets
// decide choose the changes, and writes them. Nothing is written when decide fails. VMs and disks
// are never deleted here.
func (c *Catalog) ApplyInventory(ctx context.Context, agentID string, src api.Source, decide func(st *InventoryState) (*InventoryChanges, error)) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := c.now()
		row, err := upsertSource(ctx, tx, agentID, src, now)
		if err != nil {
			return err
		}
		st := &InventoryState{Source: *row, Now: now}
		if err := tx.NewSelect().Model(&st.VMs).Where("source_id = ?", row.ID).Order("context_id ASC").Scan(ctx); err != nil {
			return fmt.Errorf("select vms of source %s: %w", row.Name, err)
		}
		ctxIDs := make([]string, 0, len(st.VMs))
		for i := range st.VMs {
			ctxIDs = append(ctxIDs, st.VMs[i].ContextID)
		}
		// Chunked IN lists keep every statement under placeholder and packet limits.
		for start := 0; start < len(ctxIDs); start += 500 {
			var part []VMDisk
			if err := tx.NewSelect().Model(&part).Where("vm_context_id IN (?)", bun.In(ctxIDs[start:min(start+500, len(ctxIDs))])).
				Order("vm_context_id ASC", "device_key ASC").Scan(ctx); err != nil {
				return fmt.Errorf("select disks of source %s: %w", row.Name, err)
			}
			st.Disks = append(st.Disks, part...)
		}
		st.ContextIDInUse = func(id string) (bool, error) {
			ok, err := tx.NewSelect().Model((*VMContext)(nil)).Where("context_id = ?", id).Exists(ctx)
			if err != nil {
				return false, fmt.Errorf("check context id %s: %w", id, err)
			}
			return ok, nil
		}
		ch, err := decide(st)
		if err != nil {
			return err
		}
		return writeInventory(ctx, tx, ch, now)
	})
}

func writeInventory(ctx context.Context, tx bun.Tx, ch *InventoryChanges, now time.Time) error {
	for i := range ch.VMs {
		vm := &ch.VMs[i]
		if _, err := tx.NewUpdate().Model(vm).WherePK().ExcludeColumn("context_id", "created_at").Exec(ctx); err != nil {
			return fmt.Errorf("update vm %s: %w", vm.ContextID, err)
		}
	}
	for i := range ch.Disks {
		d := &ch.Disks[i]
		if _, err := tx.NewUpdate().Model(d).WherePK().
			ExcludeColumn("id", "vm_context_id", "disk_id", "job_id", "change_id", "created_at").Exec(ctx); err != nil {
			return fmt.Errorf("update disk %s/%s: %w", d.VMContextID, d.DiskID, err)
		}
	}
	for _, id := range ch.GoneDisks {
		if _, err := tx.NewUpdate().Model((*VMDisk)(nil)).
			Set("status = ?", api.DiskGone).Set("gone_at = ?", now).Set("updated_at = ?", now).
			Where("id = ?", id).Exec(ctx); err != nil {
			return fmt.Errorf("mark disk %d gone: %w", id, err)
		}
	}
	for _, id := range ch.GoneVMs {
		if _, err := tx.NewUpdate().Model((*VMContext)(nil)).
			Set("current_status = ?", api.VMGone).Set("gone_at = ?", now).Set("updated_at = ?", now).
			Where("context_id = ?", id).Exec(ctx); err != nil {
			return fmt.Errorf("mark vm %s gone: %w", id, err)
		}
		if _, err := tx.NewUpdate().Model((*VMDisk)(nil)).
			Set("status = ?", api.DiskGone).Set("gone_at = ?", now).Set("updated_at = ?", now).
			Where("vm_context_id = ?", id).Where("status <> ?", api.DiskGone).Exec(ctx); err != nil {
			return fmt.Errorf("mark disks of vm %s gone: %w", id, err)
		}
	}
	if err := bulkInsert(ctx, tx, ch.NewVMs); err != nil {
		return fmt.Errorf("insert vms: %w", err)
	}
	if err := bulkInsert(ctx, tx, ch.NewDisks); err != nil {
		return fmt.Errorf("insert disks: %w", err)
	}
	return insertEvents(ctx, tx, ch.Events)
}

func bulkInsert[T any](ctx context.Context, tx bun.Tx, rows []T) error {
	for start := 0; start < len(rows); start += 200 {
		part := rows[start:min(start+200, len(rows))]
		if _, err := tx.NewInsert().Model(&part).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

func upsertSource(ctx context.Context, tx bun.Tx, agentID string, s api.Source, now time.Time) (*Source, error) {
	src := new(Source)
	err := tx.NewSelect().Model(src).Where("agent_id = ?", agentID).Where("name = ?", s.Name).Scan(ctx)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		src = &Source{AgentID: agentID, Name: s.Name, URL: s.URL, Status: "ok", LastInventoryAt: now, CreatedAt: now, UpdatedAt: now}
		if _, err := tx.NewInsert().Model(src).Exec(ctx); err != nil {
			return nil, fmt.Errorf("insert source %s: %w", s.Name, err)
		}
		return src, nil
	case err != nil:
		return nil, fmt.Errorf("select source %s: %w", s.Name, err)
	}
	q := tx.NewUpdate().Model((*Source)(nil)).Set("last_inventory_at = ?", now).Where("id = ?", src.ID)
	if src.URL != s.URL || src.Status != "ok" || src.LastError != "" {
		q = q.Set("url = ?", s.URL).Set("status = 'ok'").Set("last_error = NULL").Set("updated_at = ?", now)
	}
	if _, err := q.Exec(ctx); err != nil {
		return nil, fmt.Errorf("update source %s: %w", s.Name, err)
	}
	return src, nil
}

// VMFilter selects VMs for listing.
type VMFilter struct {
	Name    string // exact VM name
	Status  string
	AgentID string
	Limit   int
	Offset  int
}

// VMWithSource is a VM row with its source name.
type VMWithSource struct {
	VMContext  `bun:",extend"`
	SourceName string `bun:"source_name"`
}

func (c *Catalog) vmQuery(dst any) *bun.SelectQuery {
	return c.db.NewSelect().Model(dst).
		ColumnExpr("vmc.*").ColumnExpr("s.name AS source_name").
		Join("JOIN sources AS s ON s.id = vmc.source_id")
}

// VMs lists VMs matching f by name, and the total number matching.
func (c *Catalog) VMs(ctx context.Context, f VMFilter) ([]VMWithSource, int, error) {
	var out []VMWithSource
	q := c.vmQuery(&out)
	if f.Name != "" {
		q = q.Where("vmc.vm_name = ?", f.Name)
	}
	if f.Status != "" {
		q = q.Where("vmc.current_status = ?", f.Status)
	}
	if f.AgentID != "" {
		q = q.Where("vmc.agent_id = ?", f.AgentID)
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit)).Offset(int64(f.Offset))
	}
	n, err := q.Order("vmc.vm_name ASC", "vmc.context_id ASC").ScanAndCount(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list vms: %w", err)
	}
	return out, int(n), nil
}

// VMByContextID returns one VM, or ErrNotFound.
func (c *Catalog) VMByContextID(ctx context.Context, id string) (*VMWithSource, error) {
	out := new(VMWithSource)
	if err := scanOne(ctx, c.vmQuery(out).Where("vmc.context_id = ?", id), fmt.Sprintf("vm %s", id)); err != nil {
		return nil, err
	}
	return out, nil
}

// VMDisks returns the disks of a VM ordered by device key.
func (c *Catalog) VMDisks(ctx context.Context, contextID string) ([]VMDisk, error) {
	var ds []VMDisk
	if err := c.db.NewSelect().Model(&ds).Where("vm_context_id = ?", contextID).Order("device_key ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("select disks of vm %s: %w", contextID, err)
	}
	return ds, nil
}
