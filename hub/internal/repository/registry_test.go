package repository_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

// gatedCatalog holds every repository lookup until the test lets it go, so that a test can act
// while an open is in progress. With ignoreCancel the lookup does not give up when its ctx ends
// (an open stuck in a system call, say).
type gatedCatalog struct {
	*catalog.Catalog
	entered      chan struct{}
	gate         chan struct{}
	ignoreCancel bool
	ended        chan error // what each held lookup saw when it ended
}

func newGatedCatalog(c *catalog.Catalog, ignoreCancel bool) *gatedCatalog {
	return &gatedCatalog{Catalog: c, entered: make(chan struct{}, 8), gate: make(chan struct{}),
		ignoreCancel: ignoreCancel, ended: make(chan error, 8)}
}

func (g *gatedCatalog) RepositoryByID(ctx context.Context, id string) (*catalog.Repository, error) {
	g.entered <- struct{}{}
	if g.ignoreCancel {
		<-g.gate
		ctx = context.WithoutCancel(ctx) // and it then succeeds
	} else {
		select {
		case <-g.gate:
		case <-ctx.Done():
			g.ended <- ctx.Err()
			return nil, ctx.Err()
		}
	}
	g.ended <- nil
	return g.Catalog.RepositoryByID(ctx, id)
}

// waitFor polls cond until it holds or the test's deadline nears.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if d, ok := t.Deadline(); ok && time.Until(d) < 5*time.Second {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// An upload that gives up while its repository is being opened must not fail the uploads that
// wait for the same open: the open goes on for them. Once every caller has left, the open is
// cancelled and the next call opens anew; Close cancels the opens in progress and waits for
// them, and nothing opens after it.
func TestRegistryOpenOutlivesItsCallers(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		creator := repository.NewRegistry(c, nil, nil)
		t.Cleanup(func() { _ = creator.Close() })
		rec, err := creator.Create(t.Context(), "r", filepath.Join(t.TempDir(), "repo"), 0)
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			r   *repository.Repository
			err error
		}
		openAsync := func(ctx context.Context, g *repository.Registry) chan result {
			ch := make(chan result, 1)
			go func() {
				r, err := g.Open(ctx, rec.ID)
				ch <- result{r, err}
			}()
			return ch
		}

		t.Run("first caller leaves", func(t *testing.T) {
			gc := newGatedCatalog(c, false)
			g := repository.NewRegistry(gc, nil, nil)
			t.Cleanup(func() { _ = g.Close() })
			first, cancelFirst := context.WithCancel(t.Context())
			a := openAsync(first, g)
			<-gc.entered
			b := openAsync(t.Context(), g)
			waitFor(t, "the second caller to join the open", func() bool { return repository.RegistryWaitersForTest(g, rec.ID) == 2 })
			cancelFirst()
			if res := <-a; !errors.Is(res.err, context.Canceled) {
				t.Fatalf("the caller that gave up got %v, want context.Canceled", res.err)
			}
			close(gc.gate)
			res := <-b
			if res.err != nil || res.r == nil {
				t.Fatalf("the caller still waiting got %v: the first caller's cancellation failed it", res.err)
			}
			if err := <-gc.ended; err != nil {
				t.Fatalf("the open saw %v", err)
			}
			if r, err := g.Open(t.Context(), rec.ID); err != nil || r != res.r {
				t.Fatalf("Open after: %p, %v; want the repository kept, %p", r, err, res.r)
			}
			if n := repository.RegistryOpensForTest(g); n != 1 {
				t.Fatalf("opened %d times, want once", n)
			}
		})

		t.Run("every caller leaves", func(t *testing.T) {
			gc := newGatedCatalog(c, false)
			g := repository.NewRegistry(gc, nil, nil)
			t.Cleanup(func() { _ = g.Close() })
			ctx, cancel := context.WithCancel(t.Context())
			a := openAsync(ctx, g)
			<-gc.entered
			cancel()
			if res := <-a; !errors.Is(res.err, context.Canceled) {
				t.Fatalf("the caller that gave up got %v", res.err)
			}
			if err := <-gc.ended; !errors.Is(err, context.Canceled) {
				t.Fatalf("with nobody waiting the open saw %v, want it cancelled", err)
			}
			close(gc.gate)
			if r, err := g.Open(t.Context(), rec.ID); err != nil || r == nil {
				t.Fatalf("the next Open: %v; an abandoned open must not be kept", err)
			}
			if n := repository.RegistryOpensForTest(g); n != 2 {
				t.Fatalf("opened %d times, want twice (the abandoned open, then the next)", n)
			}
		})

		t.Run("close waits", func(t *testing.T) {
			gc := newGatedCatalog(c, true)
			g := repository.NewRegistry(gc, nil, nil)
			a := openAsync(t.Context(), g)
			<-gc.entered
			closed := make(chan error, 1)
			go func() { closed <- g.Close() }()
			// The probe's ctx is cancelled beforehand, so that a probe that comes before Close
			// leaves at once instead of waiting for the held open.
			probe, cancelProbe := context.WithCancel(t.Context())
			cancelProbe()
			waitFor(t, "Close to refuse new opens", func() bool {
				_, err := g.Open(probe, rec.ID)
				return errors.Is(err, repository.ErrRegistryClosed)
			})
			select {
			case err := <-closed:
				t.Fatalf("Close returned (%v) while an open was still in progress", err)
			case <-time.After(50 * time.Millisecond):
			}
			close(gc.gate)
			if err := <-closed; err != nil {
				t.Fatal(err)
			}
			if res := <-a; !errors.Is(res.err, repository.ErrRegistryClosed) || res.r != nil {
				t.Fatalf("the open that finished after Close gave %p, %v; want ErrRegistryClosed", res.r, res.err)
			}
		})
	})
}
