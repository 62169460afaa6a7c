package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/sendense/sendense/shared/api"
)

// ApplyInventory records the complete inventory of one source of one agent in one transaction:
// new VMs and disks are inserted at once (disks with job_id NULL), changed attributes updated,
// VMs and disks no longer reported marked gone (never deleted). Rows that did not change are not
// written, so pushing the same inventory twice changes nothing. The job_id and change_id of an
// existing disk are never touched here.
func (c *Catalog) ApplyInventory(ctx context.Context, agentID string, inv *api.Inventory) ([]api.InventoryEvent, error) {
	var events []api.InventoryEvent
	err := c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		events = nil
		now := c.now()
		src, err := upsertSource(ctx, tx, agentID, inv.Source, now)
		if err != nil {
			return err
		}
		var vms []VMContext
		if err := tx.NewSelect().Model(&vms).Where("source_id = ?", src.ID).Scan(ctx); err != nil {
			return fmt.Errorf("select vms of source %s: %w", src.Name, err)
		}
		byUUID := make(map[string]*VMContext, len(vms))
		ctxIDs := make([]string, 0, len(vms))
		for i := range vms {
			byUUID[vms[i].InstanceUUID] = &vms[i]
			ctxIDs = append(ctxIDs, vms[i].ContextID)
		}
		disks := map[string]map[string]*VMDisk{}
		if len(ctxIDs) > 0 {
			var ds []VMDisk
			// Chunked IN lists keep every statement under placeholder and packet limits.
			for start := 0; start < len(ctxIDs); start += 500 {
				end := min(start+500, len(ctxIDs))
				var part []VMDisk
				if err := tx.NewSelect().Model(&part).Where("vm_context_id IN (?)", bun.In(ctxIDs[start:end])).Scan(ctx); err != nil {
					return fmt.Errorf("select disks of source %s: %w", src.Name, err)
				}
				ds = append(ds, part...)
			}
			for i := range ds {
				m := disks[ds[i].VMContextID]
				if m == nil {
					m = map[string]*VMDisk{}
					disks[ds[i].VMContextID] = m
				}
				m[ds[i].DiskID] = &ds[i]
			}
		}

		var newVMs []VMContext
		var newDisks []VMDisk
		seen := make(map[string]bool, len(inv.VMs))
		takenIDs := map[string]bool{}
		for i := range inv.VMs {
			rv := &inv.VMs[i]
			seen[rv.InstanceUUID] = true
			ex := byUUID[rv.InstanceUUID]
			if ex == nil {
				id, err := c.newContextID(ctx, tx, rv.Name, now, takenIDs)
				if err != nil {
					return err
				}
				vm := vmRow(rv, id, src.ID, agentID)
				vm.CurrentStatus, vm.CreatedAt, vm.UpdatedAt = api.VMDiscovered, now, now
				newVMs = append(newVMs, vm)
				events = append(events, api.InventoryEvent{Kind: api.EventVMAdded, VMContextID: id, VMName: rv.Name})
				for j := range rv.Disks {
					d := diskRow(&rv.Disks[j], id)
					d.Status, d.CreatedAt, d.UpdatedAt = api.DiskPresent, now, now
					newDisks = append(newDisks, d)
				}
				continue
			}
			evs, err := updateVM(ctx, tx, ex, rv, now)
			if err != nil {
				return err
			}
			events = append(events, evs...)
			existing := disks[ex.ContextID]
			reported := make(map[string]bool, len(rv.Disks))
			for j := range rv.Disks {
				rd := &rv.Disks[j]
				reported[rd.DiskID] = true
				ed := existing[rd.DiskID]
				if ed == nil {
					d := diskRow(rd, ex.ContextID)
					d.Status, d.CreatedAt, d.UpdatedAt = api.DiskPresent, now, now
					newDisks = append(newDisks, d)
					events = append(events, api.InventoryEvent{Kind: api.EventDiskAdded, VMContextID: ex.ContextID, VMName: rv.Name, DiskID: rd.DiskID})
					continue
				}
				evs, err := updateDisk(ctx, tx, ed, rd, rv.Name, now)
				if err != nil {
					return err
				}
				events = append(events, evs...)
			}
			for id, ed := range existing {
				if !reported[id] && ed.Status != api.DiskGone {
					if err := markDiskGone(ctx, tx, ed.ID, now); err != nil {
						return err
					}
					events = append(events, api.InventoryEvent{Kind: api.EventDiskRemoved, VMContextID: ex.ContextID, VMName: rv.Name, DiskID: id})
				}
			}
		}
		for i := range vms {
			vm := &vms[i]
			if seen[vm.InstanceUUID] || vm.CurrentStatus == api.VMGone {
				continue
			}
			if _, err := tx.NewUpdate().Model((*VMContext)(nil)).
				Set("current_status = ?", api.VMGone).Set("gone_at = ?", now).Set("updated_at = ?", now).
				Where("context_id = ?", vm.ContextID).Exec(ctx); err != nil {
				return fmt.Errorf("mark vm %s gone: %w", vm.ContextID, err)
			}
			if _, err := tx.NewUpdate().Model((*VMDisk)(nil)).
				Set("status = ?", api.DiskGone).Set("gone_at = ?", now).Set("updated_at = ?", now).
				Where("vm_context_id = ?", vm.ContextID).Where("status <> ?", api.DiskGone).Exec(ctx); err != nil {
				return fmt.Errorf("mark disks of vm %s gone: %w", vm.ContextID, err)
			}
			events = append(events, api.InventoryEvent{Kind: api.EventVMGone, VMContextID: vm.ContextID, VMName: vm.VMName})
		}
		if err := bulkInsert(ctx, tx, newVMs); err != nil {
			return fmt.Errorf("insert vms: %w", err)
		}
		if err := bulkInsert(ctx, tx, newDisks); err != nil {
			return fmt.Errorf("insert disks: %w", err)
		}
		return nil
	})
	return events, err
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

var unsafeIDChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// newContextID names a new VM like the seed system: ctx-<vm name>-<YYYYMMDD-HHMMSS>, with a
// numeric suffix when two VMs of that name appear in the same second.
func (c *Catalog) newContextID(ctx context.Context, tx bun.Tx, name string, now time.Time, taken map[string]bool) (string, error) {
	clean := strings.Trim(unsafeIDChars.ReplaceAllString(name, "-"), "-")
	if len(clean) > 100 {
		clean = clean[:100]
	}
	if clean == "" {
		clean = "vm"
	}
	base := "ctx-" + clean + "-" + now.Format("20060102-150405")
	for n := 1; n < 10000; n++ {
		id := base
		if n > 1 {
			id = fmt.Sprintf("%s-%d", base, n)
		}
		if taken[id] {
			continue
		}
		exists, err := tx.NewSelect().Model((*VMContext)(nil)).Where("context_id = ?", id).Exists(ctx)
		if err != nil {
			return "", fmt.Errorf("check context id %s: %w", id, err)
		}
		if !exists {
			taken[id] = true
			return id, nil
		}
	}
	return "", fmt.Errorf("no free context id for vm %q", name)
}

func vmRow(v *api.VM, contextID string, sourceID int64, agentID string) VMContext {
	return VMContext{
		ContextID: contextID, SourceID: sourceID, AgentID: agentID, InstanceUUID: v.InstanceUUID, BIOSUUID: v.BIOSUUID,
		VMName: v.Name, PowerState: v.PowerState, GuestOS: v.GuestOS, NumCPU: v.NumCPU, MemoryMB: v.MemoryMB,
		Datacenter: v.Datacenter, Cluster: v.Cluster, Host: v.Host, Folder: v.Folder, IsTemplate: v.Template, CBTEnabled: v.CBTEnabled,
	}
}

func diskRow(d *api.Disk, contextID string) VMDisk {
	return VMDisk{
		VMContextID: contextID, DiskID: d.DiskID, DeviceKey: d.Key, Label: d.Label, CapacityBytes: d.CapacityBytes,
		Datastore: d.Datastore, VMDKPath: d.BackingFile, BackingType: d.BackingType, Provisioning: d.Provisioning,
		ControllerType: d.ControllerType, ControllerBus: d.ControllerBus, UnitNumber: d.UnitNumber, DiskMode: d.DiskMode,
		Backupable: d.Backupable,
	}
}

// updateVM writes the reported attributes of an existing VM when any of them changed.
func updateVM(ctx context.Context, tx bun.Tx, ex *VMContext, rv *api.VM, now time.Time) ([]api.InventoryEvent, error) {
	want := vmRow(rv, ex.ContextID, ex.SourceID, ex.AgentID)
	want.CurrentStatus, want.GoneAt = ex.CurrentStatus, ex.GoneAt
	var events []api.InventoryEvent
	ev := func(kind, detail string) {
		events = append(events, api.InventoryEvent{Kind: kind, VMContextID: ex.ContextID, VMName: rv.Name, Detail: detail})
	}
	if ex.CurrentStatus == api.VMGone {
		want.CurrentStatus, want.GoneAt = api.VMDiscovered, time.Time{}
		ev(api.EventVMReturned, "")
	}
	if ex.VMName != rv.Name {
		ev(api.EventVMRenamed, fmt.Sprintf("%s → %s", ex.VMName, rv.Name))
	}
	if ex.CBTEnabled && !rv.CBTEnabled {
		ev(api.EventCBTDisabled, "the next backup of this VM is a full one")
	}
	cmp := *ex
	cmp.CreatedAt, cmp.UpdatedAt = time.Time{}, time.Time{}
	if cmp == want {
		return events, nil
	}
	want.CreatedAt, want.UpdatedAt = ex.CreatedAt, now
	if _, err := tx.NewUpdate().Model(&want).WherePK().
		ExcludeColumn("context_id", "created_at").Exec(ctx); err != nil {
		return nil, fmt.Errorf("update vm %s: %w", ex.ContextID, err)
	}
	return events, nil
}

// updateDisk writes the reported attributes of an existing disk when any of them changed. The
// job_id and change_id columns belong to backups and are never written here.
func updateDisk(ctx context.Context, tx bun.Tx, ed *VMDisk, rd *api.Disk, vmName string, now time.Time) ([]api.InventoryEvent, error) {
	want := diskRow(rd, ed.VMContextID)
	want.ID, want.Status, want.GoneAt, want.JobID, want.ChangeID = ed.ID, ed.Status, ed.GoneAt, ed.JobID, ed.ChangeID
	var events []api.InventoryEvent
	ev := func(kind, detail string) {
		events = append(events, api.InventoryEvent{Kind: kind, VMContextID: ed.VMContextID, VMName: vmName, DiskID: ed.DiskID, Detail: detail})
	}
	if ed.Status == api.DiskGone {
		want.Status, want.GoneAt = api.DiskPresent, time.Time{}
		ev(api.EventDiskReturn, "")
	}
	if ed.CapacityBytes != rd.CapacityBytes {
		ev(api.EventDiskResized, fmt.Sprintf("%d → %d bytes", ed.CapacityBytes, rd.CapacityBytes))
	}
	if ed.VMDKPath != rd.BackingFile || ed.Datastore != rd.Datastore {
		ev(api.EventDiskMoved, fmt.Sprintf("%s → %s", ed.VMDKPath, rd.BackingFile))
	}
	cmp := *ed
	cmp.CreatedAt, cmp.UpdatedAt = time.Time{}, time.Time{}
	if cmp == want {
		return events, nil
	}
	want.CreatedAt, want.UpdatedAt = ed.CreatedAt, now
	if _, err := tx.NewUpdate().Model(&want).WherePK().
		ExcludeColumn("id", "vm_context_id", "disk_id", "job_id", "change_id", "created_at").Exec(ctx); err != nil {
		return nil, fmt.Errorf("update disk %s/%s: %w", ed.VMContextID, ed.DiskID, err)
	}
	return events, nil
}

func markDiskGone(ctx context.Context, tx bun.Tx, id int64, now time.Time) error {
	if _, err := tx.NewUpdate().Model((*VMDisk)(nil)).
		Set("status = ?", api.DiskGone).Set("gone_at = ?", now).Set("updated_at = ?", now).
		Where("id = ?", id).Exec(ctx); err != nil {
		return fmt.Errorf("mark disk %d gone: %w", id, err)
	}
	return nil
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
