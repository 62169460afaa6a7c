package catalog_test

import (
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/shared/api"
)

// The end of a garbage collection is recorded per repository and read back with the
// repositories, which is what the collection's schedule counts from after a restart.
func TestRecordGC(t *testing.T) {
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		for _, r := range []*catalog.Repository{
			{ID: "repo-1", Name: "vault", Kind: api.RepositoryLocal, Path: "/srv/vault", ChunkSize: 4 << 20},
			{ID: "repo-2", Name: "other", Kind: api.RepositoryLocal, Path: "/srv/other", ChunkSize: 4 << 20},
		} {
			if err := c.CreateRepository(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		at := time.Date(2026, 12, 4, 3, 0, 0, 123456000, time.FixedZone("CET", 3600))
		if err := c.RecordGC(ctx, "repo-1", at); err != nil {
			t.Fatal(err)
		}
		rs, err := c.Repositories(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]time.Time{}
		for _, r := range rs {
			got[r.ID] = r.GCAt
		}
		if !got["repo-1"].Equal(at) || !got["repo-2"].IsZero() || len(got) != 2 {
			t.Fatalf("collections recorded %v, want repo-1 at %v and repo-2 never", got, at)
		}
	})
}
