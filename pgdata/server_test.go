package pgdata

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgstow/pgstow/integration/pgtest"
)

// TestServerDatabases reads pg_database and pg_xact straight from the
// data directory of real clusters, after creating, renaming, dropping,
// row-locking and rolling back changes to databases, and compares
// Databases with what the server says. The last database is created
// just before the CHECKPOINT and never read, so its tuple has no hint
// bits and only pg_xact says it committed; the test checks that is so.
func TestServerDatabases(t *testing.T) {
	for _, major := range pgtest.Majors() {
		t.Run(fmt.Sprintf("PostgreSQL%d", major), func(t *testing.T) {
			// No autovacuum: its launcher scans pg_database and would set
			// the hint bits this test needs absent.
			c := pgtest.Start(t, pgtest.Options{Major: major, Conf: []string{"autovacuum = off"}})
			for _, name := range []string{"kept", "to_rename", "to_drop", "row_locked", "key_shared", "rolled_back", `with "quotes" and spaces`} {
				c.Exec(t, "postgres", "CREATE DATABASE "+quoteIdent(name))
			}
			c.Exec(t, "postgres", "ALTER DATABASE to_rename RENAME TO renamed")
			c.Exec(t, "postgres", "DROP DATABASE to_drop")
			// An aborted rename: an aborted new version, an old one whose
			// xmax aborted.
			c.Exec(t, "postgres", "BEGIN; ALTER DATABASE rolled_back RENAME TO never; ROLLBACK")
			// A row lock (xmax with HEAP_XMAX_LOCK_ONLY), then a multixact
			// of two lockers.
			c.Exec(t, "postgres", "BEGIN; SELECT 1 FROM pg_database WHERE datname = 'row_locked' FOR UPDATE; COMMIT")
			keyShareTwice(t, c, "key_shared")
			// The same changes again, right before the CHECKPOINT: the
			// statements above scanned pg_database and hinted the tuples
			// they changed; nothing reads these before the files are.
			for _, name := range []string{"late_to_rename", "late_to_drop", "late_rolled_back"} {
				c.Exec(t, "postgres", "CREATE DATABASE "+name)
			}
			c.Exec(t, "postgres", "SELECT count(*) FROM pg_database") // hint the CREATEs
			c.Exec(t, "postgres", "ALTER DATABASE late_to_rename RENAME TO late_renamed")
			c.Exec(t, "postgres", "DROP DATABASE late_to_drop")
			c.Exec(t, "postgres", "BEGIN; ALTER DATABASE late_rolled_back RENAME TO late_never; ROLLBACK")
			c.Exec(t, "postgres", "CREATE DATABASE fresh")
			c.Exec(t, "postgres", "CHECKPOINT")

			heap := readSegments(t, filepath.Join(c.DataDir, "global", "1262"))
			var read []string
			got, err := Databases(heap, func(name string) ([]byte, error) {
				read = append(read, name)
				return os.ReadFile(filepath.Join(c.DataDir, "pg_xact", name))
			})
			if err != nil {
				t.Fatalf("Databases: %v", err)
			}
			if len(read) == 0 {
				t.Errorf("Databases read no pg_xact file: every tuple had hint bits, the test proves less than it should")
			}
			// Tuples that only pg_xact can judge: the test fails rather
			// than prove less than it says if a server version hints them.
			xmin, xmax := uint16(heapXminCommitted|heapXminInvalid), uint16(heapXmaxCommitted|heapXmaxInvalid)
			assertNoHint(t, heap, "fresh", xmin)            // committed insertion
			assertNoHint(t, heap, "late_renamed", xmin)     // committed update, new version
			assertNoHint(t, heap, "late_to_rename", xmax)   // committed update, old version
			assertNoHint(t, heap, "late_to_drop", xmax)     // committed deletion
			assertNoHint(t, heap, "late_never", xmin)       // aborted update, new version
			assertNoHint(t, heap, "late_rolled_back", xmax) // aborted update, old version

			var want []Database
			for _, row := range c.Query(t, "postgres", "SELECT oid, datname FROM pg_database ORDER BY oid") {
				oid, err := strconv.ParseUint(row[0], 10, 32)
				if err != nil {
					t.Fatalf("oid %q: %v", row[0], err)
				}
				want = append(want, Database{uint32(oid), row[1]})
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Databases differs from SELECT oid, datname FROM pg_database (-server +Databases):\n%s", diff)
			}

			control, err := os.ReadFile(filepath.Join(c.DataDir, "global", "pg_control"))
			if err != nil {
				t.Fatal(err)
			}
			id, err := SystemIdentifier(control)
			if err != nil {
				t.Fatalf("SystemIdentifier: %v", err)
			}
			if want := c.Query(t, "postgres", "SELECT system_identifier FROM pg_control_system()")[0][0]; strconv.FormatUint(id, 10) != want {
				t.Errorf("SystemIdentifier = %d, server says %s", id, want)
			}
		})
	}
}

// keyShareTwice has two sessions hold FOR KEY SHARE on a pg_database row
// at once, so its xmax becomes a lock-only multixact.
func keyShareTwice(t *testing.T, c *pgtest.Cluster, datname string) {
	t.Helper()
	ctx := t.Context()
	sql := "BEGIN; SELECT 1 FROM pg_database WHERE datname = '" + datname + "' FOR KEY SHARE"
	var conns []*pgconn.PgConn
	for range 2 {
		conn, err := pgconn.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		conns = append(conns, conn)
	}
	for _, conn := range conns {
		if _, err := conn.Exec(ctx, "COMMIT").ReadAll(); err != nil {
			t.Fatalf("COMMIT: %v", err)
		}
	}
}

// assertNoHint checks the tuples of database name carry none of the hint
// bits in mask, so that Databases had to ask pg_xact about them.
func assertNoHint(t *testing.T, heap []byte, name string, mask uint16) {
	t.Helper()
	n := 0
	for p := 0; p*pageSize < len(heap); p++ {
		tuples, err := pageTuples(heap[p*pageSize : (p+1)*pageSize])
		if err != nil {
			t.Fatal(err)
		}
		for _, tu := range tuples {
			if tu.name != name {
				continue
			}
			n++
			if tu.infomask&mask != 0 {
				t.Errorf("database %s: tuple has hint bits %#04x (infomask %#04x): pg_xact was not needed", name, tu.infomask&mask, tu.infomask)
			}
		}
	}
	if n == 0 {
		t.Errorf("database %s: no tuple in pg_database's file", name)
	}
}

// readSegments reads a relation's segment files (path, path.1, …) into
// one slice, as a restore concatenates them.
func readSegments(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; ; i++ {
		seg, err := os.ReadFile(path + "." + strconv.Itoa(i))
		if errors.Is(err, fs.ErrNotExist) {
			return b
		}
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, seg...)
	}
}

func quoteIdent(s string) string {
	q := `"`
	for _, r := range s {
		if r == '"' {
			q += `"`
		}
		q += string(r)
	}
	return q + `"`
}
