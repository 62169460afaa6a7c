package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sendense/sendense/hub/internal/accounts"
	"github.com/sendense/sendense/hub/internal/catalog"
)

func TestUserCommands(t *testing.T) {
	dataDir := t.TempDir()
	hub := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append(args, "--data-dir", dataDir), &out, io.Discard, noEnv)
		return out.String(), err
	}
	if _, err := hub("migrate", "up"); err != nil {
		t.Fatal(err)
	}
	pw := func(s string) string {
		p := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	signIn := func(name, password string) error {
		cat, err := catalog.Open(t.Context(), catalog.Options{SQLitePath: filepath.Join(dataDir, "catalog.db")})
		if err != nil {
			t.Fatal(err)
		}
		defer cat.Close()
		_, _, err = accounts.New(cat, slog.New(slog.DiscardHandler), accounts.Options{}).SignIn(t.Context(), name, password)
		return err
	}

	if out, err := hub("user", "add", "ada", "--role", "admin", "--password-file", pw("first password\n")); err != nil || !strings.Contains(out, "created user ada (admin)") {
		t.Fatalf("user add: %q %v", out, err)
	}
	// Refused: a taken name, an unknown role, a short password, a missing file.
	for _, args := range [][]string{
		{"user", "add", "ada", "--role", "viewer", "--password-file", pw("another password")},
		{"user", "add", "bob", "--role", "root", "--password-file", pw("another password")},
		{"user", "add", "bob", "--role", "viewer", "--password-file", pw("short")},
		{"user", "add", "bob", "--role", "viewer", "--password-file", filepath.Join(dataDir, "missing")},
	} {
		if _, err := hub(args...); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	out, err := hub("user", "list")
	if err != nil || !strings.Contains(out, "ada") || strings.Contains(out, "bob") || strings.Contains(out, "$2") {
		t.Fatalf("user list: %q %v", out, err)
	}
	// The trailing newline of the file is not part of the password.
	if err := signIn("ada", "first password"); err != nil {
		t.Fatalf("sign in with the added password: %v", err)
	}
	if _, err := hub("user", "passwd", "ada", "--password-file", pw("second password")); err != nil {
		t.Fatal(err)
	}
	if err := signIn("ada", "first password"); !errors.Is(err, accounts.ErrBadCredentials) {
		t.Fatalf("old password after passwd: %v, want ErrBadCredentials", err)
	}
	if err := signIn("ada", "second password"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if _, err := hub("user", "rm", "ada"); err != nil {
		t.Fatal(err)
	}
	if err := signIn("ada", "second password"); !errors.Is(err, accounts.ErrBadCredentials) {
		t.Fatalf("removed user signs in: %v", err)
	}
	if _, err := hub("user", "rm", "ada"); err == nil {
		t.Fatal("removing an unknown user succeeded")
	}
}
