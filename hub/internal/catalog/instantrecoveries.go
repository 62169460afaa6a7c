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

// InstantRecovery is one instant-recovery session.
type InstantRecovery struct {
	bun.BaseModel `bun:"table:instant_recoveries,alias:ir"`

	ID         string `bun:"id,pk"`
	BackupID   string `bun:"backup_id,notnull"`
	AgentID    string `bun:"agent_id,notnull"`
	SourceName string `bun:"source_name,notnull"`
	Host       string `bun:"host,notnull"`
	Name       string `bun:"name,notnull"`
	// Spec is the normalised api.InstantRecoveryRequest (JSON).
	Spec   string `bun:"spec,notnull"`
	Status string `bun:"status,notnull"`
	// Pending is the action waiting for the agent: api.IRActionStart, api.IRActionStop or "".
	Pending      string `bun:"pending,notnull"`
	VMRef        string `bun:"vm_ref,nullzero"`
	DatastoreRef string `bun:"datastore_ref,nullzero"`
	// TargetDatastore is where a migration moves the VM.
	TargetDatastore string `bun:"target_datastore,nullzero"`
	Error           string `bun:"error,nullzero"`
	// Boot is what the agent saw of the guest after a start that waited for its boot
	// (api.InstantRecoveryBoot, JSON).
	Boot       string    `bun:"boot,nullzero"`
	ClaimedAt  time.Time `bun:"claimed_at,nullzero"`
	FinishedAt time.Time `bun:"finished_at,nullzero"`
	CreatedAt  time.Time `bun:"created_at,notnull"`
	UpdatedAt  time.Time `bun:"updated_at,notnull"`
}

// CreateInstantRecovery records a new session, starting, with its start pending.
func (c *Catalog) CreateInstantRecovery(ctx context.Context, r *InstantRecovery) error {
	now := c.now()
	r.Status, r.Pending, r.CreatedAt, r.UpdatedAt = api.IRStarting, api.IRActionStart, now, now
	if _, err := c.db.NewInsert().Model(r).Exec(ctx); err != nil {
		return fmt.Errorf("insert instant recovery %s: %w", r.ID, err)
	}
	return nil
}

// InstantRecoveryByID returns one session.
func (c *Catalog) InstantRecoveryByID(ctx context.Context, id string) (*InstantRecovery, error) {
	r := new(InstantRecovery)
	if err := scanOne(ctx, c.db.NewSelect().Model(r).Where("id = ?", id), "instant recovery "+id); err != nil {
		return nil, err
	}
	return r, nil
}

// InstantRecoveryFilter selects sessions for listing.
type InstantRecoveryFilter struct {
	Status        string
	Limit, Offset int
}

// InstantRecoveries lists sessions, newest first, with the total that match.
func (c *Catalog) InstantRecoveries(ctx context.Context, f InstantRecoveryFilter) ([]InstantRecovery, int, error) {
	var out []InstantRecovery
	q := c.db.NewSelect().Model(&out).Order("created_at DESC", "id DESC")
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit)).Offset(int64(f.Offset))
	}
	n, err := q.ScanAndCount(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list instant recoveries: %w", err)
	}
	return out, int(n), nil
}

// ActiveInstantRecoveries returns the sessions whose export must be served: starting, running,
// stopping or migrating.
func (c *Catalog) ActiveInstantRecoveries(ctx context.Context) ([]InstantRecovery, error) {
	var out []InstantRecovery
	err := c.db.NewSelect().Model(&out).Where("status IN (?)", bun.In([]string{api.IRStarting, api.IRRunning, api.IRStopping, api.IRMigrating})).
		Order("created_at ASC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list active instant recoveries: %w", err)
	}
	return out, nil
}

// ClaimInstantRecovery hands the agent the oldest pending action of its sessions: one never
// claimed, or claimed before staleBefore (the agent died or restarted while carrying it out;
// every action is safe to run again), unless busy, the sessions the agent says it is still
// working on, names its session: a start that waits for its guest's boot runs for up to an
// hour, longer than any claim timeout, and a stop asked meanwhile must not overlap it (the
// start may still be registering the VM). The claim is a conditional UPDATE, so two pollers
// never both get it. It returns nil when there is nothing to do.
func (c *Catalog) ClaimInstantRecovery(ctx context.Context, agentID string, staleBefore time.Time, busy []string) (*InstantRecovery, error) {
	for range 5 { // another claimer may win a candidate; try the next
		cand := new(InstantRecovery)
		sel := c.db.NewSelect().Model(cand).Where("agent_id = ?", agentID).Where("pending <> ''").
			WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
				return q.Where("claimed_at IS NULL").WhereOr("claimed_at < ?", staleBefore)
			})
		if len(busy) > 0 {
			sel = sel.Where("id NOT IN (?)", bun.In(busy))
		}
		err := sel.Order("created_at ASC").Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("find pending instant recoveries: %w", err)
		}
		now := c.now()
		q := c.db.NewUpdate().Model((*InstantRecovery)(nil)).Set("claimed_at = ?", now).Set("updated_at = ?", now).
			Where("id = ?", cand.ID).Where("pending = ?", cand.Pending)
		if cand.ClaimedAt.IsZero() {
			q = q.Where("claimed_at IS NULL")
		} else {
			q = q.Where("claimed_at < ?", staleBefore)
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("claim instant recovery %s: %w", cand.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return c.InstantRecoveryByID(ctx, cand.ID)
		}
	}
	return nil, nil
}

// FinishInstantRecoveryAction records the outcome of the pending action of the agent's
// session; an outcome for an action no longer pending (the operator stopped a session while
// it started) changes nothing and returns ErrConflict. status and fields are what the row
// becomes; pending is the next action ("" for none).
func (c *Catalog) FinishInstantRecoveryAction(ctx context.Context, id, agentID, action string, u InstantRecoveryUpdate) (*InstantRecovery, error) {
	now := c.now()
	q := c.db.NewUpdate().Model((*InstantRecovery)(nil)).
		Set("status = ?", u.Status).Set("pending = ?", u.Pending).Set("claimed_at = NULL").Set("updated_at = ?", now).
		Where("id = ?", id).Where("agent_id = ?", agentID).Where("pending = ?", action)
	if u.VMRef != "" {
		q = q.Set("vm_ref = ?", u.VMRef)
	}
	if u.DatastoreRef != "" {
		q = q.Set("datastore_ref = ?", u.DatastoreRef)
	}
	if u.Error != "" {
		q = q.Set("error = ?", u.Error)
	}
	if u.Boot != "" {
		q = q.Set("boot = ?", u.Boot)
	}
	if u.Status == api.IRStopped || u.Status == api.IRFailed || u.Status == api.IRMigrated {
		q = q.Set("finished_at = ?", now)
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("finish %s of instant recovery %s: %w", action, id, err)
	}
	r, err := c.InstantRecoveryByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.AgentID != agentID {
		return nil, fmt.Errorf("instant recovery %s: %w", id, ErrNotYours)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return r, fmt.Errorf("instant recovery %s has no %s pending (status %s): %w", id, action, r.Status, ErrConflict)
	}
	return r, nil
}

// InstantRecoveryUpdate is what an action's outcome makes of a session.
type InstantRecoveryUpdate struct {
	Status, Pending, VMRef, DatastoreRef, Error string
	// Boot, when set, is recorded as the session's boot observation.
	Boot string
}

// StopInstantRecovery asks for a session to be stopped: a starting or running session becomes
// stopping with the stop pending (a start the agent is carrying out is then overtaken: its
// outcome is refused and the stop cleans up whatever it made). Stopping, stopped and failed
// sessions are returned as they are.
func (c *Catalog) StopInstantRecovery(ctx context.Context, id string) (*InstantRecovery, error) {
	now := c.now()
	_, err := c.db.NewUpdate().Model((*InstantRecovery)(nil)).
		Set("status = ?", api.IRStopping).Set("pending = ?", api.IRActionStop).Set("claimed_at = NULL").Set("updated_at = ?", now).
		Where("id = ?", id).Where("status IN (?)", bun.In([]string{api.IRStarting, api.IRRunning})).Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("stop instant recovery %s: %w", id, err)
	}
	return c.InstantRecoveryByID(ctx, id)
}

// MigrateInstantRecovery asks for a running session's VM to be moved to datastore: the session
// becomes migrating with the migrate pending. A session that is not running with nothing
// pending → ErrConflict, changing nothing.
func (c *Catalog) MigrateInstantRecovery(ctx context.Context, id, datastore string) (*InstantRecovery, error) {
	now := c.now()
	res, err := c.db.NewUpdate().Model((*InstantRecovery)(nil)).
		Set("status = ?", api.IRMigrating).Set("pending = ?", api.IRActionMigrate).Set("target_datastore = ?", datastore).
		Set("claimed_at = NULL").Set("updated_at = ?", now).
		Where("id = ?", id).Where("status = ?", api.IRRunning).Where("pending = ''").Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate instant recovery %s: %w", id, err)
	}
	r, err := c.InstantRecoveryByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return r, fmt.Errorf("instant recovery %s is %s: only a running session migrates: %w", id, r.Status, ErrConflict)
	}
	return r, nil
}

// FailInstantRecovery ends a session the hub could not serve (its export failed): nothing
// pending, status failed with the reason.
func (c *Catalog) FailInstantRecovery(ctx context.Context, id, reason string) error {
	now := c.now()
	_, err := c.db.NewUpdate().Model((*InstantRecovery)(nil)).
		Set("status = ?", api.IRFailed).Set("pending = ''").Set("error = ?", reason).Set("finished_at = ?", now).Set("updated_at = ?", now).
		Where("id = ?", id).Where("status = ?", api.IRStarting).Where("claimed_at IS NULL").Exec(ctx)
	if err != nil {
		return fmt.Errorf("fail instant recovery %s: %w", id, err)
	}
	return nil
}

// CountInstantRecoveriesByStatus counts sessions by status (every status present, maybe 0).
func (c *Catalog) CountInstantRecoveriesByStatus(ctx context.Context) (map[string]int, error) {
	var rows []struct {
		Status string `bun:"status"`
		N      int    `bun:"n"`
	}
	if err := c.db.NewSelect().Model((*InstantRecovery)(nil)).Column("status").ColumnExpr("COUNT(*) AS n").Group("status").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("count instant recoveries: %w", err)
	}
	out := map[string]int{api.IRStarting: 0, api.IRRunning: 0, api.IRStopping: 0, api.IRStopped: 0, api.IRFailed: 0, api.IRMigrating: 0, api.IRMigrated: 0}
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out, nil
}
