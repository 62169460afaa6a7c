package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// CreateRepository records a repository. A repository with the same name → ErrConflict.
func (c *Catalog) CreateRepository(ctx context.Context, r *Repository) error {
	now := c.now()
	r.CreatedAt, r.UpdatedAt = now, now
	if _, err := c.db.NewInsert().Model(r).Exec(ctx); err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("repository %q: %w", r.Name, ErrConflict)
		}
		return fmt.Errorf("insert repository %q: %w", r.Name, err)
	}
	return nil
}

// RepositoryByName returns the repository with that name, or ErrNotFound.
func (c *Catalog) RepositoryByName(ctx context.Context, name string) (*Repository, error) {
	r := new(Repository)
	err := c.db.NewSelect().Model(r).Where("name = ?", name).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("repository %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("select repository %q: %w", name, err)
	}
	return r, nil
}

// RepositoryByID returns the repository with that id, or ErrNotFound.
func (c *Catalog) RepositoryByID(ctx context.Context, id string) (*Repository, error) {
	r := new(Repository)
	err := c.db.NewSelect().Model(r).Where("id = ?", id).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("repository %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("select repository %s: %w", id, err)
	}
	return r, nil
}

// Repositories lists all repositories by name.
func (c *Catalog) Repositories(ctx context.Context) ([]Repository, error) {
	var rs []Repository
	if err := c.db.NewSelect().Model(&rs).Order("name ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	return rs, nil
}
