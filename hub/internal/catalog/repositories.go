package catalog

import (
	"context"
	"fmt"
	"time"
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
	if err := scanOne(ctx, c.db.NewSelect().Model(r).Where("name = ?", name), fmt.Sprintf("repository %q", name)); err != nil {
		return nil, err
	}
	return r, nil
}

// RepositoryByID returns the repository with that id, or ErrNotFound.
func (c *Catalog) RepositoryByID(ctx context.Context, id string) (*Repository, error) {
	r := new(Repository)
	if err := scanOne(ctx, c.db.NewSelect().Model(r).Where("id = ?", id), fmt.Sprintf("repository %s", id)); err != nil {
		return nil, err
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

// SetRepositoryPasswordFile records the password file of a repository (after its key changed),
// or ErrNotFound.
func (c *Catalog) SetRepositoryPasswordFile(ctx context.Context, id, path string) error {
	res, err := c.db.NewUpdate().Model((*Repository)(nil)).Set("password_file = ?", path).Set("updated_at = ?", c.now()).Where("id = ?", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("update repository %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("update repository %s: %w", id, ErrNotFound)
	}
	return nil
}

// RecordGC records that garbage collection of repository id completed at at.
func (c *Catalog) RecordGC(ctx context.Context, id string, at time.Time) error {
	if _, err := c.db.NewUpdate().Model((*Repository)(nil)).Set("gc_at = ?", at.UTC()).Where("id = ?", id).Exec(ctx); err != nil {
		return fmt.Errorf("record garbage collection of repository %s: %w", id, err)
	}
	return nil
}
