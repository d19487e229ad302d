package pgtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// sqlTimeout bounds one Exec or Query. It is not the test's context, so
// that cleanup functions (which run after that is cancelled) can use SQL.
const sqlTimeout = 10 * time.Minute

// DSN returns a keyword/value connection string for database db over TCP.
// Add "replication=true" (or "replication=database") for a walsender.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", c.Port, db)
}

// URL returns the connection string for database db as a postgres:// URL.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// Exec runs sql in database db with the simple query protocol, so it may
// hold several statements (which then run in one implicit transaction:
// statements such as CREATE DATABASE must come alone). It fails the test on
// any error.
func (c *Cluster) Exec(t testing.TB, db, sql string) {
	t.Helper()
	if _, err := c.exec(db, sql); err != nil {
		t.Fatalf("pgtest: PostgreSQL %d, database %s: %s: %v", c.Major, db, sql, err)
	}
}

// ExecErr is Exec returning the error instead of failing the test, for
// goroutines that write while a test runs (t.Fatal must not be called
// from them).
func (c *Cluster) ExecErr(db, sql string) error {
	_, err := c.exec(db, sql)
	return err
}

// Query runs sql in database db and returns the rows in PostgreSQL's text
// format, a NULL as "". Meant for one statement; with several, the rows of
// all are concatenated. It fails the test on any error.
func (c *Cluster) Query(t testing.TB, db, sql string) [][]string {
	t.Helper()
	results, err := c.exec(db, sql)
	if err != nil {
		t.Fatalf("pgtest: PostgreSQL %d, database %s: %s: %v", c.Major, db, sql, err)
	}
	rows := [][]string{}
	for _, r := range results {
		for _, row := range r.Rows {
			text := make([]string, len(row))
			for i, v := range row {
				text[i] = string(v)
			}
			rows = append(rows, text)
		}
	}
	return rows
}

func (c *Cluster) exec(db, sql string) ([]*pgconn.Result, error) {
	return execDSN(c.DSN(db), sql)
}

func execDSN(dsn, sql string) ([]*pgconn.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		if r.Err != nil {
			return nil, r.Err
		}
	}
	return results, nil
}
