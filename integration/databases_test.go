package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
)

// dbFingerprintSQL sums up db_rows of one database.
const dbFingerprintSQL = "SELECT count(*) || ':' || md5(string_agg(id || note, ',' ORDER BY id)) FROM db_rows"

// TestRestoreDatabases: restore --database keep of a cluster that also
// holds the database other. keep and postgres hold exactly the backup's
// rows; other's relation files and relation map are zero-filled
// placeholders of their recorded size. Connecting to other fails with a
// FATAL for that connection only (no PANIC: other sessions live on, and
// so does the server while autovacuum keeps trying other), and DROP
// DATABASE other works. An unknown name fails before anything is
// written, listing the backup's databases.
func TestRestoreDatabases(t *testing.T) {
	t.Parallel()
	for _, major := range edgeMajors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			started := time.Now()
			defer func() { t.Logf("TestRestoreDatabases/pg%d took %s", major, time.Since(started).Round(time.Second)) }()
			repoDir := t.TempDir()
			repoURL := "file://" + repoDir
			c := pgtest.Start(t, pgtest.Options{Major: major})
			wantPostgres := seedBeforeBackup(t, c)
			want := map[string]string{}
			for _, db := range []string{"keep", "other"} {
				c.Exec(t, "postgres", "CREATE DATABASE "+db)
				c.Exec(t, db, "CREATE TABLE db_rows (id int PRIMARY KEY, note text)")
				c.Exec(t, db, fmt.Sprintf("INSERT INTO db_rows SELECT g, '%s ' || md5(g::text) FROM generate_series(1, 30000) g", db))
				want[db] = c.Query(t, db, dbFingerprintSQL)[0][0]
			}
			oid := func(db string) uint32 {
				s := c.Query(t, "postgres", "SELECT oid FROM pg_database WHERE datname = '"+db+"'")[0][0]
				n, err := strconv.ParseUint(s, 10, 32)
				if err != nil {
					t.Fatal(err)
				}
				return uint32(n)
			}
			keepOID, otherOID := oid("keep"), oid("other")
			id := cliBackup(t, c, repoURL)
			b := readManifest(t, repoDir, id)
			// After the backup: in no restore of it.
			c.Exec(t, "keep", "INSERT INTO db_rows VALUES (100001, 'late')")

			t.Run("unknown name", func(t *testing.T) {
				dir := filepath.Join(pgtest.TempDir(t), "data")
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				r := runCLI(t, 2*time.Minute, nil, "restore", "--repo", repoURL, "--backup", id, "-D", dir, "--database", "keep", "--database", "nosuch")
				t.Logf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
				if r.code != 1 {
					t.Errorf("exit %d, want 1", r.code)
				}
				for _, w := range []string{"nosuch", "keep", "other", "postgres"} {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("the refusal does not name %q:\n%s", w, r.stderr)
					}
				}
				if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
					t.Errorf("the refused restore wrote into %s: %v %v", dir, entries, err)
				}
			})

			dir := filepath.Join(pgtest.TempDir(t), "data")
			rec := cliRestore(t, repoURL, id, dir, "--database", "keep")
			otherBytes := checkPlaceholders(t, b, dir, keepOID, otherOID)
			if n := summaryInt(t, rec, "placeholders"); n == 0 {
				t.Errorf("placeholders=0 in the summary")
			}
			// Only the chunks that hold bytes of written files are
			// needed (chunks pack small files together, so some of
			// other's bytes come along).
			var written []string
			var all int64
			for _, f := range b.Files {
				if f.Type == manifest.TypeFile && !placeholderOf(f.Path, otherOID) {
					written = append(written, f.Path)
				}
			}
			for _, a := range b.Archives {
				for _, c := range a.Chunks {
					all += c.RawSize
				}
			}
			need := chunkBytesCovering(t, b, written...)
			got := summaryInt(t, rec, "bytes_fetched")
			t.Logf("restore --database keep fetched %d bytes; the chunks of the written files hold %d, all chunks %d, other's relation files are %d bytes", got, need, all, otherBytes)
			if got > need {
				t.Errorf("restore --database keep fetched %d bytes, more than the %d of the chunks that hold the written files", got, need)
			}
			if t.Failed() {
				t.FailNow()
			}

			// Autovacuum visits every database it has statistics for,
			// other too once a connection to it has been tried; the
			// backend type in the log tells its workers' lines apart.
			appendFile(t, filepath.Join(dir, "postgresql.auto.conf"),
				"autovacuum = on\nautovacuum_naptime = 1\nlog_line_prefix = '%m [%p] %b '\n")
			r := pgtest.StartDir(t, major, dir)
			serverLog := filepath.Join(r.Dir, "server.log") // pgtest writes the log there
			pgtest.Eventually(t, 2*time.Minute, "the restored server to finish recovery", func() bool {
				return r.Query(t, "postgres", "SELECT pg_is_in_recovery()")[0][0] == "f"
			})
			if got := r.Query(t, "keep", dbFingerprintSQL)[0][0]; got != want["keep"] {
				t.Errorf("keep holds %s, before the backup %s", got, want["keep"])
			}
			if got := fingerprint(t, r); got != wantPostgres {
				t.Errorf("postgres holds %s, before the backup %s", got, wantPostgres)
			}
			// A session of keep is open while someone connects to other.
			// The attempt fails with the FATAL docs/restore.md shows, for
			// that connection only.
			ctx := t.Context()
			held, err := pgconn.Connect(ctx, r.DSN("keep"))
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close(context.WithoutCancel(ctx))
			mapMsg := fmt.Sprintf(`relation mapping file "base/%d/pg_filenode.map" contains invalid data`, otherOID)
			err = r.ExecErr("other", "SELECT count(*) FROM db_rows")
			t.Logf("PostgreSQL %d: connecting to the placeholder database other: %v", major, err)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Message != mapMsg {
				t.Errorf("connecting to the placeholder database other: %v; docs/restore.md says FATAL: %s", err, mapMsg)
			}
			if _, err := held.Exec(ctx, "SELECT count(*) FROM db_rows").ReadAll(); err != nil {
				t.Errorf("the session of keep ended when other was connected to: %v", err)
			}
			// Autovacuum workers now visit other every second or so and
			// get the same FATAL; the server stays up through it.
			avLine := "autovacuum worker FATAL:  " + mapMsg
			pgtest.Eventually(t, time.Minute, "two autovacuum workers to have visited other", func() bool {
				data, err := os.ReadFile(serverLog)
				return err == nil && strings.Count(string(data), avLine) >= 2
			})
			data, err := os.ReadFile(serverLog)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d autovacuum workers got the FATAL for other by now", strings.Count(string(data), avLine))
			for _, bad := range []string{"PANIC", "terminating any other active server processes", "all server processes terminated"} {
				if strings.Contains(string(data), bad) {
					t.Errorf("the server log has %q:\n%s", bad, data)
				}
			}
			if _, err := held.Exec(ctx, "SELECT count(*) FROM db_rows").ReadAll(); err != nil {
				t.Errorf("the session of keep ended while autovacuum visited other: %v", err)
			}
			if got := r.Query(t, "keep", "SELECT count(*) FROM db_rows")[0][0]; got != "30000" {
				t.Errorf("keep holds %s rows while autovacuum visits other, want 30000", got)
			}
			r.Exec(t, "postgres", "DROP DATABASE other")
			if dbs := r.Query(t, "postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")[0][0]; dbs != "keep,postgres,template0,template1" {
				t.Errorf("databases after DROP DATABASE other: %s", dbs)
			}
			if _, err := os.Stat(filepath.Join(dir, "base", strconv.FormatUint(uint64(otherOID), 10))); !os.IsNotExist(err) {
				t.Errorf("other's directory is still there after DROP DATABASE: %v", err)
			}
			// The cluster still works: write, checkpoint, restart.
			r.Exec(t, "keep", "INSERT INTO db_rows VALUES (200001, 'after')")
			r.Exec(t, "postgres", "CHECKPOINT")
			r.Restart(t)
			if got := r.Query(t, "keep", "SELECT count(*) FROM db_rows")[0][0]; got != "30001" {
				t.Errorf("keep holds %s rows after a write and a restart, want 30001", got)
			}
			r.Stop(t)

			// The one-command CI seed: restore --start --database.
			seed := seedDir(t)
			args := []string{"restore", "--repo", repoURL, "--backup", id, "-D", seed, "--database", "keep", "--start"}
			if major != 15 {
				args = append(args, "--pg-bin", c.BinDir) // Debian's bindir holds only 15
			}
			t0 := time.Now()
			out := runCLI(t, 5*time.Minute, nil, args...)
			t.Logf("restore --database keep --start: %s", time.Since(t0).Round(100*time.Millisecond))
			if out.code != 0 {
				t.Fatalf("restore --database keep --start: exit %d\n%s", out.code, out.stderr)
			}
			uri, err := url.Parse(strings.TrimSpace(out.stdout))
			if err != nil || uri.Scheme != "postgresql" {
				t.Fatalf("restore --start printed %q, want a URI alone: %v", out.stdout, err)
			}
			if uri.Path != "/keep" {
				t.Errorf("restore --start --database keep printed %s; docs/restore.md says the URI names the first --database", uri)
			}
			inDB := func(db string) string { u := *uri; u.Path = "/" + db; return u.String() }
			if got := queryURI(t, inDB("keep"), dbFingerprintSQL); got != want["keep"] {
				t.Errorf("keep through restore --start holds %s, before the backup %s", got, want["keep"])
			}
			if c, err := pgconn.Connect(ctx, inDB("other")); err == nil {
				c.Close(context.WithoutCancel(ctx))
				t.Errorf("connecting to other of the CI seed worked; want FATAL: %s", mapMsg)
			} else if !strings.Contains(err.Error(), mapMsg) || !strings.Contains(err.Error(), "contains invalid data") {
				t.Errorf("connecting to other of the CI seed: %v; want FATAL: %s", err, mapMsg)
			}
			// docs/ci-seeding.md's script dropping the placeholders, for
			// the database keep instead of app.
			script := docBlocks(t, "ci-seeding.md", "drop-placeholders", "sql")
			if !strings.Contains(script, "'app'") {
				t.Fatalf("docs/ci-seeding.md's drop-placeholders.sql does not name 'app':\n%s", script)
			}
			drop := exec.CommandContext(ctx, c.Bin("psql"), uri.String(), "-v", "ON_ERROR_STOP=1", "-f", "-")
			drop.Stdin = strings.NewReader(strings.ReplaceAll(script, "'app'", "'keep'"))
			if out, err := drop.CombinedOutput(); err != nil {
				t.Errorf("psql dropping the placeholders: %v\n%s", err, out)
			}
			if dbs := queryURI(t, uri.String(), "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"); dbs != "keep,postgres,template0,template1" {
				t.Errorf("databases of the CI seed after dropping the others: %s", dbs)
			}
			t0 = time.Now()
			d := runCLI(t, 2*time.Minute, nil, "discard", "-D", seed)
			if d.code != 0 {
				t.Errorf("discard: exit %d: %s", d.code, d.stderr)
			}
			t.Logf("discard: %s: %s", time.Since(t0).Round(100*time.Millisecond), strings.TrimSpace(d.stderr))
		})
	}
}

// checkPlaceholders checks, before the server starts, the files of a
// restore of database keepOID: every relation file of database otherOID,
// and its relation map, exists with its recorded size, all zeros and no
// block allocated; every other file (other's PG_VERSION too) holds the
// backup's bytes (its CRC32C). It returns the recorded size of other's
// placeholders.
func checkPlaceholders(t *testing.T, b *manifest.Backup, dir string, keepOID, otherOID uint32) int64 {
	t.Helper()
	placeholders, keepFiles := 0, 0
	var otherBytes int64
	for _, f := range b.Files {
		if f.Type != manifest.TypeFile {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		fi, err := os.Stat(p)
		if err != nil {
			if f.Path == "backup_label" || f.Path == "tablespace_map" || f.Path == "global/pg_control" {
				continue // a restore may consume or rewrite these
			}
			t.Errorf("%s: %v", f.Path, err)
			continue
		}
		db, rel := pgdata.RelationFile(false, f.Path)
		if placeholderOf(f.Path, otherOID) {
			placeholders++
			otherBytes += f.Size
			if fi.Size() != f.Size {
				t.Errorf("placeholder %s: %d bytes, recorded %d", f.Path, fi.Size(), f.Size)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if i := slices.IndexFunc(data, func(c byte) bool { return c != 0 }); i >= 0 {
				t.Errorf("placeholder %s has a non-zero byte at %d", f.Path, i)
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks != 0 {
				t.Errorf("placeholder %s has %d blocks allocated, want a sparse file", f.Path, st.Blocks)
			}
			continue
		}
		if rel && db == keepOID {
			keepFiles++
		}
		if f.Path == "global/pg_control" || f.Path == "postgresql.auto.conf" || f.Path == "backup_label" {
			continue // a restore may write these itself
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != f.Size || crc32.Checksum(data, manifest.Castagnoli) != f.CRC32C {
			t.Errorf("%s differs from the backup (%d bytes, recorded %d)", f.Path, len(data), f.Size)
		}
		if rel && db == keepOID && f.Size > 0 && bytes.Count(data, []byte{0}) == len(data) {
			t.Errorf("%s of keep is all zeros", f.Path)
		}
	}
	t.Logf("%d placeholder files of database %d, %d relation files of database %d", placeholders, otherOID, keepFiles, keepOID)
	if placeholders == 0 || keepFiles == 0 {
		t.Errorf("the backup records %d relation files of other and %d of keep: want some of both", placeholders, keepFiles)
	}
	return otherBytes
}

// appendFile appends text to the file name.
func appendFile(t *testing.T, name, text string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// placeholderOf reports whether a restore leaving database db out makes
// the file at path (in the data directory) a placeholder: its relation
// files and its relation map.
func placeholderOf(path string, db uint32) bool {
	if path == fmt.Sprintf("base/%d/pg_filenode.map", db) {
		return true
	}
	d, rel := pgdata.RelationFile(false, path)
	return rel && d == db
}
