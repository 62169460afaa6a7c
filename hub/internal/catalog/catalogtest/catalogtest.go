// Package catalogtest opens throwaway catalogs on real databases for tests: an SQLite file in a
// temporary directory, and a fresh database on the MariaDB/MySQL server named by
// SENDENSE_TEST_MYSQL_DSN (scripts/test.sh starts one).
package catalogtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/shared/testenv"
)

// EnvMySQLDSN names a MySQL/MariaDB server for tests, as a DSN without a database name, e.g.
// "root@tcp(127.0.0.1:33061)/". Each test creates and drops its own database on it.
const EnvMySQLDSN = "SENDENSE_TEST_MYSQL_DSN"

// EnvStrict, when set, turns every "dependency missing" skip into a failure: `make test` sets it
// so that nothing is silently skipped.
const EnvStrict = testenv.EnvStrict

// Skip skips the test with a message saying how to get its dependency, or fails it under
// SENDENSE_TEST_STRICT (testenv.Skip).
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.Skip(t, format, args...)
}

// Dialects are the catalog drivers every catalog test runs against.
var Dialects = []string{catalog.DriverSQLite, catalog.DriverMySQL}

// ForEachDialect runs fn as a subtest against a freshly migrated catalog of each dialect.
func ForEachDialect(t *testing.T, fn func(t *testing.T, c *catalog.Catalog)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(d, func(t *testing.T) {
			c := Open(t, d)
			if _, err := c.MigrateUp(t.Context(), slog.New(slog.DiscardHandler)); err != nil {
				t.Fatalf("migrate up: %v", err)
			}
			fn(t, c)
		})
	}
}

// Open returns an empty, unmigrated catalog of the given dialect, closed (and dropped) when the
// test ends.
func Open(t testing.TB, dialect string) *catalog.Catalog {
	t.Helper()
	opts := Options(t, dialect)
	c, err := catalog.Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("open %s catalog: %v", dialect, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Options returns catalog options for a new empty database of the given dialect.
func Options(t testing.TB, dialect string) catalog.Options {
	t.Helper()
	switch dialect {
	case catalog.DriverSQLite:
		return catalog.Options{SQLitePath: filepath.Join(t.TempDir(), "catalog.db")}
	case catalog.DriverMySQL:
		return catalog.Options{MySQLDSN: NewMySQLDatabase(t)}
	default:
		t.Fatalf("unknown dialect %q", dialect)
		return catalog.Options{}
	}
}

// NewMySQLDatabase creates an empty database on the test server and returns its DSN. The
// database is dropped when the test ends.
func NewMySQLDatabase(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvMySQLDSN)
	if base == "" {
		Skip(t, "no MySQL/MariaDB test server: set %s (scripts/test.sh starts MariaDB and sets it)", EnvMySQLDSN)
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvMySQLDSN, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "sendense_test_" + hex.EncodeToString(b[:])
	cfg.DBName = ""
	cfg.Timeout = 5 * time.Second
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("open mysql: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		_ = admin.Close()
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name)
		_ = admin.Close()
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}
