package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sendense/sendense/shared/api"
	"github.com/uptrace/bun"
)

// ErrTokenNotRedeemable is returned when a join token cannot be redeemed: unknown, wrong secret,
// already used, revoked or expired. JoinTokenByID tells which, for the error message.
var ErrTokenNotRedeemable = errors.New("join token cannot be redeemed")

// CreateJoinToken stores a new join token (its secret hashed by the caller).
func (c *Catalog) CreateJoinToken(ctx context.Context, t *JoinToken) error {
	now := c.now()
	t.CreatedAt, t.UpdatedAt = now, now
	if _, err := c.db.NewInsert().Model(t).Exec(ctx); err != nil {
		return fmt.Errorf("insert join token: %w", err)
	}
	return nil
}

// JoinTokenByID returns one join token or ErrNotFound.
func (c *Catalog) JoinTokenByID(ctx context.Context, id string) (*JoinToken, error) {
	t := new(JoinToken)
	if err := scanOne(ctx, c.db.NewSelect().Model(t).Where("id = ?", id), fmt.Sprintf("join token %s", id)); err != nil {
		return nil, err
	}
	return t, nil
}

// JoinTokens lists join tokens, newest first.
func (c *Catalog) JoinTokens(ctx context.Context) ([]JoinToken, error) {
	var ts []JoinToken
	if err := c.db.NewSelect().Model(&ts).Order("created_at DESC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	return ts, nil
}

// RevokeJoinToken revokes an unredeemed token. A redeemed or already revoked token → ErrConflict.
func (c *Catalog) RevokeJoinToken(ctx context.Context, id string) error {
	now := c.now()
	res, err := c.db.NewUpdate().Model((*JoinToken)(nil)).
		Set("revoked_at = ?", now).Set("updated_at = ?", now).
		Where("id = ?", id).Where("redeemed_at IS NULL").Where("revoked_at IS NULL").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("revoke join token %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	if _, err := c.JoinTokenByID(ctx, id); err != nil {
		return err
	}
	return fmt.Errorf("join token %s is already redeemed or revoked: %w", id, ErrConflict)
}

// RedeemJoinToken atomically consumes a join token and records the agent it enrolled. The token
// is consumed by one conditional UPDATE that must affect exactly one row, so of N concurrent
// redemptions exactly one succeeds; the others get ErrTokenNotRedeemable and nothing is created.
func (c *Catalog) RedeemJoinToken(ctx context.Context, tokenID, secretHash string, a *Agent) error {
	now := c.now()
	a.CreatedAt, a.UpdatedAt, a.LastSeenAt = now, now, now
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*JoinToken)(nil)).
			Set("redeemed_at = ?", now).Set("agent_id = ?", a.ID).Set("updated_at = ?", now).
			Where("id = ?", tokenID).Where("secret_hash = ?", secretHash).
			Where("redeemed_at IS NULL").Where("revoked_at IS NULL").Where("expires_at > ?", now).
			Exec(ctx)
		if err != nil {
			return fmt.Errorf("redeem join token %s: %w", tokenID, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("join token %s: %w", tokenID, ErrTokenNotRedeemable)
		}
		a.JoinTokenID = tokenID
		if _, err := tx.NewInsert().Model(a).Exec(ctx); err != nil {
			return fmt.Errorf("insert agent %s: %w", a.ID, err)
		}
		return nil
	})
}

// AgentByID returns one agent or ErrNotFound.
func (c *Catalog) AgentByID(ctx context.Context, id string) (*Agent, error) {
	a := new(Agent)
	if err := scanOne(ctx, c.db.NewSelect().Model(a).Where("id = ?", id), fmt.Sprintf("agent %s", id)); err != nil {
		return nil, err
	}
	return a, nil
}

// Agents lists agents by name.
func (c *Catalog) Agents(ctx context.Context) ([]Agent, error) {
	var as []Agent
	if err := c.db.NewSelect().Model(&as).Order("name ASC", "id ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return as, nil
}

// CountAgentsByStatus returns the number of agents per status.
func (c *Catalog) CountAgentsByStatus(ctx context.Context) (map[string]int, error) {
	var rows []struct {
		Status string `bun:"status"`
		N      int    `bun:"n"`
	}
	if err := c.db.NewSelect().Model((*Agent)(nil)).Column("status").ColumnExpr("COUNT(*) AS n").Group("status").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("count agents: %w", err)
	}
	out := map[string]int{api.AgentActive: 0, api.AgentRevoked: 0}
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out, nil
}

// RevokeAgent marks an agent revoked; its certificate is refused from the next request on.
// Revoking a revoked agent → ErrConflict.
func (c *Catalog) RevokeAgent(ctx context.Context, id string) error {
	now := c.now()
	res, err := c.db.NewUpdate().Model((*Agent)(nil)).
		Set("status = ?", api.AgentRevoked).Set("revoked_at = ?", now).Set("updated_at = ?", now).
		Where("id = ?", id).Where("status = ?", api.AgentActive).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("revoke agent %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	if _, err := c.AgentByID(ctx, id); err != nil {
		return err
	}
	return fmt.Errorf("agent %s is already revoked: %w", id, ErrConflict)
}

// RenewAgentCert records an active agent's new certificate; the previous serial stays accepted
// until the next renewal. A revoked or unknown agent → ErrNotFound.
func (c *Catalog) RenewAgentCert(ctx context.Context, id, serial, fingerprint string, notAfter time.Time) error {
	now := c.now()
	res, err := c.db.NewUpdate().Model((*Agent)(nil)).
		Set("prev_cert_serial = cert_serial").
		Set("cert_serial = ?", serial).Set("cert_fingerprint = ?", fingerprint).
		Set("cert_not_after = ?", notAfter.UTC()).Set("updated_at = ?", now).
		Where("id = ?", id).Where("status = ?", api.AgentActive).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("record renewed certificate of agent %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("active agent %s: %w", id, ErrNotFound)
	}
	return nil
}

// TouchAgent records a heartbeat: last seen now, and the agent's reported host name and version.
func (c *Catalog) TouchAgent(ctx context.Context, id, hostname, version string) error {
	now := c.now()
	_, err := c.db.NewUpdate().Model((*Agent)(nil)).
		Set("last_seen_at = ?", now).Set("hostname = ?", hostname).Set("version = ?", version).Set("updated_at = ?", now).
		Where("id = ?", id).Where("status = ?", api.AgentActive).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("record heartbeat of agent %s: %w", id, err)
	}
	return nil
}

// CreateAPIToken stores a new operator token (its secret hashed by the caller).
func (c *Catalog) CreateAPIToken(ctx context.Context, t *APIToken) error {
	now := c.now()
	t.CreatedAt, t.UpdatedAt = now, now
	if _, err := c.db.NewInsert().Model(t).Exec(ctx); err != nil {
		return fmt.Errorf("insert api token: %w", err)
	}
	return nil
}

// APITokenByID returns one API token or ErrNotFound.
func (c *Catalog) APITokenByID(ctx context.Context, id string) (*APIToken, error) {
	t := new(APIToken)
	if err := scanOne(ctx, c.db.NewSelect().Model(t).Where("id = ?", id), fmt.Sprintf("api token %s", id)); err != nil {
		return nil, err
	}
	return t, nil
}

// APITokens lists operator tokens, newest first.
func (c *Catalog) APITokens(ctx context.Context) ([]APIToken, error) {
	var ts []APIToken
	if err := c.db.NewSelect().Model(&ts).Order("created_at DESC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	return ts, nil
}

// RevokeAPIToken revokes an operator token; already revoked → ErrConflict.
func (c *Catalog) RevokeAPIToken(ctx context.Context, id string) error {
	now := c.now()
	res, err := c.db.NewUpdate().Model((*APIToken)(nil)).
		Set("revoked_at = ?", now).Set("updated_at = ?", now).
		Where("id = ?", id).Where("revoked_at IS NULL").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("revoke api token %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	if _, err := c.APITokenByID(ctx, id); err != nil {
		return err
	}
	return fmt.Errorf("api token %s is already revoked: %w", id, ErrConflict)
}

// TouchAPIToken records a use of the token, at most once a minute to spare the catalog.
func (c *Catalog) TouchAPIToken(ctx context.Context, id string) error {
	now := c.now()
	_, err := c.db.NewUpdate().Model((*APIToken)(nil)).
		Set("last_used_at = ?", now).
		Where("id = ?", id).
		WhereGroup(" AND ", func(q *bun.UpdateQuery) *bun.UpdateQuery {
			return q.Where("last_used_at IS NULL").WhereOr("last_used_at < ?", now.Add(-time.Minute))
		}).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("record use of api token %s: %w", id, err)
	}
	return nil
}
