package catalog

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/sendense/sendense/migrations"
	"github.com/uptrace/bun/migrate"
)

// MigrationState is one migration and whether it is applied.
type MigrationState struct {
	Name      string
	Comment   string
	Applied   bool
	AppliedAt time.Time
}

func (c *Catalog) migrator() (*migrate.Migrator, error) {
	fsys, err := migrations.FS(c.driver)
	if err != nil {
		return nil, err
	}
	ms := migrate.NewMigrations()
	if err := ms.Discover(fsys); err != nil {
		return nil, fmt.Errorf("load %s migrations: %w", c.driver, err)
	}
	// Mark a migration applied only after it succeeded: MariaDB DDL is not transactional, and a
	// migration marked before it ran would be skipped after a crash half-way.
	return migrate.NewMigrator(c.db, ms, migrate.WithMarkAppliedOnSuccess(true)), nil
}

// withMigrationLock runs fn while holding bun's migration lock, so that two hubs starting at
// once on one MySQL catalog do not migrate concurrently.
func (c *Catalog) withMigrationLock(ctx context.Context, fn func(m *migrate.Migrator) error) error {
	m, err := c.migrator()
	if err != nil {
		return err
	}
	if err := m.Init(ctx); err != nil {
		return fmt.Errorf("create migration tables: %w", err)
	}
	if err := c.lockWithRetry(ctx, m); err != nil {
		return err
	}
	defer func() {
		// Unlock must happen even when ctx was cancelled mid-migration.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = m.Unlock(uctx)
	}()
	return fn(m)
}

// lockWithRetry waits up to a minute for another hub's migration to finish. A lock left by a
// crashed process is reported with the command that clears it.
func (c *Catalog) lockWithRetry(ctx context.Context, m *migrate.Migrator) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := m.Lock(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("migrations are locked by another process; if none is running, clear the lock with `sendense-hub migrate unlock`: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// MigrateUp applies every pending migration, logging each one, and returns their names.
func (c *Catalog) MigrateUp(ctx context.Context, log *slog.Logger) ([]string, error) {
	var applied []string
	err := c.withMigrationLock(ctx, func(m *migrate.Migrator) error {
		pending, err := m.MigrationsWithStatus(ctx)
		if err != nil {
			return fmt.Errorf("read migration status: %w", err)
		}
		for _, p := range pending.Unapplied() {
			log.InfoContext(ctx, "applying catalog migration", "migration", p.Name, "comment", p.Comment, "driver", c.driver)
		}
		group, err := m.Migrate(ctx)
		if group != nil {
			done := group.Migrations
			if err != nil && len(done) > 0 {
				done = done[:len(done)-1] // the last one in the group is the one that failed
			}
			for _, mg := range done {
				applied = append(applied, mg.Name)
			}
		}
		if err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
		return nil
	})
	return applied, err
}

// MigrateDown rolls back the most recently applied group of migrations.
func (c *Catalog) MigrateDown(ctx context.Context, log *slog.Logger) ([]string, error) {
	var rolled []string
	err := c.withMigrationLock(ctx, func(m *migrate.Migrator) error {
		group, err := m.Rollback(ctx)
		if err != nil {
			return fmt.Errorf("migrate down: %w", err)
		}
		if group == nil || group.IsZero() {
			return nil
		}
		for i := len(group.Migrations) - 1; i >= 0; i-- {
			mg := group.Migrations[i]
			log.InfoContext(ctx, "rolled back catalog migration", "migration", mg.Name, "comment", mg.Comment, "driver", c.driver)
			rolled = append(rolled, mg.Name)
		}
		return nil
	})
	return rolled, err
}

// MigrationStatus lists every known migration with its state.
func (c *Catalog) MigrationStatus(ctx context.Context) ([]MigrationState, error) {
	m, err := c.migrator()
	if err != nil {
		return nil, err
	}
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("create migration tables: %w", err)
	}
	ms, err := m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, fmt.Errorf("read migration status: %w", err)
	}
	out := make([]MigrationState, 0, len(ms))
	for _, mg := range ms {
		out = append(out, MigrationState{Name: mg.Name, Comment: mg.Comment, Applied: mg.IsApplied(), AppliedAt: mg.MigratedAt})
	}
	return out, nil
}

// UnlockMigrations clears a migration lock left behind by a crashed process.
func (c *Catalog) UnlockMigrations(ctx context.Context) error {
	m, err := c.migrator()
	if err != nil {
		return err
	}
	if err := m.Init(ctx); err != nil {
		return fmt.Errorf("create migration tables: %w", err)
	}
	return m.Unlock(ctx)
}
