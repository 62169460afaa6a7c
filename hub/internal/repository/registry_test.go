package repository_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/shared/api"
)

// TestRegistryCreateValidates: every way of creating a repository (the API, the command line,
// the default at first start) goes through Create, which refuses bad names and chunk sizes
// before it touches the catalog or the disk.
func TestRegistryCreateValidates(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		g := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = g.Close() })
		for _, tc := range []struct {
			name, field string
			chunkSize   int64
		}{
			{"", "name", 0},
			{"with space", "name", 0},
			{"a/b", "name", 0},
			{`a\b`, "name", 0},
			{"tab\there", "name", 0},
			{string(make([]byte, repository.MaxNameLen+1)), "name", 0},
			{"ok", "chunk_size", 1000},
			{"ok", "chunk_size", 32 << 10},
			{"ok", "chunk_size", 128 << 20},
			{"ok", "chunk_size", 3 << 20},
		} {
			dir := filepath.Join(t.TempDir(), "repo")
			_, err := g.Create(ctx, tc.name, dir, tc.chunkSize)
			var fe *api.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("Create(%q, chunk size %d): %v, want a field error on %s", tc.name, tc.chunkSize, err, tc.field)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused Create(%q) touched the disk: %v", tc.name, err)
			}
		}
		if rs, err := g.List(ctx); err != nil || len(rs) != 0 {
			t.Fatalf("refused creations recorded %v, %v", rs, err)
		}

		dir := filepath.Join(t.TempDir(), "repo")
		rec, err := g.Create(ctx, "main", dir, 128<<10)
		if err != nil {
			t.Fatal(err)
		}
		if rec.ChunkSize != 128<<10 || rec.Path != dir || rec.Kind != "local" {
			t.Fatalf("created %+v", rec)
		}
		if _, err := g.Create(ctx, "main", filepath.Join(t.TempDir(), "other"), 0); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("Create with a name in use: %v, want ErrConflict", err)
		}
		if _, err := g.Create(ctx, "again", dir, 64<<10); err == nil {
			t.Fatal("adopting a repository with another chunk size succeeded")
		}
		r, err := g.Open(ctx, rec.ID)
		if err != nil || r.ID() != rec.ID || r.ChunkSize() != 128<<10 {
			t.Fatalf("Open = %v, %v", r, err)
		}
		if again, _ := g.Open(ctx, rec.ID); again != r {
			t.Fatal("Open did not return the repository it has open")
		}
		// Another registry (another hub process) opens the same repository.
		other := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = other.Close() })
		if r2, err := other.Open(ctx, rec.ID); err != nil || r2.ID() != rec.ID {
			t.Fatalf("a second registry's Open = %v", err)
		}
		def, dr, err := g.EnsureDefault(ctx, filepath.Join(t.TempDir(), "default"))
		if err != nil || def.Name != repository.DefaultName || dr.ChunkSize() != repository.DefaultChunkSize {
			t.Fatalf("EnsureDefault = %+v, %v", def, err)
		}
		if def2, _, err := other.EnsureDefault(ctx, "/nonexistent"); err != nil || def2.ID != def.ID {
			t.Fatalf("a second EnsureDefault = %+v, %v; want the existing default", def2, err)
		}
	})
}

// An encrypted repository's secret may come from the hub's environment (--password-file
// env:NAME): the catalog records the reference, never the value; the repository opens while the
// variable holds the password and is refused, naming the variable, when it is unset or wrong.
func TestRegistryPasswordFromEnvironment(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		const password = "a password only the environment knows"
		t.Setenv("SENDENSE_TEST_REPO_PASSWORD", password)
		g := repository.NewRegistry(c, nil, nil)
		g.SetKDFCost(repository.KDF{Name: "argon2id", Time: 1, MemoryKiB: 64, Threads: 1})
		t.Cleanup(func() { _ = g.Close() })
		if _, err := g.CreateEncrypted(ctx, "envkey", filepath.Join(t.TempDir(), "r"), 0, "env:"); err == nil {
			t.Fatal("env: without a variable name was accepted")
		}
		rec, err := g.CreateEncrypted(ctx, "envkey", filepath.Join(t.TempDir(), "repo"), 0, "env:SENDENSE_TEST_REPO_PASSWORD")
		if err != nil {
			t.Fatal(err)
		}
		if rec.PasswordFile != "env:SENDENSE_TEST_REPO_PASSWORD" {
			t.Fatalf("recorded %q", rec.PasswordFile)
		}
		rs, err := c.Repositories(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.PasswordFile == password || r.Path == password {
				t.Fatal("the catalog holds the password")
			}
		}
		other := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = other.Close() })
		r, err := other.Open(ctx, rec.ID)
		if err != nil {
			t.Fatalf("open with the variable set: %v", err)
		}
		if !r.Encrypted() {
			t.Fatal("not encrypted")
		}
		t.Setenv("SENDENSE_TEST_REPO_PASSWORD", "")
		third := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = third.Close() })
		if _, err := third.Open(ctx, rec.ID); err == nil || !strings.Contains(err.Error(), "SENDENSE_TEST_REPO_PASSWORD is not set") {
			t.Fatalf("open with the variable unset: %v", err)
		}
		t.Setenv("SENDENSE_TEST_REPO_PASSWORD", "not the password")
		fourth := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = fourth.Close() })
		if _, err := fourth.Open(ctx, rec.ID); err == nil || !strings.Contains(err.Error(), `repository "envkey"`) {
			t.Fatalf("open with a wrong password: %v", err)
		}
	})
}

// The first uploads into an encrypted repository the hub has not opened yet arrive together:
// they share one open, and so one derivation of the key, and all get the same repository. An
// open that fails is everyone's failure and is not kept: the next call opens anew.
func TestRegistryOpensOnceForConcurrentCalls(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		passwordFile := filepath.Join(t.TempDir(), "password")
		if err := os.WriteFile(passwordFile, []byte("the right password\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		creator := repository.NewRegistry(c, nil, nil) // the CLI, say
		creator.SetKDFCost(repository.KDF{Name: "argon2id", Time: 1, MemoryKiB: 8 << 10, Threads: 1})
		t.Cleanup(func() { _ = creator.Close() })
		rec, err := creator.CreateEncrypted(ctx, "enc", filepath.Join(t.TempDir(), "repo"), 0, passwordFile)
		if err != nil {
			t.Fatal(err)
		}
		openAll := func(g *repository.Registry, n int) ([]*repository.Repository, []error) {
			rs, errs := make([]*repository.Repository, n), make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					rs[i], errs[i] = g.Open(ctx, rec.ID)
				})
			}
			close(start)
			wg.Wait()
			return rs, errs
		}

		hub := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = hub.Close() })
		rs, errs := openAll(hub, 16)
		for i := range rs {
			if errs[i] != nil || rs[i] != rs[0] || !rs[i].Encrypted() {
				t.Fatalf("call %d: %p, %v; want the one encrypted repository %p", i, rs[i], errs[i], rs[0])
			}
		}
		if n := repository.RegistryOpensForTest(hub); n != 1 {
			t.Fatalf("16 calls at once opened the repository %d times, want once", n)
		}

		if err := os.WriteFile(passwordFile, []byte("a wrong password\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		failing := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = failing.Close() })
		_, errs = openAll(failing, 8)
		for i, err := range errs {
			if err == nil {
				t.Fatalf("call %d opened the repository with a wrong password", i)
			}
		}
		if err := os.WriteFile(passwordFile, []byte("the right password\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if r, err := failing.Open(ctx, rec.ID); err != nil || !r.Encrypted() {
			t.Fatalf("Open after the password was put right: %v; a failed open must not be kept", err)
		}
	})
}
