package chaostest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sendense/sendense/shared/testenv"
)

// mariaDB is a private MariaDB server for the trials that restart the catalog's database: the
// shared test server (scripts/mariadb.sh's default) stays untouched for the other tests. It is
// started by scripts/mariadb.sh in its own directory and port, and stopped when the test ends.
type mariaDB struct {
	t      *testing.T
	script string
	dir    string
	port   int
	dsn    string // user:pass@tcp(127.0.0.1:PORT)/
}

var dsnRE = regexp.MustCompile(`SENDENSE_TEST_MYSQL_DSN='([^']+)'`)

func startMariaDB(t *testing.T) *mariaDB {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/mariadbd"); err != nil && os.Getuid() != 0 {
		testenv.Skip(t, "MariaDB is not installed: run scripts/mariadb.sh once as root (it installs mariadb-server with apt)")
	}
	// A short directory: the server's Unix socket lives in it (sun_path holds 108 bytes).
	dir, err := os.MkdirTemp("", "sdchaos-db-")
	if err != nil {
		t.Fatal(err)
	}
	db := &mariaDB{t: t, script: filepath.Join(repoRoot(t), "scripts", "mariadb.sh"), dir: dir}
	t.Cleanup(func() {
		db.stop(syscall.SIGTERM)
		_ = os.RemoveAll(dir)
	})
	// The server binds a port found free a moment before: another process may take it in
	// between, and then the server exits at once. A few fresh ports make that harmless.
	var out string
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		db.port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		out, err = db.tryRun("env")
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(db.errorLog(), "Address already in use") {
			t.Fatalf("scripts/mariadb.sh env: %v\n%s", err, db.errorLog())
		}
		t.Logf("MariaDB could not bind port %d (taken since it was found free); trying another", db.port)
		_ = os.Remove(filepath.Join(dir, "error.log"))
	}
	m := dsnRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("scripts/mariadb.sh env printed no DSN: %q", out)
	}
	db.dsn = m[1]
	return db
}

func (db *mariaDB) run(arg string) string {
	db.t.Helper()
	out, err := db.tryRun(arg)
	if err != nil {
		db.t.Fatalf("scripts/mariadb.sh %s: %v\n%s", arg, err, db.errorLog())
	}
	return out
}

// tryRun runs scripts/mariadb.sh arg for this server and returns its standard output; an
// error carries its standard error.
func (db *mariaDB) tryRun(arg string) (string, error) {
	cmd := exec.Command(db.script, arg)
	cmd.Env = append(os.Environ(), "SENDENSE_MARIADB_DIR="+db.dir, "SENDENSE_MARIADB_PORT="+strconv.Itoa(db.port))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, stderr.String())
	}
	return stdout.String(), nil
}

func (db *mariaDB) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(db.dir, "error.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// createDatabase makes a fresh database and returns the hub's DSN for it.
func (db *mariaDB) createDatabase() string {
	db.t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "sendense_chaos_" + hex.EncodeToString(b[:])
	cmd := exec.Command("mariadb", "--socket="+filepath.Join(db.dir, "mysqld.sock"), "--user=root",
		"-e", "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
	if out, err := cmd.CombinedOutput(); err != nil {
		db.t.Fatalf("create database: %v: %s", err, out)
	}
	return db.dsn + name
}

func (db *mariaDB) pid() int {
	b, err := os.ReadFile(filepath.Join(db.dir, "mysqld.pid"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// stop signals the server and waits until its process is gone.
func (db *mariaDB) stop(sig syscall.Signal) {
	pid := db.pid()
	if pid <= 0 {
		return
	}
	_ = syscall.Kill(pid, sig)
	deadline := time.Now().Add(2 * time.Minute)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(time.Minute)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = os.Remove(filepath.Join(db.dir, "mysqld.pid"))
}

// restart stops the server with sig and starts it again (scripts/mariadb.sh start waits until
// it answers).
func (db *mariaDB) restart(sig syscall.Signal, down time.Duration) {
	db.t.Helper()
	db.stop(sig)
	time.Sleep(down)
	db.run("start")
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses, which may itself hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
