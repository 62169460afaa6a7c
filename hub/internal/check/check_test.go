package check

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/repository"
)

type fakeCatalog struct{ repo catalog.Repository }

func (c *fakeCatalog) Repositories(context.Context) ([]catalog.Repository, error) {
	return []catalog.Repository{c.repo}, nil
}

func (c *fakeCatalog) IndexedDisks(context.Context, string) ([]catalog.IndexedDisk, error) {
	return nil, nil
}

func (c *fakeCatalog) ActiveJobIDs(context.Context) (map[string]bool, error) {
	return map[string]bool{}, nil
}

// TestStaleTempFiles: temp files of a writer that died after the repository was opened are
// reported, and removed with repair; a live writer's are not touched.
func TestStaleTempFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := repository.InitDir(t.Context(), dir, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	// A writer that died: its temp directory's lock file exists and nobody holds it.
	dead := filepath.Join(dir, "tmp", "i-dead")
	if err := os.MkdirAll(dead, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lock", "put-1", "put-2"} {
		if err := os.WriteFile(filepath.Join(dead, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cat := &fakeCatalog{repo: catalog.Repository{ID: repo.ID(), Name: "r", Path: dir}}
	c := New(cat, func(context.Context, string) (Repository, error) { return repo, nil }, slog.New(slog.DiscardHandler))

	rep, err := c.Run(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Kind != "stale_temp" || rep.Problems[0].Repaired {
		t.Fatalf("check without repair: %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(dead, "put-1")); err != nil {
		t.Fatalf("a check without repair removed a temp file: %v", err)
	}
	rep, err = c.Run(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.TempsRemoved != 2 || len(rep.Problems) != 1 || !rep.Problems[0].Repaired {
		t.Fatalf("check with repair: %+v", rep)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Fatalf("the dead writer's temp directory survived repair: %v", err)
	}
	if rep, err = c.Run(t.Context(), false); err != nil || !rep.OK() || len(rep.Problems) != 0 {
		t.Fatalf("check after repair: %+v, %v", rep, err)
	}
}
