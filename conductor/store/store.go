// Package store persists nodes, ports and conductors in SQL through
// database/sql: SQLite (modernc.org/sqlite, pure Go) by default, PostgreSQL
// (pgx) when several conductors share the work. Schema migrations are
// embedded and versioned (goose).
//
// Every node and port row carries a version; writes name the version they
// read and fail with node.ErrConflict when it moved, so concurrent writers
// never overwrite each other. The store holds no business rules: which
// writes are allowed is the engine's decision.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pressly/goose/v3"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver

	"github.com/ingot-dev/ingot/conductor/node"
)

//go:embed migrations
var migrations embed.FS

// Dialect names the SQL flavour of a DB.
type Dialect string

// Supported dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is the conductor's persistent store.
type DB struct {
	sql     *sql.DB
	dialect Dialect
	now     func() time.Time

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // prepared statements of the fixed hot queries
}

// Options tune Open. The zero value is ready to use.
type Options struct {
	// Now is the clock used for created_at/updated_at; time.Now if nil.
	Now func() time.Time
	// MaxOpenConns bounds the connection pool; 8 if zero.
	MaxOpenConns int
}

// ParseDSN splits a database URL into a dialect and the driver's DSN.
// Accepted forms: "sqlite:///abs/path.db", "sqlite://rel/path.db",
// "postgres://…" and "postgresql://…".
func ParseDSN(url string) (Dialect, string, error) {
	switch {
	case strings.HasPrefix(url, "sqlite://"):
		path := strings.TrimPrefix(url, "sqlite://")
		if path == "" {
			return "", "", fmt.Errorf("parse database url %q: empty sqlite path", url)
		}
		q := ""
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path, q = path[:i], path[i+1:]
		}
		dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)" +
			"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
		if q != "" {
			dsn += "&" + q
		}
		return SQLite, dsn, nil
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return Postgres, url, nil
	}
	return "", "", fmt.Errorf("parse database url %q: want sqlite:// or postgres://", url)
}

// SQLiteURL returns the database URL of an SQLite file at path.
func SQLiteURL(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return "sqlite://" + abs
}

// Open connects to the database at url (see ParseDSN) and applies pending
// migrations.
func Open(ctx context.Context, url string, opts Options) (*DB, error) {
	dialect, dsn, err := ParseDSN(url)
	if err != nil {
		return nil, err
	}
	driver := "sqlite"
	if dialect == Postgres {
		driver = "pgx"
	}
	sdb, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	max := opts.MaxOpenConns
	if max == 0 {
		max = 8
	}
	sdb.SetMaxOpenConns(max)
	sdb.SetMaxIdleConns(max)
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	d := &DB{sql: sdb, dialect: dialect, now: opts.Now, stmts: map[string]*sql.Stmt{}}
	if d.now == nil {
		d.now = time.Now
	}
	if err := d.migrate(ctx); err != nil {
		sdb.Close()
		return nil, err
	}
	return d, nil
}

func (d *DB) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrations, "migrations/"+string(d.dialect))
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	gd := goose.DialectSQLite3
	if d.dialect == Postgres {
		gd = goose.DialectPostgres
	}
	p, err := goose.NewProvider(gd, d.sql, sub)
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	return nil
}

// Close closes the database.
func (d *DB) Close() error {
	d.stmtMu.Lock()
	for _, st := range d.stmts {
		st.Close()
	}
	d.stmts = map[string]*sql.Stmt{}
	d.stmtMu.Unlock()
	return d.sql.Close()
}

// prepared returns a prepared statement for a fixed query (written with
// ?-placeholders), preparing it once. SQLite parses a statement on every
// unprepared call, which dominated the heartbeat path.
func (d *DB) prepared(ctx context.Context, q string) (*sql.Stmt, error) {
	d.stmtMu.Lock()
	defer d.stmtMu.Unlock()
	if st, ok := d.stmts[q]; ok {
		return st, nil
	}
	st, err := d.sql.PrepareContext(ctx, d.rebind(q))
	if err != nil {
		return nil, err
	}
	d.stmts[q] = st
	return st, nil
}

// execPrepared runs a fixed statement through the statement cache.
func (d *DB) execPrepared(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := d.prepared(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// queryPrepared runs a fixed query through the statement cache.
func (d *DB) queryPrepared(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := d.prepared(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// Dialect reports the database flavour.
func (d *DB) Dialect() Dialect { return d.dialect }

// collect runs a query and scans every row with scan.
func collect[T any](ctx context.Context, d *DB, what, q string, args []any, scan func(scanner) (T, error)) ([]T, error) {
	rows, err := d.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// rebind turns ?-placeholders into $n for PostgreSQL.
func (d *DB) rebind(q string) string {
	if d.dialect != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

func (d *DB) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return d.sql.ExecContext(ctx, d.rebind(q), args...)
}

func (d *DB) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return d.sql.QueryContext(ctx, d.rebind(q), args...)
}

// isUnique reports whether err is a unique-constraint violation.
func isUnique(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || strings.Contains(s, "SQLSTATE 23505") ||
		strings.Contains(s, "duplicate key value")
}

// timeLayout stores times as fixed-width UTC text, which sorts and compares
// correctly in every dialect and matches Ironic's rendering.
const timeLayout = "2006-01-02T15:04:05.000000-07:00"

func fmtTime(t time.Time) sql.NullString {
	if t.IsZero() {
		return sql.NullString{}
	}
	return sql.NullString{String: t.UTC().Format(timeLayout), Valid: true}
}

func parseTime(s sql.NullString) (time.Time, error) {
	if !s.Valid || s.String == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(timeLayout, s.String)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse stored time %q: %w", s.String, err)
	}
	return t, nil
}

func nullStr(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func nullBool(b *bool) sql.NullBool {
	if b == nil {
		return sql.NullBool{}
	}
	return sql.NullBool{Bool: *b, Valid: true}
}

func boolPtr(b sql.NullBool) *bool {
	if !b.Valid {
		return nil
	}
	v := b.Bool
	return &v
}

var errNoRows = sql.ErrNoRows

func notFound(kind, ident string) error {
	return node.Errorf(node.ErrNotFound, "%s %s could not be found.", kind, ident)
}

func isNoRows(err error) bool { return errors.Is(err, errNoRows) }
