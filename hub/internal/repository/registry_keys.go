package repository

import (
	"context"
	"fmt"

	"github.com/sendense/sendense/hub/internal/catalog"
)

// OpenKeys opens the repository named name for key management with the secret in passwordFile,
// or with its recorded password file when passwordFile is empty. The repository is not shared
// with other users of the registry: the caller closes it.
func (g *Registry) OpenKeys(ctx context.Context, name, passwordFile string) (*catalog.Repository, *Repository, error) {
	rec, err := g.cat.RepositoryByName(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if passwordFile == "" {
		passwordFile = rec.PasswordFile
	}
	r, err := g.openRecord(ctx, rec, passwordFile)
	if err != nil {
		return nil, nil, fmt.Errorf("repository %q: %w", rec.Name, err)
	}
	if r.ID() != rec.ID {
		_ = r.Close()
		return nil, nil, fmt.Errorf("repository %q: %s holds repository %s, the catalog expects %s", rec.Name, rec.Path, r.ID(), rec.ID)
	}
	if !r.Encrypted() {
		_ = r.Close()
		return nil, nil, fmt.Errorf("repository %q: %w", rec.Name, ErrNotEncrypted)
	}
	return rec, r, nil
}

// SetPasswordFile records passwordFile (made absolute) as the file the hub reads to open the
// repository named name, after checking that it unlocks it.
func (g *Registry) SetPasswordFile(ctx context.Context, name, passwordFile string) error {
	abs, err := secretRef(passwordFile)
	if err != nil {
		return err
	}
	rec, r, err := g.OpenKeys(ctx, name, abs)
	if err != nil {
		return err
	}
	_ = r.Close()
	return g.cat.SetRepositoryPasswordFile(ctx, rec.ID, abs)
}
