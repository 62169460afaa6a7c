package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// User is a local user of the web console. Only a password hash is stored.
type User struct {
	bun.BaseModel `bun:"table:console_users"`

	ID           string    `bun:"id,pk"`
	Name         string    `bun:"name,notnull"`
	Role         string    `bun:"role,notnull"` // admin, operator, viewer: the API tokens' roles
	PasswordHash string    `bun:"password_hash,notnull"`
	CreatedAt    time.Time `bun:"created_at,notnull"`
	UpdatedAt    time.Time `bun:"updated_at,notnull"`
}

// ConsoleSession is a signed-in console session. Only the SHA-256 of the cookie's secret is stored.
type ConsoleSession struct {
	bun.BaseModel `bun:"table:console_sessions"`

	IDHash    string    `bun:"id_hash,pk"`
	UserID    string    `bun:"user_id,notnull"`
	ExpiresAt time.Time `bun:"expires_at,notnull"`
	CreatedAt time.Time `bun:"created_at,notnull"`
}

// CreateUser stores a new console user; a name already taken → ErrConflict.
func (c *Catalog) CreateUser(ctx context.Context, u *User) error {
	if _, err := c.UserByName(ctx, u.Name); err == nil {
		return fmt.Errorf("user %s already exists: %w", u.Name, ErrConflict)
	}
	now := c.now()
	u.CreatedAt, u.UpdatedAt = now, now
	if _, err := c.db.NewInsert().Model(u).Exec(ctx); err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("user %s already exists: %w", u.Name, ErrConflict)
		}
		return fmt.Errorf("insert user %s: %w", u.Name, err)
	}
	return nil
}

// UserByName returns one console user or ErrNotFound.
func (c *Catalog) UserByName(ctx context.Context, name string) (*User, error) {
	u := new(User)
	if err := scanOne(ctx, c.db.NewSelect().Model(u).Where("name = ?", name), "user "+name); err != nil {
		return nil, err
	}
	return u, nil
}

// Users lists console users by name.
func (c *Catalog) Users(ctx context.Context) ([]User, error) {
	var us []User
	if err := c.db.NewSelect().Model(&us).Order("name ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return us, nil
}

// SetUserPassword replaces a user's password hash and ends every session of the user, in one
// transaction: a changed password signs out whoever held the old one.
func (c *Catalog) SetUserPassword(ctx context.Context, name, hash string) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		u := new(User)
		if err := scanOne(ctx, tx.NewSelect().Model(u).Where("name = ?", name), "user "+name); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*User)(nil)).Set("password_hash = ?", hash).Set("updated_at = ?", c.now()).
			Where("id = ?", u.ID).Exec(ctx); err != nil {
			return fmt.Errorf("set password of user %s: %w", name, err)
		}
		if _, err := tx.NewDelete().Model((*ConsoleSession)(nil)).Where("user_id = ?", u.ID).Exec(ctx); err != nil {
			return fmt.Errorf("end sessions of user %s: %w", name, err)
		}
		return nil
	})
}

// DeleteUser removes a user and its sessions; an unknown name → ErrNotFound.
func (c *Catalog) DeleteUser(ctx context.Context, name string) error {
	return c.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		u := new(User)
		if err := scanOne(ctx, tx.NewSelect().Model(u).Where("name = ?", name), "user "+name); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*ConsoleSession)(nil)).Where("user_id = ?", u.ID).Exec(ctx); err != nil {
			return fmt.Errorf("end sessions of user %s: %w", name, err)
		}
		if _, err := tx.NewDelete().Model((*User)(nil)).Where("id = ?", u.ID).Exec(ctx); err != nil {
			return fmt.Errorf("delete user %s: %w", name, err)
		}
		return nil
	})
}

// CreateConsoleSession stores a session (its secret hashed by the caller) and removes the
// sessions that have expired by its CreatedAt (the catalog's clock when zero), so that
// sessions never signed out do not pile up.
func (c *Catalog) CreateConsoleSession(ctx context.Context, s *ConsoleSession) error {
	if s.CreatedAt.IsZero() {
		s.CreatedAt = c.now()
	}
	if _, err := c.db.NewDelete().Model((*ConsoleSession)(nil)).Where("expires_at <= ?", s.CreatedAt).Exec(ctx); err != nil {
		return fmt.Errorf("remove expired console sessions: %w", err)
	}
	if _, err := c.db.NewInsert().Model(s).Exec(ctx); err != nil {
		return fmt.Errorf("insert console session: %w", err)
	}
	return nil
}

// ConsoleSessionUser returns the user of an unexpired session, or ErrNotFound for an unknown or
// expired one (expired rows are removed on the way).
func (c *Catalog) ConsoleSessionUser(ctx context.Context, idHash string, now time.Time) (*User, error) {
	s := new(ConsoleSession)
	if err := scanOne(ctx, c.db.NewSelect().Model(s).Where("id_hash = ?", idHash), "console session"); err != nil {
		return nil, err
	}
	if !now.Before(s.ExpiresAt) {
		_, _ = c.db.NewDelete().Model((*ConsoleSession)(nil)).Where("expires_at <= ?", now).Exec(ctx)
		return nil, fmt.Errorf("console session expired at %s: %w", s.ExpiresAt.UTC().Format(time.RFC3339), ErrNotFound)
	}
	u := new(User)
	if err := scanOne(ctx, c.db.NewSelect().Model(u).Where("id = ?", s.UserID), "user of console session"); err != nil {
		return nil, err
	}
	return u, nil
}

// DeleteConsoleSession ends one session; an unknown one is not an error (signing out twice is fine).
func (c *Catalog) DeleteConsoleSession(ctx context.Context, idHash string) error {
	if _, err := c.db.NewDelete().Model((*ConsoleSession)(nil)).Where("id_hash = ?", idHash).Exec(ctx); err != nil {
		return fmt.Errorf("delete console session: %w", err)
	}
	return nil
}
