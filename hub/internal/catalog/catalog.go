// Package catalog owns the hub's database: connection, schema migrations and every query. It is
// the only user of Bun. MySQL/MariaDB serves production; an embedded SQLite file is the
// zero-setup default.
package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/schema"
	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// Drivers reported by Catalog.Driver.
const (
	DriverSQLite = "sqlite"
	DriverMySQL  = "mysql"
)

// Sentinel errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// Options selects and configures the database.
type Options struct {
	// MySQLDSN, when set, selects MySQL/MariaDB ("user:pass@tcp(host:3306)/sendense").
	MySQLDSN string
	// MySQLPassword, when set, replaces the DSN's password (read from a secret file).
	MySQLPassword string
	// SQLitePath is the catalog file used when MySQLDSN is empty.
	SQLitePath string
	// ConnectTimeout bounds the first connection; an unreachable server fails within it.
	ConnectTimeout time.Duration
	// Log receives failed queries at debug level, never with argument values (nil: discarded).
	Log *slog.Logger
	// Registerer, when set, receives sendense_hub_catalog_query_errors_total{operation}.
	Registerer prometheus.Registerer
}

// Catalog is an open catalog database.
type Catalog struct {
	db     *bun.DB
	driver string
	now    func() time.Time
	slots  slotBatcher // RecordSlots's shared transactions
}

// Open connects to the catalog and checks that it answers. It does not migrate.
func Open(ctx context.Context, opts Options) (*Catalog, error) {
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	var (
		sqldb   *sql.DB
		dialect schema.Dialect
		driver  string
	)
	if opts.MySQLDSN != "" {
		cfg, err := mysqlConfig(opts.MySQLDSN, opts.MySQLPassword, opts.ConnectTimeout)
		if err != nil {
			return nil, err
		}
		if why := plaintext(cfg); why != "" && opts.Log != nil {
			opts.Log.Warn("the connection to the MySQL/MariaDB catalog is open to the network path: "+why+
				"; add tls=true to the DSN (or the name of a TLS configuration with the server's CA)", "addr", cfg.Addr)
		}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, fmt.Errorf("mysql dsn: %w", err)
		}
		sqldb = sql.OpenDB(conn)
		sqldb.SetMaxOpenConns(32)
		sqldb.SetMaxIdleConns(8)
		sqldb.SetConnMaxLifetime(30 * time.Minute)
		dialect, driver = mysqldialect.New(), DriverMySQL
	} else {
		if opts.SQLitePath == "" {
			return nil, errors.New("catalog: neither a MySQL DSN nor a SQLite path is set")
		}
		if err := os.MkdirAll(filepath.Dir(opts.SQLitePath), 0o750); err != nil {
			return nil, fmt.Errorf("create catalog directory: %w", err)
		}
		if err := privateFiles(opts.SQLitePath); err != nil {
			return nil, err
		}
		var err error
		sqldb, err = sql.Open("sqlite", sqliteDSN(opts.SQLitePath))
		if err != nil {
			return nil, fmt.Errorf("open sqlite catalog %s: %w", opts.SQLitePath, err)
		}
		// SQLite serialises writers; a few connections let readers proceed under WAL while
		// busy_timeout queues writers instead of failing them.
		sqldb.SetMaxOpenConns(4)
		dialect, driver = sqlitedialect.New(), DriverSQLite
	}
	// Ping before bun.NewDB: the MySQL dialect queries the server version as it is attached and
	// would otherwise block without a deadline on an unreachable server.
	pctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	if err := sqldb.PingContext(pctx); err != nil {
		_ = sqldb.Close()
		if pctx.Err() != nil {
			return nil, fmt.Errorf("connect to %s catalog: no answer within %s: %w", driver, opts.ConnectTimeout, err)
		}
		return nil, fmt.Errorf("connect to %s catalog: %w", driver, err)
	}
	c := &Catalog{db: bun.NewDB(sqldb, dialect), driver: driver, now: wallClock}
	c.instrument(opts.Log, opts.Registerer)
	return c, nil
}

// sqliteDSN enables foreign keys (the vm_disks.job_id constraint depends on it), WAL, full fsync
// on commit, a busy timeout, and BEGIN IMMEDIATE so that read-then-write transactions queue
// instead of failing with SQLITE_BUSY.
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Set("_busy_timeout", "15000")
	q.Set("_foreign_keys", "1")
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_txlock", "immediate")
	return "file:" + path + "?" + q.Encode()
}

func mysqlConfig(dsn, password string, timeout time.Duration) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		// The parser's message may quote the DSN; never repeat a secret.
		return nil, errors.New("mysql dsn: cannot parse (expected user:password@tcp(host:3306)/dbname)")
	}
	if password != "" {
		cfg.Passwd = password
	}
	if cfg.DBName == "" {
		return nil, errors.New("mysql dsn: no database name (expected .../dbname)")
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if cfg.Timeout == 0 || cfg.Timeout > timeout {
		cfg.Timeout = timeout
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	// Conditional UPDATEs check that they hit exactly the rows they meant to. MySQL reports only
	// rows whose values changed unless asked for rows found, so an UPDATE that sets what is
	// already there (protecting a protected backup) would look like a miss.
	cfg.ClientFoundRows = true
	return cfg, nil
}

// plaintext says how a MySQL connection over the network fails to be encrypted and
// authenticated ("" when it is, or when it stays on this host): the catalog carries the login,
// token hashes, console sessions and the inventory.
func plaintext(cfg *mysql.Config) string {
	if cfg.Net == "unix" {
		return ""
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		host = cfg.Addr
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return ""
	}
	switch cfg.TLSConfig {
	case "", "false":
		return "no TLS"
	case "preferred":
		return "TLS only when the server offers it"
	case "skip-verify":
		return "TLS without checking the server's certificate"
	}
	return ""
}

// privateFiles makes the SQLite catalog file exist with mode 0600 before SQLite opens it (SQLite
// gives its -wal and -shm files the mode of the database file), and narrows the mode of files
// an older hub created world-readable. The catalog holds token hashes and the whole inventory.
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open catalog file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("open catalog file: %w", err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("make %s private: %w", p, err)
		}
	}
	return nil
}

// RedactDSN returns the DSN with its password replaced, for messages.
func RedactDSN(dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(unparsable dsn)"
	}
	if cfg.Passwd != "" {
		cfg.Passwd = "xxxxx"
	}
	return cfg.FormatDSN()
}

// Driver names the database in use: "sqlite" or "mysql".
func (c *Catalog) Driver() string { return c.driver }

// Ping checks that the database answers.
func (c *Catalog) Ping(ctx context.Context) error { return c.db.PingContext(ctx) }

// Close releases the connections.
func (c *Catalog) Close() error { return c.db.Close() }

// SetClock replaces the clock used for created_at/updated_at and time-based conditions (tests).
func (c *Catalog) SetClock(now func() time.Time) {
	c.now = func() time.Time { return now().UTC().Truncate(time.Microsecond) }
}

// wallClock is UTC truncated to the microsecond, the precision of DATETIME(6), so that a time
// written and read back compares equal on both dialects.
func wallClock() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Now returns the catalog's current time.
func (c *Catalog) Now() time.Time { return c.now() }

// instrument counts queries in sendense_hub_catalog_queries_total{operation}, logs failed ones at
// debug level (never with argument values) and counts those in
// sendense_hub_catalog_query_errors_total{operation}, registered on reg when it is not nil.
func (c *Catalog) instrument(log *slog.Logger, reg prometheus.Registerer) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	queries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sendense_hub_catalog_queries_total",
		Help: "Catalog queries run, by operation.",
	}, []string{"operation"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sendense_hub_catalog_query_errors_total",
		Help: "Catalog queries that failed (not counting 'no rows'), by operation.",
	}, []string{"operation"})
	for _, op := range []string{"SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"} {
		queries.WithLabelValues(op)
		errs.WithLabelValues(op)
	}
	if reg != nil {
		reg.MustRegister(queries, errs)
	}
	c.db.AddQueryHook(queryHook{log: log, queries: queries, errs: errs})
}

type queryHook struct {
	log           *slog.Logger
	queries, errs *prometheus.CounterVec
}

func (h queryHook) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

func (h queryHook) AfterQuery(ctx context.Context, e *bun.QueryEvent) {
	op := e.Operation()
	switch op {
	case "SELECT", "INSERT", "UPDATE", "DELETE":
	default:
		op = "OTHER" // DDL, transactions: a bounded label either way
	}
	h.queries.WithLabelValues(op).Inc()
	if e.Err == nil || errors.Is(e.Err, sql.ErrNoRows) {
		return
	}
	h.errs.WithLabelValues(op).Inc()
	h.log.DebugContext(ctx, "catalog query failed", "operation", op, "duration_seconds", time.Since(e.StartTime).Seconds(), "err", e.Err)
}

// isUniqueViolation reports whether err is a duplicate-key error on either dialect.
func isUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1062
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// scanOne runs a query for one row: no row is ErrNotFound; both outcomes name the row with what.
func scanOne(ctx context.Context, q *bun.SelectQuery, what string) error {
	err := q.Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("select %s: %w", what, err)
	}
	return nil
}
