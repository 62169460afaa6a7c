package hubtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"testing"

	"github.com/sendense/sendense/shared/testenv"
)

// EnvMySQLDSN names the MariaDB/MySQL server for tests (scripts/test.sh starts one), as a DSN
// without a database: "user:pass@tcp(127.0.0.1:33061)/".
const EnvMySQLDSN = "SENDENSE_TEST_MYSQL_DSN"

var dsnRE = regexp.MustCompile(`^([^:@]+)(?::([^@]*))?@tcp\(([^:)]+):(\d+)\)/`)

// Dialects are the catalogs integration tests run against.
var Dialects = []string{"sqlite", "mysql"}

// CatalogArgs returns the hub flags for a fresh catalog of the dialect: nothing for SQLite (the
// data directory's file), --db with a new database for MySQL, dropped when the test ends. The
// database is made with the mariadb client that comes with the server.
func CatalogArgs(t testing.TB, dialect string) []string {
	t.Helper()
	if dialect == "sqlite" {
		return nil
	}
	base := os.Getenv(EnvMySQLDSN)
	if base == "" {
		skip(t, "no MySQL/MariaDB test server: set %s (scripts/test.sh starts MariaDB and sets it)", EnvMySQLDSN)
	}
	m := dsnRE.FindStringSubmatch(base)
	if m == nil {
		t.Fatalf("%s=%q is not user:pass@tcp(host:port)/", EnvMySQLDSN, base)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "sendense_agent_test_" + hex.EncodeToString(b[:])
	sql := func(stmt string) error {
		cmd := exec.Command("mariadb", "--protocol=tcp", "-h", m[3], "-P", m[4], "-u", m[1], "-e", stmt)
		cmd.Env = append(os.Environ(), "MYSQL_PWD="+m[2])
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := sql("CREATE DATABASE " + name + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() { _ = sql("DROP DATABASE IF EXISTS " + name) })
	return []string{"--db", base + name}
}

// skip skips, or fails under SENDENSE_TEST_STRICT (make test sets it: nothing may be skipped).
func skip(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.Skip(t, format, args...)
}
