package catalog_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
)

var quiet = slog.New(slog.DiscardHandler)

// tables are created by the migrations, each in a different one, and dropped by their downs.
var tables = []string{"vm_disks", "upload_slots", "policies", "events", "restore_jobs", "instant_recoveries", "copy_runs"}

// columns are added by migrations to tables created before them; the downs run above drop them
// (SQLite refuses to drop an indexed column, so a down that forgets an index fails there).
var columns = [][2]string{{"backup_jobs", "phase"}, {"sources", "instance_uuid"}, {"restore_tests", "paths"}, {"policies", "paths"}, {"policies", "target_repository_id"}}

func TestMigrateUpDownUp(t *testing.T) {
	for _, d := range catalogtest.Dialects {
		t.Run(d, func(t *testing.T) {
			ctx := t.Context()
			c := catalogtest.Open(t, d)

			applied, err := c.MigrateUp(ctx, quiet)
			if err != nil {
				t.Fatalf("up: %v", err)
			}
			if len(applied) == 0 {
				t.Fatal("up applied nothing on an empty catalog")
			}
			assertAllApplied(t, c, true)
			checkJobIDConstraint(t, c)
			for _, col := range columns {
				if err := catalog.ProbeColumn(ctx, c, col[0], col[1]); err != nil {
					t.Fatalf("%s.%s after up: %v", col[0], col[1], err)
				}
			}
			for _, table := range tables {
				if err := catalog.ProbeTable(ctx, c, table); err != nil {
					t.Fatalf("%s after up: %v", table, err)
				}
			}

			again, err := c.MigrateUp(ctx, quiet)
			if err != nil || len(again) != 0 {
				t.Fatalf("second up: applied %v, err %v; want nothing", again, err)
			}

			rolled, err := c.MigrateDown(ctx, quiet)
			if err != nil {
				t.Fatalf("down: %v", err)
			}
			if len(rolled) != len(applied) {
				t.Fatalf("down rolled back %v, want %v", rolled, applied)
			}
			assertAllApplied(t, c, false)
			for _, table := range tables {
				if err := catalog.ProbeTable(ctx, c, table); err == nil {
					t.Fatalf("%s still exists after down", table)
				}
			}

			if _, err := c.MigrateUp(ctx, quiet); err != nil {
				t.Fatalf("up after down: %v", err)
			}
			assertAllApplied(t, c, true)
			checkJobIDConstraint(t, c)
		})
	}
}

func assertAllApplied(t *testing.T, c *catalog.Catalog, want bool) {
	t.Helper()
	st, err := c.MigrationStatus(t.Context())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if len(st) == 0 {
		t.Fatal("no migrations known")
	}
	for _, m := range st {
		if m.Applied != want {
			t.Errorf("migration %s_%s applied=%v, want %v", m.Name, m.Comment, m.Applied, want)
		}
	}
}

// checkJobIDConstraint proves vm_disks.job_id is nullable and, when set, must name a real job.
func checkJobIDConstraint(t *testing.T, c *catalog.Catalog) {
	t.Helper()
	ctx := t.Context()
	ctxID := catalog.SeedVMForTest(t, c)
	if err := catalog.InsertDiskForTest(ctx, c, ctxID, "disk-2000", ""); err != nil {
		t.Fatalf("insert disk with NULL job_id: %v", err)
	}
	err := catalog.InsertDiskForTest(ctx, c, ctxID, "disk-2001", "job-does-not-exist")
	if err == nil {
		t.Fatal("insert disk with a non-existent job_id succeeded; the foreign key is not enforced")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "foreign key") {
		t.Fatalf("insert with bad job_id failed for another reason: %v", err)
	}
	jobID := catalog.SeedJobForTest(t, c, ctxID)
	if err := catalog.InsertDiskForTest(ctx, c, ctxID, "disk-2002", jobID); err != nil {
		t.Fatalf("insert disk with an existing job_id: %v", err)
	}
	catalog.CleanSeedForTest(t, c)
}

func TestOpenUnreachableMySQLFailsFast(t *testing.T) {
	// 127.0.0.1:1 refuses at once; 192.0.2.1 (TEST-NET-1) is routed nowhere and times out.
	for _, dsn := range []string{
		"sendense:secret-pw@tcp(127.0.0.1:1)/sendense",
		"sendense:secret-pw@tcp(192.0.2.1:3306)/sendense",
	} {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := catalog.Open(ctx, catalog.Options{MySQLDSN: dsn, ConnectTimeout: 3 * time.Second})
		cancel()
		took := time.Since(start)
		if err == nil {
			t.Fatalf("%s: open succeeded", catalog.RedactDSN(dsn))
		}
		if took > 15*time.Second {
			t.Errorf("%s: took %s to fail; want a few seconds", catalog.RedactDSN(dsn), took)
		}
		if strings.Contains(err.Error(), "secret-pw") {
			t.Errorf("error leaks the password: %v", err)
		}
		if !strings.Contains(err.Error(), "connect to mysql catalog") {
			t.Errorf("error does not say what failed: %v", err)
		}
	}
}

func TestBadMySQLDSN(t *testing.T) {
	_, err := catalog.Open(t.Context(), catalog.Options{MySQLDSN: "not a dsn at all :secret@@"})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("want a parse error without the secret, got %v", err)
	}
	_, err = catalog.Open(t.Context(), catalog.Options{MySQLDSN: "u:p@tcp(127.0.0.1:3306)/"})
	if err == nil || !strings.Contains(err.Error(), "database name") {
		t.Fatalf("want a missing database name error, got %v", err)
	}
}
