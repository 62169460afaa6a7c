package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
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
// ApplyInventory writes them as given, in batches (see ApplyInventory).
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

// SourceConflict is the error of a push that reports a vCenter, or a VM, that belongs to another
// agent's source. It wraps ErrConflict; the push wrote nothing.
type SourceConflict struct {
	SourceName   string // the source as the pushing agent names it
	InstanceUUID string // the vCenter instance UUID of the push
	VMUUID       string // the VM instance UUID another agent's source holds; "" for a source conflict
	OwnerAgentID string // the agent the source or VM belongs to
	OwnerSource  string // the owner's name for its source
	OwnerUUID    string // the owner's source instance UUID, when the conflict is about a source name
}

func (e *SourceConflict) Error() string {
	switch {
	case e.VMUUID != "":
		return fmt.Sprintf("vm instance uuid %s belongs to source %s of agent %s; move that source to this agent (sendense-hub sources move) if it now reports on it",
			e.VMUUID, e.OwnerSource, e.OwnerAgentID)
	case e.OwnerUUID != "":
		return fmt.Sprintf("source %s of agent %s is vCenter instance %s, this push is from instance %s; give the new vCenter another source name",
			e.SourceName, e.OwnerAgentID, e.OwnerUUID, e.InstanceUUID)
	default:
		return fmt.Sprintf("vCenter instance %s is source %s of agent %s; an operator can move it (sendense-hub sources move)",
			e.InstanceUUID, e.OwnerSource, e.OwnerAgentID)
	}
}

func (e *SourceConflict) Unwrap() error { return ErrConflict }

// inventoryBatchVMs bounds the VMs one write transaction of a push covers. On SQLite a
// transaction holds the only write lock; a batch of 250 VMs with their disks and events takes
// tens of milliseconds, so a heartbeat or another agent's push never waits long behind a push of
// 100,000 VMs.
const inventoryBatchVMs = 250

// ApplyInventory records one inventory push of agentID for source src. It refuses the push with
// a *SourceConflict when any of vmUUIDs belongs to a VM (not gone) of another agent's source or
// the source is another agent's (see claimSource), loads the source's VMs and disks, lets decide
// choose the changes, and writes them in transactions of at most inventoryBatchVMs VMs each:
// every VM's rows and events together, VMs marked gone last, and the source's
// last_inventory_at once everything is written. When decide fails, no VM, disk or event is
// written; when a batch fails, the batches before it stay (each complete with its events),
// nothing is marked gone, and the next push of the same inventory completes the rest. VMs and
// disks are never deleted here.
func (c *Catalog) ApplyInventory(ctx context.Context, agentID string, src api.Source, vmUUIDs []string, decide func(st *InventoryState) (*InventoryChanges, error)) error {
	// Reads outside any transaction: they hold no lock, and a VM taken by another agent between
	// this check and the writes is caught by that agent's next push. The source is checked
	// first, so that a push for another agent's vCenter is reported as that.
	if src.InstanceUUID != "" {
		owner := new(Source)
		err := c.db.NewSelect().Model(owner).Where("instance_uuid = ?", src.InstanceUUID).Scan(ctx)
		switch {
		case err == nil && owner.AgentID != agentID:
			return &SourceConflict{SourceName: src.Name, InstanceUUID: src.InstanceUUID, OwnerAgentID: owner.AgentID, OwnerSource: owner.Name}
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("select source %s: %w", src.InstanceUUID, err)
		}
	}
	if err := checkForeignVMs(ctx, c.db, agentID, src, vmUUIDs); err != nil {
		return err
	}
	now := c.now()
	var row *Source
	err := c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		row, err = claimSource(ctx, tx, agentID, src, now)
		return err
	})
	if err != nil {
		return err
	}
	st := &InventoryState{Source: *row, Now: now}
	if err := c.inventoryVMs(ctx, row, vmUUIDs, &st.VMs); err != nil {
		return err
	}
	ctxIDs := make([]string, 0, len(st.VMs))
	for i := range st.VMs {
		ctxIDs = append(ctxIDs, st.VMs[i].ContextID)
	}
	// Chunked IN lists keep every statement under placeholder and packet limits.
	for start := 0; start < len(ctxIDs); start += 500 {
		var part []VMDisk
		if err := c.db.NewSelect().Model(&part).Where("vm_context_id IN (?)", bun.In(ctxIDs[start:min(start+500, len(ctxIDs))])).
			Order("vm_context_id ASC", "device_key ASC").Scan(ctx); err != nil {
			return fmt.Errorf("select disks of source %s: %w", row.Name, err)
		}
		st.Disks = append(st.Disks, part...)
	}
	st.ContextIDInUse = func(id string) (bool, error) {
		ok, err := c.db.NewSelect().Model((*VMContext)(nil)).Where("context_id = ?", id).Exists(ctx)
		if err != nil {
			return false, fmt.Errorf("check context id %s: %w", id, err)
		}
		return ok, nil
	}
	ch, err := decide(st)
	if err != nil {
		return err
	}
	wasGone := make(map[string]bool)
	for i := range st.VMs {
		if st.VMs[i].CurrentStatus == api.VMGone {
			wasGone[st.VMs[i].ContextID] = true
		}
	}
	diskVM := make(map[int64]string, len(st.Disks))
	for i := range st.Disks {
		diskVM[st.Disks[i].ID] = st.Disks[i].VMContextID
	}
	for i, b := range splitInventory(ch, diskVM) {
		if i > 0 && c.driver == DriverSQLite {
			// Let writers queued behind the lock (heartbeats, other pushes) in between batches.
			time.Sleep(5 * time.Millisecond)
		}
		err := c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			return writeInventory(ctx, tx, b, now, wasGone)
		})
		if err != nil {
			return err
		}
	}
	if _, err := c.db.NewUpdate().Model((*Source)(nil)).Set("last_inventory_at = ?", now).Where("id = ?", row.ID).Exec(ctx); err != nil {
		return fmt.Errorf("record inventory time of source %s: %w", row.Name, err)
	}
	return nil
}

// inventoryVMs reads the VMs of a source that a push can change: those not gone (each is either
// reported or now gone) and the gone ones it reports again (they return), in context id order.
// The VMs gone and not reported, which only grow in number as a vCenter's VMs come and go, are
// left in the catalog unread.
func (c *Catalog) inventoryVMs(ctx context.Context, src *Source, vmUUIDs []string, out *[]VMContext) error {
	if err := c.db.NewSelect().Model(out).Where("source_id = ?", src.ID).Where("current_status <> ?", api.VMGone).
		Scan(ctx); err != nil {
		return fmt.Errorf("select vms of source %s: %w", src.Name, err)
	}
	anyGone, err := c.db.NewSelect().Model((*VMContext)(nil)).Where("source_id = ?", src.ID).
		Where("current_status = ?", api.VMGone).Exists(ctx)
	if err != nil {
		return fmt.Errorf("select vms of source %s: %w", src.Name, err)
	}
	for start := 0; anyGone && start < len(vmUUIDs); start += 500 {
		var part []VMContext
		if err := c.db.NewSelect().Model(&part).Where("source_id = ?", src.ID).Where("current_status = ?", api.VMGone).
			Where("instance_uuid IN (?)", bun.In(vmUUIDs[start:min(start+500, len(vmUUIDs))])).Scan(ctx); err != nil {
			return fmt.Errorf("select returning vms of source %s: %w", src.Name, err)
		}
		*out = append(*out, part...)
	}
	slices.SortFunc(*out, func(a, b VMContext) int { return strings.Compare(a.ContextID, b.ContextID) })
	return nil
}

// splitInventory cuts a push's changes into batches of at most inventoryBatchVMs VMs each, every
// VM's rows and events in one batch, in the order the changes name the VMs; the VMs marked gone
// (with their vm_gone events) come in batches after all others.
func splitInventory(ch *InventoryChanges, diskVM map[int64]string) []*InventoryChanges {
	if ch.Empty() {
		return nil
	}
	goneVM := make(map[string]bool, len(ch.GoneVMs))
	for _, id := range ch.GoneVMs {
		goneVM[id] = true
	}
	slot := make(map[string]int)
	var present []*InventoryChanges
	at := func(id string) *InventoryChanges {
		n, ok := slot[id]
		if !ok {
			n = len(slot)
			slot[id] = n
		}
		for len(present) <= n/inventoryBatchVMs {
			present = append(present, &InventoryChanges{})
		}
		return present[n/inventoryBatchVMs]
	}
	for _, v := range ch.VMs {
		b := at(v.ContextID)
		b.VMs = append(b.VMs, v)
	}
	for _, v := range ch.NewVMs {
		b := at(v.ContextID)
		b.NewVMs = append(b.NewVMs, v)
	}
	for _, d := range ch.Disks {
		b := at(d.VMContextID)
		b.Disks = append(b.Disks, d)
	}
	for _, d := range ch.NewDisks {
		b := at(d.VMContextID)
		b.NewDisks = append(b.NewDisks, d)
	}
	for _, id := range ch.GoneDisks {
		b := at(diskVM[id])
		b.GoneDisks = append(b.GoneDisks, id)
	}
	var goneEvents []Event
	for _, e := range ch.Events {
		if goneVM[e.VMContextID] {
			goneEvents = append(goneEvents, e)
			continue
		}
		b := at(e.VMContextID)
		b.Events = append(b.Events, e)
	}
	out := present
	for start := 0; start < len(ch.GoneVMs); start += inventoryBatchVMs {
		b := &InventoryChanges{GoneVMs: ch.GoneVMs[start:min(start+inventoryBatchVMs, len(ch.GoneVMs))]}
		in := make(map[string]bool, len(b.GoneVMs))
		for _, id := range b.GoneVMs {
			in[id] = true
		}
		for _, e := range goneEvents {
			if in[e.VMContextID] {
				b.Events = append(b.Events, e)
			}
		}
		out = append(out, b)
	}
	return out
}

// checkForeignVMs returns a *SourceConflict when one of uuids is a VM, not gone, of a source of
// another agent. A VM gone from its old source (moved to another vCenter) is free to be reported.
func checkForeignVMs(ctx context.Context, db bun.IDB, agentID string, src api.Source, uuids []string) error {
	for start := 0; start < len(uuids); start += 500 {
		var found []VMWithSource
		err := db.NewSelect().Model(&found).ColumnExpr("vmc.*").ColumnExpr("s.name AS source_name").
			Join("JOIN sources AS s ON s.id = vmc.source_id").
			Where("vmc.instance_uuid IN (?)", bun.In(uuids[start:min(start+500, len(uuids))])).
			Where("s.agent_id <> ?", agentID).Where("vmc.current_status <> ?", api.VMGone).
			Order("vmc.instance_uuid ASC").Limit(1).Scan(ctx)
		if err != nil {
			return fmt.Errorf("check vm owners of source %s: %w", src.Name, err)
		}
		if len(found) > 0 {
			return &SourceConflict{SourceName: src.Name, InstanceUUID: src.InstanceUUID, VMUUID: found[0].InstanceUUID,
				OwnerAgentID: found[0].AgentID, OwnerSource: found[0].SourceName}
		}
	}
	return nil
}

// writeInventory writes one batch of a push. A VM's status is not written from the push's view
// of it, which may be older than a backup's change (protected): only a VM that was gone
// (wasGone) and is reported again becomes discovered, by a conditional update.
func writeInventory(ctx context.Context, tx bun.Tx, ch *InventoryChanges, now time.Time, wasGone map[string]bool) error {
	for i := range ch.VMs {
		vm := &ch.VMs[i]
		if _, err := tx.NewUpdate().Model(vm).WherePK().ExcludeColumn("context_id", "created_at", "current_status", "gone_at").Exec(ctx); err != nil {
			return fmt.Errorf("update vm %s: %w", vm.ContextID, err)
		}
		if wasGone[vm.ContextID] && vm.CurrentStatus != api.VMGone {
			if _, err := tx.NewUpdate().Model((*VMContext)(nil)).Set("current_status = ?", vm.CurrentStatus).Set("gone_at = NULL").
				Where("context_id = ?", vm.ContextID).Where("current_status = ?", api.VMGone).Exec(ctx); err != nil {
				return fmt.Errorf("mark vm %s returned: %w", vm.ContextID, err)
			}
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
			Where("context_id = ?", id).Where("current_status <> ?", api.VMGone).Exec(ctx); err != nil {
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

// ApplyDiskChanges writes changes to disks (updated and new rows) with their events in one
// transaction: what a job reports of its VM's disks at snapshot time.
func (c *Catalog) ApplyDiskChanges(ctx context.Context, ch *InventoryChanges) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		return writeInventory(ctx, tx, ch, c.now(), nil)
	})
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

// claimSource finds or records the source of a push of agentID and records the time of the
// push. A source is found by its instance UUID; it belongs to the agent that recorded it, and
// another agent's push is a *SourceConflict. A source recorded before instance UUIDs were (NULL)
// is found by agent and name, and the owner's first push that brings a UUID claims it. A push
// without a UUID (only older callers of the catalog) finds its source by agent and name.
func claimSource(ctx context.Context, tx bun.Tx, agentID string, s api.Source, now time.Time) (*Source, error) {
	src := new(Source)
	if s.InstanceUUID != "" {
		err := tx.NewSelect().Model(src).Where("instance_uuid = ?", s.InstanceUUID).Scan(ctx)
		switch {
		case err == nil:
			if src.AgentID != agentID {
				return nil, &SourceConflict{SourceName: s.Name, InstanceUUID: s.InstanceUUID, OwnerAgentID: src.AgentID, OwnerSource: src.Name}
			}
			return src, touchSource(ctx, tx, src, s, now)
		case !errors.Is(err, sql.ErrNoRows):
			return nil, fmt.Errorf("select source %s: %w", s.InstanceUUID, err)
		}
	}
	err := tx.NewSelect().Model(src).Where("agent_id = ?", agentID).Where("name = ?", s.Name).Scan(ctx)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		src = &Source{AgentID: agentID, Name: s.Name, InstanceUUID: s.InstanceUUID, URL: s.URL, Status: "ok", CreatedAt: now, UpdatedAt: now}
		if _, err := tx.NewInsert().Model(src).Exec(ctx); err != nil {
			if isUniqueViolation(err) { // another agent recorded the UUID meanwhile
				return nil, &SourceConflict{SourceName: s.Name, InstanceUUID: s.InstanceUUID, OwnerAgentID: "(another agent)", OwnerSource: "(being recorded)"}
			}
			return nil, fmt.Errorf("insert source %s: %w", s.Name, err)
		}
		return src, nil
	case err != nil:
		return nil, fmt.Errorf("select source %s: %w", s.Name, err)
	case src.InstanceUUID != "" && s.InstanceUUID != "":
		// The agent's name now points at another vCenter: its VMs are other VMs.
		return nil, &SourceConflict{SourceName: s.Name, InstanceUUID: s.InstanceUUID, OwnerAgentID: agentID, OwnerSource: src.Name, OwnerUUID: src.InstanceUUID}
	}
	return src, touchSource(ctx, tx, src, s, now)
}

// touchSource records the instance UUID, name and URL of the agent's own source when they
// changed. The time of the push is recorded once the push is written.
func touchSource(ctx context.Context, tx bun.Tx, src *Source, s api.Source, now time.Time) error {
	if !(src.URL != s.URL || src.Name != s.Name || (src.InstanceUUID == "" && s.InstanceUUID != "") || src.Status != "ok" || src.LastError != "") {
		return nil
	}
	q := tx.NewUpdate().Model((*Source)(nil)).Where("id = ?", src.ID)
	if src.URL != s.URL || src.Name != s.Name || (src.InstanceUUID == "" && s.InstanceUUID != "") || src.Status != "ok" || src.LastError != "" {
		q = q.Set("url = ?", s.URL).Set("name = ?", s.Name).Set("status = 'ok'").Set("last_error = NULL").Set("updated_at = ?", now)
		if src.InstanceUUID == "" && s.InstanceUUID != "" {
			q = q.Set("instance_uuid = ?", s.InstanceUUID)
			src.InstanceUUID = s.InstanceUUID
		}
		src.Name, src.URL = s.Name, s.URL
	}
	if _, err := q.Exec(ctx); err != nil {
		if isUniqueViolation(err) {
			return &SourceConflict{SourceName: s.Name, InstanceUUID: s.InstanceUUID, OwnerAgentID: src.AgentID, OwnerSource: s.Name + " (another source of this agent has the name)"}
		}
		return fmt.Errorf("update source %s: %w", s.Name, err)
	}
	return nil
}

// SourceWithCounts is a source row with the number of its VMs that are not gone.
type SourceWithCounts struct {
	Source `bun:",extend"`
	VMs    int `bun:"vms"`
}

// Sources lists every source, by agent and name, with its VM count.
func (c *Catalog) Sources(ctx context.Context) ([]SourceWithCounts, error) {
	var out []SourceWithCounts
	err := c.db.NewSelect().Model(&out).ColumnExpr("source.*").
		ColumnExpr("(SELECT COUNT(*) FROM vm_contexts AS v WHERE v.source_id = source.id AND v.current_status <> ?) AS vms", api.VMGone).
		Order("source.agent_id ASC", "source.name ASC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	return out, nil
}

// MoveSource gives the source with the given id, and its VMs, to agent agentID, which must exist
// and not be revoked. Jobs already queued or running stay with the agent that had them.
func (c *Catalog) MoveSource(ctx context.Context, id int64, agentID string) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := c.now()
		a := new(Agent)
		if err := scanOne(ctx, tx.NewSelect().Model(a).Where("id = ?", agentID), "agent "+agentID); err != nil {
			return err
		}
		if a.Status != api.AgentActive {
			return fmt.Errorf("agent %s is %s: %w", agentID, a.Status, ErrConflict)
		}
		src := new(Source)
		if err := scanOne(ctx, tx.NewSelect().Model(src).Where("id = ?", id), fmt.Sprintf("source %d", id)); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*Source)(nil)).Set("agent_id = ?", agentID).Set("updated_at = ?", now).Where("id = ?", id).Exec(ctx); err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("agent %s already has a source named %s: %w", agentID, src.Name, ErrConflict)
			}
			return fmt.Errorf("move source %d: %w", id, err)
		}
		if _, err := tx.NewUpdate().Model((*VMContext)(nil)).Set("agent_id = ?", agentID).Set("updated_at = ?", now).Where("source_id = ?", id).Exec(ctx); err != nil {
			return fmt.Errorf("move vms of source %d: %w", id, err)
		}
		return nil
	})
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
