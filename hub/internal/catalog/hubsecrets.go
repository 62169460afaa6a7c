package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// HubSecret is a secret the hubs sharing the catalog share, sealed under their hub key.
type HubSecret struct {
	bun.BaseModel `bun:"table:hub_secrets"`

	Name      string    `bun:"name,pk"`
	Sealed    []byte    `bun:"sealed,notnull"`
	CreatedAt time.Time `bun:"created_at,notnull"`
}

// HubSecret returns the sealed secret name, and whether there is one.
func (c *Catalog) HubSecret(ctx context.Context, name string) ([]byte, bool, error) {
	s := new(HubSecret)
	err := c.db.NewSelect().Model(s).Where("name = ?", name).Scan(ctx)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("read hub secret %s: %w", name, err)
	}
	return s.Sealed, true, nil
}

// CreateHubSecret stores the sealed secret name unless one exists: of several hubs creating it at
// once, one wins. It reports whether this call stored it; the others read the winner's.
func (c *Catalog) CreateHubSecret(ctx context.Context, name string, sealed []byte) (bool, error) {
	_, err := c.db.NewInsert().Model(&HubSecret{Name: name, Sealed: sealed, CreatedAt: c.now().UTC()}).Exec(ctx)
	switch {
	case isUniqueViolation(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("store hub secret %s: %w", name, err)
	}
	return true, nil
}
