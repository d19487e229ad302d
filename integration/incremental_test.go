package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
)

// incrementalMajors are the majors of pgtest.Majors() that take
// incremental backups (17 on), or 17 alone when the list has none: the
// tests of incremental backups must test something in every run.
func incrementalMajors() []int {
	var out []int
	for _, m := range pgtest.Majors() {
		if m >= 17 {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		out = []int{17}
	}
	return out
}

// incrementalConf makes a server that can serve incremental backups, and
// whose relation files change only when the test writes (no autovacuum;
// room for the WAL of the 1 GB table without a checkpoint in between, so
// its VACUUM FREEZE writes no full-page images).
var incrementalConf = []string{"summarize_wal = on", "autovacuum = off", "max_wal_size = '4GB'"}

// backupEntry is the --json output of backup and one entry of list --json,
// as far as these tests read it.
type backupEntry struct {
	ID            string     `json:"id"`
	Type          string     `json:"type"`
	FormatVersion string     `json:"format_version"`
	RawBytes      int64      `json:"raw_bytes"`
	NewBytes      int64      `json:"new_bytes"`
	Incremental   *incRecord `json:"incremental"`
}

// incRecord is the incremental object of backupEntry: the manifest's
// record, less what is there for the backup policy.
type incRecord struct {
	Parent           string `json:"parent"`
	SentBytes        int64  `json:"sent_bytes"`
	IncrementalFiles int    `json:"incremental_files"`
	ChangedBlocks    int64  `json:"changed_blocks"`
}

// incBackup runs pgstow backup --json with extra arguments (such as
// --type), fails the test unless it succeeds, and returns what it printed
// and its stderr.
func incBackup(t *testing.T, c *pgtest.Cluster, repoURL string, extra ...string) (backupEntry, string) {
	t.Helper()
	args := append([]string{"backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--chunk-size", "1MB", "--json"}, extra...)
	t0 := time.Now()
	r := runCLI(t, 5*time.Minute, nil, args...)
	var e backupEntry
	if r.code != 0 {
		t.Fatalf("pgstow %s: exit %d\n%s\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || e.ID == "" {
		t.Fatalf("pgstow %s printed no backup as JSON (%v):\n%s\n%s", strings.Join(args, " "), err, r.stdout, r.stderr)
	}
	t.Logf("backup %s: type %s, %d raw bytes, %d new, took %s", e.ID, e.Type, e.RawBytes, e.NewBytes, time.Since(t0).Round(100*time.Millisecond))
	return e, r.stderr
}

// fullReasons are the lines of a backup's stderr that say why it took a
// full backup ("backup: full backup: <reason>").
func fullReasons(stderr string) []string {
	var out []string
	for line := range strings.Lines(withoutTimes(stderr)) {
		if strings.Contains(strings.ToLower(line), "full backup") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// logTimeRE matches the time attribute of a text log record.
var logTimeRE = regexp.MustCompile(`(?m)^time=\S+ `)

// withoutTimes drops the time attribute of each log record of stderr, so
// that a check for a number (the major version) cannot match a timestamp.
func withoutTimes(stderr string) string {
	return logTimeRE.ReplaceAllString(stderr, "")
}

// checkFull judges a backup that must be a full one: its JSON and its
// manifest say so, and, when reasonWords is not nil, stderr has exactly one
// line saying why, holding each of reasonWords.
func checkFull(t *testing.T, repoDir string, e backupEntry, stderr string, reasonWords []string) {
	t.Helper()
	if e.Type != "full" || e.Incremental != nil {
		t.Errorf("backup %s: type %q, incremental %+v; want a full backup", e.ID, e.Type, e.Incremental)
	}
	b := readManifest(t, repoDir, e.ID)
	if b.FormatVersion != manifest.FormatVersion || b.Incremental != nil {
		t.Errorf("backup %s: manifest format %s, incremental %+v; want %s and none", e.ID, b.FormatVersion, b.Incremental, manifest.FormatVersion)
	}
	if e.FormatVersion != "" && e.FormatVersion != b.FormatVersion {
		t.Errorf("backup %s: --json says format_version %q, the manifest %q", e.ID, e.FormatVersion, b.FormatVersion)
	}
	if reasonWords == nil {
		return
	}
	lines := fullReasons(stderr)
	if len(lines) != 1 {
		t.Errorf("backup %s: %d lines say why it is a full backup, want 1:\n%s", e.ID, len(lines), stderr)
		return
	}
	for _, w := range reasonWords {
		if !strings.Contains(lines[0], w) {
			t.Errorf("backup %s: the reason %q does not name %q", e.ID, lines[0], w)
		}
	}
	t.Logf("backup %s: %s", e.ID, lines[0])
}

// checkIncremental judges a backup that must be an incremental one taken
// from parent: its JSON and manifest say so, with format 2.0, some
// INCREMENTAL files and changed blocks, and no full-backup reason.
func checkIncremental(t *testing.T, repoDir string, e backupEntry, stderr, parent string) *manifest.Backup {
	t.Helper()
	b := readManifest(t, repoDir, e.ID)
	if e.Type != "incremental" || e.Incremental == nil {
		t.Fatalf("backup %s: type %q, incremental %+v; want an incremental backup from %s\n%s", e.ID, e.Type, e.Incremental, parent, stderr)
	}
	if e.FormatVersion != manifest.FormatVersionIncremental || b.FormatVersion != manifest.FormatVersionIncremental {
		t.Errorf("backup %s: format_version %q in --json, %q in the manifest, want %s", e.ID, e.FormatVersion, b.FormatVersion, manifest.FormatVersionIncremental)
	}
	if b.Incremental == nil {
		t.Fatalf("backup %s: the manifest has no incremental record", e.ID)
	}
	if e.Incremental.Parent != parent || b.Incremental.Parent != parent {
		t.Errorf("backup %s: parent %q in --json, %q in the manifest, want %s", e.ID, e.Incremental.Parent, b.Incremental.Parent, parent)
	}
	if *e.Incremental != (incRecord{b.Incremental.Parent, b.Incremental.SentBytes, b.Incremental.IncrementalFiles, b.Incremental.ChangedBlocks}) {
		t.Errorf("backup %s: --json incremental %+v, manifest %+v", e.ID, *e.Incremental, *b.Incremental)
	}
	if b.Incremental.IncrementalFiles == 0 || b.Incremental.ChangedBlocks == 0 || b.Incremental.SentBytes <= 0 {
		t.Errorf("backup %s: incremental record %+v: want INCREMENTAL files, changed blocks and sent bytes", e.ID, *b.Incremental)
	}
	if b.BlockSize == 0 {
		t.Errorf("backup %s: no block_size in the manifest", e.ID)
	}
	if e.RawBytes != b.Totals.RawBytes {
		t.Errorf("backup %s: raw_bytes %d in --json, %d in the manifest", e.ID, e.RawBytes, b.Totals.RawBytes)
	}
	if lines := fullReasons(stderr); len(lines) > 0 {
		t.Errorf("backup %s is incremental, yet stderr says why it is full: %q", e.ID, lines)
	}
	t.Logf("backup %s: incremental from %s, sent %d of %d raw bytes (%.1f%%), %d INCREMENTAL files, %d changed blocks, %d new bytes",
		e.ID, parent, b.Incremental.SentBytes, b.Totals.RawBytes, 100*float64(b.Incremental.SentBytes)/float64(b.Totals.RawBytes),
		b.Incremental.IncrementalFiles, b.Incremental.ChangedBlocks, b.Totals.NewBytes)
	return b
}

// incRowsSQL sums up one table of the incremental tests (every one has
// id int and note text) in one value; %s is the table. Notes of up to 100
// bytes count whole; of the 8000-byte notes of the 1 GB table only the
// length counts (reading them costs seconds on each restore), but every
// page is read, its checksum verified, and the referee compares the files
// byte for byte.
const incRowsSQL = "SELECT count(*) || ':' || coalesce(sum(id), 0) || ':' || coalesce(sum(octet_length(note)), 0) || ':' || " +
	"coalesce(md5(string_agg(id || ':' || CASE WHEN octet_length(note) <= 100 THEN note ELSE '' END, ',' ORDER BY id)), '-') FROM %s"

// incState sums up every table of the public schema of every database
// that takes connections, as "database.table" → incRowsSQL. Dropped
// tables and databases are absent, new ones present.
func incState(t *testing.T, c *pgtest.Cluster) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, db := range c.Query(t, "postgres", "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1") {
		for _, tbl := range c.Query(t, db[0], "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1") {
			out[db[0]+"."+tbl[0]] = c.Query(t, db[0], fmt.Sprintf(incRowsSQL, tbl[0]))[0][0]
		}
	}
	return out
}

// amcheckAll runs pg_amcheck on every database of a restored server.
func amcheckAll(t *testing.T, r *pgtest.Cluster) {
	t.Helper()
	out, err := exec.Command(filepath.Join(pg15Bin, "pg_amcheck"), "-h", "127.0.0.1", "-p", fmt.Sprint(r.Port), "-U", "postgres",
		"--all", "--heapallindexed", "--install-missing").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_amcheck --all: %v\n%s", err, out)
	}
}

// relFileRE matches the files of a data directory that hold relation
// data, and the relation maps and version files beside them: everything
// under base/ and global/ but pg_control, and under a tablespace's
// version directory.
var relFileRE = regexp.MustCompile(`^(base/\d+/[^/]+|global/[^/]+|pg_tblspc/\d+/PG_[^/]+/\d+/[^/]+)$`)

// relationFiles keeps the entries of a snapshot (of a data directory whose
// pg_tblspc links were followed into snapshots under "pg_tblspc/<oid>/")
// that relFileRE matches, but global/pg_control: it records the backup's
// own checkpoint, so two backups never share it.
func relationFiles(snap map[string]treeEntry) map[string]treeEntry {
	out := map[string]treeEntry{}
	for p, e := range snap {
		if relFileRE.MatchString(p) && p != "global/pg_control" && e.mode.IsRegular() {
			out[p] = e
		}
	}
	return out
}

// restoredRelations snapshots the relation files of a restored data
// directory and of its remapped tablespace directory tsDir (tablespace oid).
func restoredRelations(t *testing.T, dataDir, oid, tsDir string) map[string]treeEntry {
	t.Helper()
	snap := snapshotTree(t, dataDir)
	for p, e := range snapshotTree(t, tsDir) {
		snap["pg_tblspc/"+oid+"/"+p] = e
	}
	return relationFiles(snap)
}

// incRestore restores backup id with the tablespace oid remapped into a
// fresh directory, checks the result against its backup_manifest as
// pg_verifybackup would (PostgreSQL 15's pg_verifybackup refuses the
// version 2 manifests of 17 and later, and there is none of 17 or 18
// here), and returns the data and tablespace directories.
func incRestore(t *testing.T, repoURL, id, oid string) (dataDir, tsDir string) {
	t.Helper()
	dataDir = filepath.Join(pgtest.TempDir(t), "data")
	tsDir = filepath.Join(pgtest.TempDir(t), "ts")
	t0 := time.Now()
	cliRestore(t, repoURL, id, dataDir, "--tablespace", oid+"="+tsDir)
	t1 := time.Now()
	checkAgainstPGManifest(t, dataDir)
	t.Logf("restore %s, check against backup_manifest %s", t1.Sub(t0).Round(100*time.Millisecond), time.Since(t1).Round(100*time.Millisecond))
	for _, name := range []string{"backup_label", "backup_manifest"} {
		if _, err := os.Stat(filepath.Join(dataDir, name)); err != nil {
			t.Errorf("restored %s: %v", name, err)
		}
	}
	if label, err := os.ReadFile(filepath.Join(dataDir, "backup_label")); err == nil && strings.Contains(string(label), "INCREMENTAL") {
		t.Errorf("the restored backup_label of %s still says INCREMENTAL:\n%s", id, label)
	}
	return dataDir, tsDir
}

// startAndCheck starts a restored directory, compares every table with
// want, runs pg_amcheck on every database, and stops the server.
func startAndCheck(t *testing.T, major int, dataDir, tsDir string, want map[string]string) {
	t.Helper()
	chownServerUser(t, tsDir)
	t0 := time.Now()
	r := restoreChecks(t, major, dataDir)
	t1 := time.Now()
	got := incState(t, r)
	t2 := time.Now()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: missing after the restore, held %s before the backup", k, w)
		} else if g != w {
			t.Errorf("%s: %s after the restore, %s before the backup", k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: holds %s after the restore, did not exist before the backup", k, g)
		}
	}
	amcheckAll(t, r)
	r.Stop(t)
	t.Logf("start %s, rows %s, pg_amcheck %s", t1.Sub(t0).Round(100*time.Millisecond), t2.Sub(t1).Round(100*time.Millisecond), time.Since(t2).Round(100*time.Millisecond))
}

// Sizes of the table that grows past one segment file (1 GiB of 8 kB
// blocks): rows of 8000 bytes stored in place (STORAGE PLAIN), one a
// block. bigRows fill 127000 of the 131072 blocks of the first segment;
// bigMoreRows more make the relation 133000 blocks long, so the first
// segment changes in 3% of its blocks (the server sends it as
// INCREMENTAL.<name>, as it does under 90%) and a second segment
// appears. That costs about 50 s (loading, and 1 GB more in each backup,
// restore and check), so only the newest major tested does it (bigMajor);
// the others' table has smallRows, then smallMoreRows more.
const (
	bigRows       = 127000
	bigMoreRows   = 6000
	smallRows     = 1000
	smallMoreRows = 200
)

// bigMajor is the major whose incremental test grows a table past 1 GB.
func bigMajor() int {
	m := incrementalMajors()
	return m[len(m)-1]
}

// TestIncremental: on PostgreSQL 17 and 18 with summarize_wal, a full
// backup, then changes (a contiguous range of rows updated, rows inserted,
// a table truncated, one shrunk in place by VACUUM, one dropped, a new
// table, a new database with a table, a table in a tablespace updated),
// an incremental backup, more changes (on the newest major tested, a 1 GB
// table grows past its first segment file; elsewhere a small one grows),
// another incremental backup. Each backup restores (the
// tablespace remapped), matches its backup_manifest, starts, holds exactly
// the rows committed before it started and passes pg_amcheck. The
// incrementals say so in --json and list --json, with the server having
// sent far less than they describe. The referee: a full backup taken right
// after the last incremental on the idle server restores to relation
// files byte-identical to the incremental's. Then the full and the first
// incremental are deleted and gc --grace 0s runs: the last incremental
// still verifies, restores to the same bytes, starts and holds its rows.
func TestIncremental(t *testing.T) {
	t.Parallel()
	for _, major := range incrementalMajors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			started := time.Now()
			defer func() { t.Logf("TestIncremental/pg%d took %s", major, time.Since(started).Round(time.Second)) }()
			step := func(what string, t0 time.Time) {
				t.Logf("%s: %s", what, time.Since(t0).Round(100*time.Millisecond))
			}
			repoDir := t.TempDir()
			repoURL := "file://" + repoDir
			big := major == bigMajor()
			firstRows, moreRows := smallRows, smallMoreRows
			if big {
				firstRows, moreRows = bigRows, bigMoreRows
			}
			t.Logf("PostgreSQL %d: inc_big grows past 1 GB: %v (on PostgreSQL %d only)", major, big, bigMajor())
			c := pgtest.Start(t, pgtest.Options{Major: major, Conf: incrementalConf})
			if got := c.Query(t, "postgres", "SHOW summarize_wal")[0][0]; got != "on" {
				t.Fatalf("summarize_wal is %q", got)
			}
			c.Exec(t, "postgres", "CREATE TABLESPACE ts1 LOCATION '"+tablespaceDir(t, c)+"'")
			oid := c.Query(t, "postgres", "SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")[0][0]

			t0 := time.Now()
			for _, sql := range []string{
				"CREATE TABLE inc_upd (id int PRIMARY KEY, note text)",
				"INSERT INTO inc_upd SELECT g, md5(g::text) FROM generate_series(1, 400000) g",
				"CREATE TABLE inc_ins (id int PRIMARY KEY, note text)",
				"INSERT INTO inc_ins SELECT g, 'ins ' || g FROM generate_series(1, 10000) g",
				"CREATE TABLE inc_trunc (id int, note text)",
				"INSERT INTO inc_trunc SELECT g, 'trunc ' || g FROM generate_series(1, 20000) g",
				"CREATE TABLE inc_shrink (id int, note text)",
				"INSERT INTO inc_shrink SELECT g, 'shrink ' || g FROM generate_series(1, 50000) g",
				"CREATE TABLE inc_drop (id int, note text)",
				"INSERT INTO inc_drop SELECT g, 'drop ' || g FROM generate_series(1, 20000) g",
				"CREATE TABLE inc_ts (id int PRIMARY KEY, note text) TABLESPACE ts1",
				"INSERT INTO inc_ts SELECT g, 'ts ' || g FROM generate_series(1, 30000) g",
				"CREATE TABLE inc_big (id int, note text)",
				"ALTER TABLE inc_big ALTER note SET STORAGE PLAIN",
				fmt.Sprintf("INSERT INTO inc_big SELECT g, repeat(md5(g::text), 250) FROM generate_series(1, %d) g", firstRows),
				// Hint bits and freezing now, so that reading the rows
				// later dirties no page that did not change.
				"VACUUM (FREEZE)",
				"CHECKPOINT",
			} {
				c.Exec(t, "postgres", sql)
			}
			step("load", t0)
			want0 := incState(t, c)
			full, stderr := incBackup(t, c, repoURL)
			checkFull(t, repoDir, full, stderr, []string{}) // the reason: no parent yet
			// Committed after the backup: in no restore of it.
			c.Exec(t, "postgres", "INSERT INTO inc_ins VALUES (-1, 'after the full')")

			// Round 1.
			t0 = time.Now()
			for _, sql := range []string{
				"UPDATE inc_upd SET note = 'round 1 ' || id WHERE id BETWEEN 100001 AND 104000", // 1%, contiguous
				"INSERT INTO inc_ins SELECT g, 'ins 1 ' || g FROM generate_series(10001, 15000) g",
				"TRUNCATE inc_trunc",
				"DELETE FROM inc_shrink WHERE id > 5000",
				"VACUUM inc_shrink", // truncates its file in place: same relfilenode, fewer blocks
				"DROP TABLE inc_drop",
				"CREATE TABLE inc_new (id int PRIMARY KEY, note text)",
				"INSERT INTO inc_new SELECT g, 'new ' || g FROM generate_series(1, 5000) g",
				"UPDATE inc_ts SET note = 'ts 1 ' || id WHERE id BETWEEN 1001 AND 2000",
				"CREATE DATABASE incdb",
			} {
				c.Exec(t, "postgres", sql)
			}
			c.Exec(t, "incdb", "CREATE TABLE inc_db (id int PRIMARY KEY, note text); INSERT INTO inc_db SELECT g, 'db ' || g FROM generate_series(1, 3000) g")
			c.Exec(t, "postgres", "CHECKPOINT")
			step("round 1", t0)
			want1 := incState(t, c)
			inc1, stderr := incBackup(t, c, repoURL)
			b1 := checkIncremental(t, repoDir, inc1, stderr, full.ID)
			// About 1% of the rows changed, and a new database (a copy of
			// template1, sent whole) appeared.
			newDB := c.Query(t, "postgres", "SELECT pg_database_size('incdb')")[0][0]
			var newDBBytes int64
			if _, err := fmt.Sscan(newDB, &newDBBytes); err != nil {
				t.Fatal(err)
			}
			if limit := newDBBytes + b1.Totals.RawBytes/10; b1.Incremental.SentBytes > limit {
				t.Errorf("incremental %s: the server sent %d bytes of %d, want at most the new database's %d and a tenth of the rest", inc1.ID, b1.Incremental.SentBytes, b1.Totals.RawBytes, newDBBytes)
			}
			if limit := b1.Totals.RawBytes / 10; b1.Totals.NewBytes > limit {
				t.Errorf("incremental %s stored %d new bytes of %d raw, want at most a tenth", inc1.ID, b1.Totals.NewBytes, b1.Totals.RawBytes)
			}
			c.Exec(t, "postgres", "INSERT INTO inc_ins VALUES (-2, 'after incremental 1')")

			// Round 2: the big table grows past its first segment.
			t0 = time.Now()
			bigBefore := c.Query(t, "postgres", "SELECT pg_relation_size('inc_big')")[0][0]
			for _, sql := range []string{
				"UPDATE inc_upd SET note = 'round 2 ' || id WHERE id BETWEEN 300001 AND 302000",
				"DELETE FROM inc_ins WHERE id BETWEEN 1 AND 500",
				"INSERT INTO inc_new SELECT g, 'new 2 ' || g FROM generate_series(5001, 6000) g",
				"CREATE TABLE inc_new2 (id int, note text)",
				"INSERT INTO inc_new2 SELECT g, 'new2 ' || g FROM generate_series(1, 1000) g",
				fmt.Sprintf("INSERT INTO inc_big SELECT g, repeat(md5(g::text), 250) FROM generate_series(%d, %d) g", firstRows+1, firstRows+moreRows),
				"VACUUM (FREEZE) inc_big",
			} {
				c.Exec(t, "postgres", sql)
			}
			c.Exec(t, "incdb", "UPDATE inc_db SET note = 'db 2 ' || id WHERE id <= 100")
			c.Exec(t, "postgres", "CHECKPOINT")
			bigFile := c.Query(t, "postgres", "SELECT pg_relation_filepath('inc_big')")[0][0]
			if _, err := os.Stat(filepath.Join(c.DataDir, bigFile+".1")); big && err != nil {
				t.Fatalf("inc_big (%s bytes before, now in %s) has no second segment file: %v", bigBefore, bigFile, err)
			}
			step("round 2", t0)
			want2 := incState(t, c)
			// From here to the referee's backup the server stays idle:
			// not even a query, which could set hint bits.
			inc2, stderr := incBackup(t, c, repoURL)
			ref, refStderr := incBackup(t, c, repoURL, "--type", "full")
			checkFull(t, repoDir, ref, refStderr, nil)
			b2 := checkIncremental(t, repoDir, inc2, stderr, inc1.ID)
			grown := int64(moreRows) * 8192
			if limit := grown + b1.Totals.RawBytes/10; b2.Incremental.SentBytes > limit {
				t.Errorf("incremental %s: the server sent %d bytes of %d, want at most the %d the big table grew plus a tenth of the rest (%d)",
					inc2.ID, b2.Incremental.SentBytes, b2.Totals.RawBytes, grown, b1.Totals.RawBytes/10)
			}
			if big && !slices.ContainsFunc(b2.Files, func(f manifest.File) bool { return f.Path == bigFile+".1" }) {
				t.Errorf("incremental %s has no %s.1", inc2.ID, bigFile)
			}
			for _, f := range b2.Files {
				if strings.Contains(f.Path, "INCREMENTAL.") {
					t.Errorf("incremental %s describes %s", inc2.ID, f.Path)
				}
			}

			// list --json says the same as each backup's --json.
			entries := map[string]backupEntry{}
			r := runCLI(t, time.Minute, nil, "list", "--repo", repoURL, "--json")
			var list []backupEntry
			if err := json.Unmarshal([]byte(r.stdout), &list); r.code != 0 || err != nil {
				t.Fatalf("list --json: exit %d, %v:\n%s\n%s", r.code, err, r.stdout, r.stderr)
			}
			for _, e := range list {
				entries[e.ID] = e
			}
			for _, e := range []backupEntry{full, inc1, inc2, ref} {
				l := entries[e.ID]
				if l.Type != e.Type || l.FormatVersion != e.FormatVersion || (l.Incremental == nil) != (e.Incremental == nil) ||
					l.Incremental != nil && *l.Incremental != *e.Incremental {
					t.Errorf("list --json says of %s: %+v; backup --json said %+v", e.ID, l, e)
				}
			}

			// Each backup restores, matches its manifest, starts and holds
			// its rows; the referee compares the last two byte for byte.
			var inc2Rel map[string]treeEntry
			var inc2VM map[string][]byte // its visibility maps, by relationFiles path
			for _, tc := range []struct {
				name string
				e    backupEntry
				want map[string]string
			}{
				{"full", full, want0},
				{"incremental 1", inc1, want1},
				{"incremental 2", inc2, want2},
				{"referee full", ref, want2},
			} {
				t.Run(tc.name, func(t *testing.T) {
					t0 := time.Now()
					dataDir, tsDir := incRestore(t, repoURL, tc.e.ID, oid)
					switch tc.name {
					case "incremental 2":
						inc2Rel = restoredRelations(t, dataDir, oid, tsDir)
						inc2VM = vmFiles(t, inc2Rel, func(p string) string { return restoredPath(p, dataDir, oid, tsDir) })
						if _, ok := inc2Rel[bigFile+".1"]; big && !ok {
							t.Errorf("the restore of %s has no %s.1", tc.e.ID, bigFile)
						}
					case "referee full":
						if inc2Rel == nil {
							t.Fatal("no restore of incremental 2 to compare with")
						}
						refRel := restoredRelations(t, dataDir, oid, tsDir)
						zeroed, judged := vmPagesZeroed(t, refRel, inc2Rel, vmFiles(t, refRel, func(p string) string { return restoredPath(p, dataDir, oid, tsDir) }), inc2VM)
						t.Logf("%d visibility-map pages of incremental %s are zeros where the full has bits set (pgstow clears the map of changed heap ranges)", zeroed, inc2.ID)
						if d := treeDiff(refRel, judged, 20); len(d) > 0 {
							t.Errorf("the relation files of incremental %s differ from those of the full %s taken right after it on the idle server:\n%s",
								inc2.ID, ref.ID, strings.Join(d, "\n"))
						} else {
							t.Logf("%d relation files byte-identical between incremental %s and full %s", len(refRel), inc2.ID, ref.ID)
						}
					}
					if t.Failed() {
						t.FailNow()
					}
					startAndCheck(t, major, dataDir, tsDir, tc.want)
					step("restore and check "+tc.name, t0)
				})
			}
			if t.Failed() {
				t.FailNow()
			}

			// Retention: delete the full and the first incremental, gc.
			for _, id := range []string{full.ID, inc1.ID} {
				if r := runCLI(t, 2*time.Minute, nil, "delete", "--repo", repoURL, id); r.code != 0 {
					t.Fatalf("delete %s: exit %d\n%s\n%s", id, r.code, r.stdout, r.stderr)
				}
			}
			if r := runCLI(t, 2*time.Minute, nil, "gc", "--grace", "0s", "--repo", repoURL); r.code != 0 {
				t.Fatalf("gc --grace 0s: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if got := listEntries(t, repoURL); len(got) != 2 {
				t.Errorf("after deleting %s and %s, list shows %d backups, want 2", full.ID, inc1.ID, len(got))
			}
			v, vr := runVerify(t, repoURL)
			if !v.OK || vr.code != 0 {
				t.Errorf("verify after deleting %s and %s and gc: exit %d, %+v\n%s", full.ID, inc1.ID, vr.code, v, vr.stderr)
			}
			t.Run("incremental 2 after gc", func(t *testing.T) {
				dataDir, tsDir := incRestore(t, repoURL, inc2.ID, oid)
				if d := treeDiff(inc2Rel, restoredRelations(t, dataDir, oid, tsDir), 20); len(d) > 0 {
					t.Errorf("after gc, incremental %s restores to other relation files:\n%s", inc2.ID, strings.Join(d, "\n"))
				}
				startAndCheck(t, major, dataDir, tsDir, want2)
			})
		})
	}
}

// restoredPath is where relation file p of a restoredRelations snapshot
// lies: in dataDir, or for pg_tblspc/<oid>/… in tsDir.
func restoredPath(p, dataDir, oid, tsDir string) string {
	if rest, ok := strings.CutPrefix(p, "pg_tblspc/"+oid+"/"); ok {
		return filepath.Join(tsDir, rest)
	}
	return filepath.Join(dataDir, p)
}

// isVM reports whether relation file p is of a visibility map fork.
func isVM(p string) bool {
	return strings.HasSuffix(strings.SplitN(filepath.Base(p), ".", 2)[0], "_vm")
}

// vmFiles reads the visibility map files of a relationFiles snapshot
// (small: one page maps 255 MB of table), where at(p) says they are.
func vmFiles(t *testing.T, snap map[string]treeEntry, at func(string) string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for p := range snap {
		if isVM(p) {
			b, err := os.ReadFile(at(p))
			if err != nil {
				t.Fatal(err)
			}
			out[p] = b
		}
	}
	return out
}

// vmPagesZeroed is the referee's one allowance. PostgreSQL's WAL summaries
// do not name the visibility-map block a heap change clears bits in (the
// heap record implies the clear), so an incremental backup cannot know
// that block changed; pgstow therefore writes zeros (no page all-visible,
// always safe) for the map pages that cover heap blocks the server sent
// as changed. For every visibility-map file that differs between the
// full (want, its maps' bytes wantVM) and the incremental (got, gotVM),
// each page must be the full's or all zeros. It returns the number of
// zero pages, and a copy of got in which such files are the full's, for
// the byte-for-byte comparison that judges everything else.
func vmPagesZeroed(t *testing.T, want, got map[string]treeEntry, wantVM, gotVM map[string][]byte) (int, map[string]treeEntry) {
	t.Helper()
	const page = 8192
	zeroed := 0
	got = maps.Clone(got)
	for p, w := range want {
		g, ok := got[p]
		if !ok || g == w || !isVM(p) || g.size != w.size {
			continue
		}
		wb, gb := wantVM[p], gotVM[p]
		ok = len(wb) == len(gb) && len(wb)%page == 0
		for off := 0; ok && off < len(wb); off += page {
			wp, gp := wb[off:off+page], gb[off:off+page]
			switch {
			case bytes.Equal(wp, gp):
			case bytes.Count(gp, []byte{0}) == page:
				zeroed++
			default:
				ok = false
			}
		}
		if ok {
			got[p] = w
		}
	}
	return zeroed, got
}

// TestIncrementalRestoreWithoutPgstow runs the recipe of
// docs/restore-without-pgstow.md on an incremental backup (its archives
// slice the chunks of the full it was taken from) and lets the server
// judge the result.
func TestIncrementalRestoreWithoutPgstow(t *testing.T) {
	t.Parallel()
	major := incrementalMajors()[0]
	recipe := docBlocks(t, "restore-without-pgstow.md", "restore-without-pgstow", "sh")
	c := pgtest.Start(t, pgtest.Options{Major: major, Conf: incrementalConf})
	c.Exec(t, "postgres", "CREATE TABLE inc_rows (id int PRIMARY KEY, note text)")
	c.Exec(t, "postgres", "INSERT INTO inc_rows SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
	c.Exec(t, "postgres", "VACUUM (FREEZE)")
	dir := t.TempDir()
	repoURL := "file://" + dir
	full, stderr := incBackup(t, c, repoURL)
	checkFull(t, dir, full, stderr, []string{})
	c.Exec(t, "postgres", "UPDATE inc_rows SET note = 'changed' WHERE id BETWEEN 20001 AND 21000")
	c.Exec(t, "postgres", "DELETE FROM inc_rows WHERE id > 90000")
	want := incState(t, c)
	inc, stderr := incBackup(t, c, repoURL)
	checkIncremental(t, dir, inc, stderr, full.ID)

	target := filepath.Join(pgtest.TempDir(t), "data")
	cmd := exec.Command("sh", "-euc", recipe)
	cmd.Env = append(os.Environ(), "REPO="+dir, "TARGET="+target)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the restore-without-pgstow recipe failed on incremental %s: %v\n%s", inc.ID, err, out)
	}
	checkAgainstPGManifest(t, target)
	r := restoreChecks(t, major, target)
	if got := incState(t, r); !maps.Equal(got, want) {
		t.Fatalf("after the recipe: %v, before the backup: %v", got, want)
	}
}

// TestIncrementalFallback: where no incremental backup is possible
// (PostgreSQL 15; PostgreSQL 17 or later with summarize_wal off), backup
// takes a full one with one line saying why, also when a parent exists,
// and --type incremental exits 2 with a message naming the cause, leaving
// no backup.
func TestIncrementalFallback(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		major int
		conf  []string
		// cause is what the reason and the refusal must name.
		cause string
	}{
		{"pg15", 15, nil, "15"},
		{fmt.Sprintf("pg%d summarize_wal off", incrementalMajors()[0]), incrementalMajors()[0], []string{"summarize_wal = off"}, "summarize_wal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := pgtest.Start(t, pgtest.Options{Major: tc.major, Conf: tc.conf})
			if tc.major >= 17 {
				if got := c.Query(t, "postgres", "SHOW summarize_wal")[0][0]; got != "off" {
					t.Fatalf("summarize_wal is %q", got)
				}
			}
			c.Exec(t, "postgres", "CREATE TABLE fb_rows AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 20000) g")
			dir := t.TempDir()
			repoURL := "file://" + dir
			first, stderr := incBackup(t, c, repoURL)
			checkFull(t, dir, first, stderr, []string{})
			c.Exec(t, "postgres", "UPDATE fb_rows SET note = 'changed' WHERE id <= 200")
			// A parent exists now: the only cause left is the server's.
			second, stderr := incBackup(t, c, repoURL, "--type", "auto")
			checkFull(t, dir, second, stderr, []string{tc.cause})
			// The default is auto.
			third, stderr := incBackup(t, c, repoURL)
			checkFull(t, dir, third, stderr, []string{tc.cause})

			before := len(listEntries(t, repoURL))
			r := runCLI(t, 2*time.Minute, nil, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--type", "incremental")
			t.Logf("--type incremental: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
			if r.code != 2 {
				t.Errorf("backup --type incremental: exit %d, want 2\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if !strings.Contains(withoutTimes(r.stderr), tc.cause) {
				t.Errorf("backup --type incremental: the message does not name %q:\n%s", tc.cause, r.stderr)
			}
			if after := len(listEntries(t, repoURL)); after != before {
				t.Errorf("the refused backup left %d backups, %d before", after, before)
			}
		})
	}
}
