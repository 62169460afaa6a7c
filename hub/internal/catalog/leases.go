package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Lease is the row of one background duty of the hub: which hub holds it and until when.
type Lease struct {
	bun.BaseModel `bun:"table:leases"`

	Name       string    `bun:"name,pk"`
	Holder     string    `bun:"holder,notnull"`
	ExpiresAt  time.Time `bun:"expires_at,notnull"`
	AcquiredAt time.Time `bun:"acquired_at,notnull"`
}

// AcquireLease takes the lease name for holder until now+ttl if nobody holds it or its holder
// let it expire (at or before now). Of several hubs trying at once exactly one wins: the take
// is a conditional UPDATE on the expiry, or an INSERT that the primary key lets only one make.
// It reports whether holder now holds the lease. A holder that already holds it unexpired gets
// false: it renews with RenewLease.
func (c *Catalog) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	now = now.UTC()
	res, err := c.db.NewUpdate().Model((*Lease)(nil)).
		Set("holder = ?", holder).Set("expires_at = ?", now.Add(ttl)).Set("acquired_at = ?", now).
		Where("name = ?", name).Where("expires_at <= ?", now).
		Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("take lease %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	_, err = c.db.NewInsert().Model(&Lease{Name: name, Holder: holder, ExpiresAt: now.Add(ttl), AcquiredAt: now}).Exec(ctx)
	switch {
	case isUniqueViolation(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("create lease %s: %w", name, err)
	}
	return true, nil
}

// RenewLease extends the lease name to now+ttl if holder still holds it (expired or not, as
// long as nobody took it over). It reports whether holder still holds the lease.
func (c *Catalog) RenewLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	res, err := c.db.NewUpdate().Model((*Lease)(nil)).
		Set("expires_at = ?", now.UTC().Add(ttl)).
		Where("name = ?", name).Where("holder = ?", holder).
		Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("renew lease %s: %w", name, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ReleaseLease gives up the lease name if holder holds it, so that another hub takes the duty
// at once rather than after the expiry. Releasing a lease one does not hold changes nothing.
func (c *Catalog) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := c.db.NewDelete().Model((*Lease)(nil)).Where("name = ?", name).Where("holder = ?", holder).Exec(ctx); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// Leases lists the leases of the background duties by name.
func (c *Catalog) Leases(ctx context.Context) ([]Lease, error) {
	var out []Lease
	if err := c.db.NewSelect().Model(&out).Order("name").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	return out, nil
}
