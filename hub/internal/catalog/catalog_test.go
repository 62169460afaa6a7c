package catalog_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
)

// Open registers the catalog's metrics on the registry in its options, and counts failed queries.
func TestOpenRegistersItsMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := catalogtest.Options(t, catalog.DriverSQLite)
	opts.Registerer = reg
	c, err := catalog.Open(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.VMByContextID(t.Context(), "ctx-x"); err == nil {
		t.Fatal("a query on an unmigrated catalog succeeded")
	}
	want := `
# HELP sendense_hub_catalog_query_errors_total Catalog queries that failed (not counting 'no rows'), by operation.
# TYPE sendense_hub_catalog_query_errors_total counter
sendense_hub_catalog_query_errors_total{operation="DELETE"} 0
sendense_hub_catalog_query_errors_total{operation="INSERT"} 0
sendense_hub_catalog_query_errors_total{operation="OTHER"} 0
sendense_hub_catalog_query_errors_total{operation="SELECT"} 1
sendense_hub_catalog_query_errors_total{operation="UPDATE"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sendense_hub_catalog_query_errors_total"); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, reg, "sendense_hub_catalog_queries_total", "SELECT"); n != 1 {
		t.Fatalf("sendense_hub_catalog_queries_total{operation=\"SELECT\"} = %v, want 1", n)
	}
}

// counterValue returns the value of the series of a counter with label operation=op.
func counterValue(t *testing.T, reg *prometheus.Registry, name, op string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == name && l.GetName() == "operation" && l.GetValue() == op {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{operation=%q} not registered", name, op)
	return 0
}

// The SQLite catalog and its -wal and -shm files are private to the hub's user, whatever the
// umask, and an older world-readable catalog is narrowed when opened.
func TestSQLiteFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "catalog.db")
	c, err := catalog.Open(t.Context(), catalog.Options{SQLitePath: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.MigrateUp(t.Context(), quiet); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if m := fi.Mode().Perm(); m != 0o600 {
				t.Errorf("%s: mode %o, want 600", filepath.Base(p), m)
			}
		}
	}
	check()
	_ = c.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		_ = os.Chmod(p, 0o644)
	}
	c, err = catalog.Open(t.Context(), catalog.Options{SQLitePath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.VMs(t.Context(), catalog.VMFilter{}); err != nil {
		t.Fatal(err)
	}
	check()
}

// A catalog on another host over a connection an attacker on the path could read or change is
// named at start; one on this host or over verified TLS is not.
func TestPlaintextMySQL(t *testing.T) {
	for dsn, want := range map[string]string{
		"u@tcp(db.example:3306)/sendense":                 "no TLS",
		"u@tcp(10.0.0.5:3306)/sendense?tls=false":         "no TLS",
		"u@tcp(db.example:3306)/sendense?tls=preferred":   "TLS only when the server offers it",
		"u@tcp(db.example:3306)/sendense?tls=skip-verify": "TLS without checking the server's certificate",
		"u@tcp(db.example:3306)/sendense?tls=true":        "",
		"u@tcp(127.0.0.1:3306)/sendense":                  "",
		"u@tcp(localhost:3306)/sendense":                  "",
		"u@tcp([::1]:3306)/sendense":                      "",
		"u@unix(/run/mysqld/mysqld.sock)/sendense":        "",
	} {
		if got, err := catalog.PlaintextForTest(dsn); err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", dsn, got, err, want)
		}
	}
}
