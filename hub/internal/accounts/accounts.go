// Package accounts owns the web console's local users: bcrypt password hashes, roles (the API
// tokens' admin, operator and viewer) and signed-in sessions stored hashed with an expiry.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode"

	"golang.org/x/crypto/bcrypt"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/identity"
)

// Sentinel errors callers branch on.
var (
	// ErrBadCredentials is returned for an unknown user or a wrong password alike, so that a
	// caller cannot tell which names exist.
	ErrBadCredentials = errors.New("wrong user name or password")
	// ErrNoSession is returned for a session that is unknown, expired or whose user is gone.
	ErrNoSession = errors.New("not signed in")
	// ErrInvalid is wrapped by every error about bad input (name, role, password).
	ErrInvalid = errors.New("invalid input")
	// ErrUnknownUser wraps ErrBadCredentials when no user has the name: the hub's own records
	// leave such names out (they are often passwords typed in the wrong field), while what the
	// client sees and how long it waits stay those of a wrong password.
	ErrUnknownUser = fmt.Errorf("%w (no such user)", ErrBadCredentials)
)

// MinPasswordLength is the shortest password Add and SetPassword accept. bcrypt reads at most
// 72 bytes, so longer passwords are refused rather than silently cut.
const (
	MinPasswordLength = 10
	MaxPasswordLength = 72
)

// DefaultSessionLifetime is how long a console session lasts from sign-in.
const DefaultSessionLifetime = 12 * time.Hour

// store is what accounts needs from the catalog.
type store interface {
	CreateUser(ctx context.Context, u *catalog.User) error
	UserByName(ctx context.Context, name string) (*catalog.User, error)
	Users(ctx context.Context) ([]catalog.User, error)
	SetUserPassword(ctx context.Context, name, hash string) error
	DeleteUser(ctx context.Context, name string) error
	CreateConsoleSession(ctx context.Context, s *catalog.ConsoleSession) error
	ConsoleSessionUser(ctx context.Context, idHash string, now time.Time) (*catalog.User, error)
	DeleteConsoleSession(ctx context.Context, idHash string) error
}

var _ store = (*catalog.Catalog)(nil)

// User is a console user as callers see it (never with its hash).
type User struct {
	ID        string
	Name      string
	Role      string
	CreatedAt time.Time
}

// Service manages users and sessions.
type Service struct {
	st       store
	log      *slog.Logger
	now      func() time.Time
	lifetime time.Duration
	cost     int
	dummy    []byte // a hash compared against for unknown users, so both paths cost the same
}

// Options tune a Service; zero fields select the defaults.
type Options struct {
	Now             func() time.Time
	SessionLifetime time.Duration
	// BcryptCost defaults to bcrypt.DefaultCost (10, ~50 ms a check); tests lower it.
	BcryptCost int
}

// New returns a Service over the catalog.
func New(st store, log *slog.Logger, o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SessionLifetime <= 0 {
		o.SessionLifetime = DefaultSessionLifetime
	}
	if o.BcryptCost == 0 {
		o.BcryptCost = bcrypt.DefaultCost
	}
	dummy, _ := bcrypt.GenerateFromPassword([]byte("no such user, no such password"), o.BcryptCost)
	return &Service{st: st, log: log, now: o.Now, lifetime: o.SessionLifetime, cost: o.BcryptCost, dummy: dummy}
}

// ValidName checks a user name: 1 to 64 letters, digits, '.', '-', '_' or '@'.
func ValidName(name string) error { return validName(name) }

func validName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: user name must be 1 to 64 characters", ErrInvalid)
	}
	for _, r := range name {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '-' || r == '_' || r == '@') {
			return fmt.Errorf("%w: user name %q may hold letters, digits, '.', '-', '_' and '@' only", ErrInvalid, name)
		}
	}
	return nil
}

func (s *Service) hash(password string) (string, error) {
	if len(password) < MinPasswordLength {
		return "", fmt.Errorf("%w: password must be at least %d characters", ErrInvalid, MinPasswordLength)
	}
	if len(password) > MaxPasswordLength {
		return "", fmt.Errorf("%w: password must be at most %d bytes", ErrInvalid, MaxPasswordLength)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// Add creates a user; a taken name → catalog.ErrConflict.
func (s *Service) Add(ctx context.Context, name, role, password string) (User, error) {
	if err := validName(name); err != nil {
		return User{}, err
	}
	if !identity.ValidRole(role) {
		return User{}, fmt.Errorf("%w: role %q is not admin, operator or viewer", ErrInvalid, role)
	}
	h, err := s.hash(password)
	if err != nil {
		return User{}, err
	}
	id, err := random(9)
	if err != nil {
		return User{}, err
	}
	u := &catalog.User{ID: "usr-" + id, Name: name, Role: role, PasswordHash: h}
	if err := s.st.CreateUser(ctx, u); err != nil {
		return User{}, err
	}
	s.log.InfoContext(ctx, "console user created", "user", name, "role", role)
	return User{ID: u.ID, Name: u.Name, Role: u.Role, CreatedAt: u.CreatedAt}, nil
}

// List returns every user by name.
func (s *Service) List(ctx context.Context) ([]User, error) {
	us, err := s.st.Users(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]User, 0, len(us))
	for _, u := range us {
		out = append(out, User{ID: u.ID, Name: u.Name, Role: u.Role, CreatedAt: u.CreatedAt})
	}
	return out, nil
}

// SetPassword replaces a user's password and ends the user's sessions.
func (s *Service) SetPassword(ctx context.Context, name, password string) error {
	h, err := s.hash(password)
	if err != nil {
		return err
	}
	if err := s.st.SetUserPassword(ctx, name, h); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "console user password changed", "user", name)
	return nil
}

// Remove deletes a user and its sessions.
func (s *Service) Remove(ctx context.Context, name string) error {
	if err := s.st.DeleteUser(ctx, name); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "console user removed", "user", name)
	return nil
}

// SignIn checks the password and starts a session. It returns the session secret (for the
// cookie; only its SHA-256 is stored) and the user. Unknown user and wrong password are the
// same ErrBadCredentials, and cost the same bcrypt comparison.
func (s *Service) SignIn(ctx context.Context, name, password string) (string, User, error) {
	u, err := s.st.UserByName(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && len(password) > MaxPasswordLength) {
		_ = bcrypt.CompareHashAndPassword(s.dummy, []byte(password))
		if err != nil {
			return "", User{}, ErrUnknownUser
		}
		return "", User{}, ErrBadCredentials
	}
	if err != nil {
		return "", User{}, err
	}
	if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
		return "", User{}, ErrBadCredentials
	}
	secret, err := random(32)
	if err != nil {
		return "", User{}, err
	}
	now := s.now()
	if err := s.st.CreateConsoleSession(ctx, &catalog.ConsoleSession{IDHash: HashSecret(secret), UserID: u.ID, CreatedAt: now, ExpiresAt: now.Add(s.lifetime)}); err != nil {
		return "", User{}, err
	}
	return secret, User{ID: u.ID, Name: u.Name, Role: u.Role, CreatedAt: u.CreatedAt}, nil
}

// Session returns the user of a live session, or ErrNoSession.
func (s *Service) Session(ctx context.Context, secret string) (User, error) {
	if secret == "" {
		return User{}, ErrNoSession
	}
	u, err := s.st.ConsoleSessionUser(ctx, HashSecret(secret), s.now())
	if errors.Is(err, catalog.ErrNotFound) {
		return User{}, ErrNoSession
	}
	if err != nil {
		return User{}, err
	}
	return User{ID: u.ID, Name: u.Name, Role: u.Role, CreatedAt: u.CreatedAt}, nil
}

// SignOut ends a session; an unknown one is not an error.
func (s *Service) SignOut(ctx context.Context, secret string) error {
	return s.st.DeleteConsoleSession(ctx, HashSecret(secret))
}

// Lifetime is how long a new session lasts.
func (s *Service) Lifetime() time.Duration { return s.lifetime }

// HashSecret is the stored form of a session secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func random(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
