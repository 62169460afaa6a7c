// Package storage manages the hub's backup repositories as a whole: each one is a record in the
// catalog and a directory on disk, and this package keeps the two in step.
package storage

import (
	"context"
	"errors"
	"fmt"

	"path/filepath"
	"sync"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
)

// DefaultName is the repository created in the data directory on first start.
const DefaultName = "default"

// repoCatalog is what storage needs from the catalog.
type repoCatalog interface {
	CreateRepository(ctx context.Context, r *catalog.Repository) error
	RepositoryByName(ctx context.Context, name string) (*catalog.Repository, error)
	RepositoryByID(ctx context.Context, id string) (*catalog.Repository, error)
	Repositories(ctx context.Context) ([]catalog.Repository, error)
}

// Manager opens repositories by catalog id and creates new ones. It is safe for concurrent use.
type Manager struct {
	cat repoCatalog

	mu   sync.Mutex
	open map[string]*repository.Repository
}

// NewManager returns a manager over the catalog's repositories.
func NewManager(cat repoCatalog) *Manager {
	return &Manager{cat: cat, open: map[string]*repository.Repository{}}
}

// EnsureDefault makes sure the repository named "default" exists, creating it at dir when the
// catalog has none, and returns it.
func (m *Manager) EnsureDefault(ctx context.Context, dir string) (*catalog.Repository, *repository.Repository, error) {
	rec, err := m.cat.RepositoryByName(ctx, DefaultName)
	if err == nil {
		l, err := m.Open(ctx, rec.ID)
		return rec, l, err
	}
	if !errors.Is(err, catalog.ErrNotFound) {
		return nil, nil, err
	}
	rec, l, err := m.Create(ctx, DefaultName, dir, 0)
	if errors.Is(err, catalog.ErrConflict) {
		// Another hub instance created it at the same moment.
		rec, err = m.cat.RepositoryByName(ctx, DefaultName)
		if err != nil {
			return nil, nil, err
		}
		l, err = m.Open(ctx, rec.ID)
	}
	return rec, l, err
}

// Create initialises a repository directory (or adopts an existing repository there) and records
// it in the catalog under name.
func (m *Manager) Create(ctx context.Context, name, dir string, chunkSize int64) (*catalog.Repository, *repository.Repository, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("repository path %s: %w", dir, err)
	}
	if _, err := m.cat.RepositoryByName(ctx, name); err == nil {
		return nil, nil, fmt.Errorf("repository %q: %w", name, catalog.ErrConflict)
	}
	l, err := repository.OpenDir(ctx, abs, nil)
	if errors.Is(err, repository.ErrNotRepository) {
		l, err = repository.InitDir(ctx, abs, chunkSize, nil)
	}
	if err != nil {
		return nil, nil, err
	}
	if chunkSize != 0 && l.ChunkSize() != chunkSize {
		return nil, nil, fmt.Errorf("%s already holds a repository with chunk size %d", abs, l.ChunkSize())
	}
	rec := &catalog.Repository{ID: l.ID(), Name: name, Kind: "local", Path: abs, ChunkSize: l.ChunkSize()}
	if err := m.cat.CreateRepository(ctx, rec); err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	m.open[rec.ID] = l
	m.mu.Unlock()
	return rec, l, nil
}

// Open returns the repository with that catalog id, checking that the directory still holds the
// repository the catalog recorded.
func (m *Manager) Open(ctx context.Context, id string) (*repository.Repository, error) {
	m.mu.Lock()
	l, ok := m.open[id]
	m.mu.Unlock()
	if ok {
		return l, nil
	}
	rec, err := m.cat.RepositoryByID(ctx, id)
	if err != nil {
		return nil, err
	}
	l, err = repository.OpenDir(ctx, rec.Path, nil)
	if err != nil {
		return nil, fmt.Errorf("repository %q: %w", rec.Name, err)
	}
	if l.ID() != rec.ID {
		return nil, fmt.Errorf("repository %q: %s holds repository %s, the catalog expects %s", rec.Name, rec.Path, l.ID(), rec.ID)
	}
	m.mu.Lock()
	m.open[id] = l
	m.mu.Unlock()
	return l, nil
}

// List returns every repository record.
func (m *Manager) List(ctx context.Context) ([]catalog.Repository, error) {
	return m.cat.Repositories(ctx)
}
