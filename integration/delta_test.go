package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
)

// deltaFingerprintSQL sums up what the delta tests write: delta_rows
// whole, and the balances of pgbench_accounts.
const deltaFingerprintSQL = `SELECT (SELECT count(*) || ':' || md5(string_agg(id || note, ',' ORDER BY id)) FROM delta_rows)
	|| '/' || (SELECT count(*) || ':' || sum(abalance) FROM pgbench_accounts)`

func deltaFingerprint(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	return c.Query(t, "postgres", deltaFingerprintSQL)[0][0]
}

// cliRestore runs pgstow restore of backup id into dir with extra
// arguments, fails the test unless it succeeds, and returns its
// "restore complete" log record.
func cliRestore(t *testing.T, repoURL, id, dir string, extra ...string) map[string]string {
	t.Helper()
	args := append([]string{"restore", "--repo", repoURL, "--backup", id, "-D", dir}, extra...)
	r := runCLI(t, 5*time.Minute, nil, args...)
	if r.code != 0 {
		t.Fatalf("pgstow %s: exit %d\n%s\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	recs := logRecords(r.stderr, "restore complete")
	if len(recs) != 1 {
		t.Fatalf("pgstow %s: %d \"restore complete\" records, want 1:\n%s", strings.Join(args, " "), len(recs), r.stderr)
	}
	t.Logf("pgstow %s: %v", strings.Join(args[5:], " "), recs[0])
	return recs[0]
}

// summaryInt is a counter of a "restore complete" record the spec of
// delta and partial restores adds (bytes_fetched, files_kept, …); a
// missing one fails the test.
func summaryInt(t *testing.T, rec map[string]string, key string) int64 {
	t.Helper()
	n := intField(t, rec, key)
	if n < 0 {
		t.Fatalf("the \"restore complete\" record has no %s: %v", key, rec)
	}
	return n
}

// treeEntry describes one directory entry for byte-for-byte comparisons.
type treeEntry struct {
	mode fs.FileMode
	size int64
	sum  string // SHA-256 of a regular file, the target of a symlink
}

// snapshotTree returns every entry under dir (dir itself as "."), by
// slash-separated relative path, without following symlinks.
func snapshotTree(t *testing.T, dir string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := treeEntry{mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(data)
			e.size, e.sum = fi.Size(), hex.EncodeToString(s[:])
		case fi.Mode()&fs.ModeSymlink != 0:
			if e.sum, err = os.Readlink(p); err != nil {
				return err
			}
		}
		out[filepath.ToSlash(rel)] = e
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return out
}

// treeDiff lists the entries that differ between two snapshots, at most
// limit of them, sorted.
func treeDiff(want, got map[string]treeEntry, limit int) []string {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, p+": missing")
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%s: %v %d bytes %.12s, want %v %d bytes %.12s", p, g.mode, g.size, g.sum, w.mode, w.size, w.sum))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, p+": unexpected")
		}
	}
	slices.Sort(diffs)
	if len(diffs) > limit {
		diffs = append(diffs[:limit], fmt.Sprintf("… and %d more", len(diffs)-limit))
	}
	return diffs
}

// chunkBytesCovering sums the raw size of the chunks of the backup that
// hold any byte of the named files or of their tar headers: what a delta
// restore may fetch when only those files need writing.
func chunkBytesCovering(t *testing.T, b *manifest.Backup, paths ...string) int64 {
	t.Helper()
	need := map[[2]int]bool{} // archive, chunk
	for _, p := range paths {
		i := slices.IndexFunc(b.Files, func(f manifest.File) bool { return f.Path == p })
		if i < 0 {
			continue
		}
		f := b.Files[i]
		lo, hi := max(f.Offset-512, 0), f.Offset+f.Size // the tar header precedes the content
		var at int64
		for ci, c := range b.Archives[f.Archive].Chunks {
			if at < hi && at+c.RawSize > lo {
				need[[2]int{f.Archive, ci}] = true
			}
			at += c.RawSize
		}
	}
	var sum int64
	for k := range need {
		sum += b.Archives[k[0]].Chunks[k[1]].RawSize
	}
	return sum
}

// stopped stops a restored server started by restoreChecks, so the next
// case does not share the machine with it.
func stopped(t *testing.T, r *pgtest.Cluster) {
	t.Helper()
	r.Stop(t)
}

// TestDeltaRestore: restore --delta of one backup over (a) its own
// restore, (b) the restore of an older backup of the cluster that was
// started since (between the two backups rows changed and mapped
// catalogs were rewritten, so pg_filenode.map files differ with the same
// CRC32C, as every pg_control does), (c) its own restore with damaged, truncated, extra and
// missing files, and (d) a promoted former standby (and into an empty
// directory, and with --delta-check size-mtime). Each result equals a
// fresh restore of the backup byte for byte before it starts, passes
// pg_verifybackup (PostgreSQL 15), starts and holds exactly the rows
// committed before the backup.
func TestDeltaRestore(t *testing.T) {
	t.Parallel()
	for _, major := range edgeMajors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			started := time.Now()
			defer func() { t.Logf("TestDeltaRestore/pg%d took %s", major, time.Since(started).Round(time.Second)) }()
			repoDir := t.TempDir()
			repoURL := "file://" + repoDir
			c := pgtest.Start(t, pgtest.Options{Major: major, Conf: []string{"autovacuum = off"}})
			c.Pgbench(t, "-i", "-s", "3", "postgres")
			c.Exec(t, "postgres", "CREATE TABLE delta_rows (id int PRIMARY KEY, note text)")
			c.Exec(t, "postgres", "INSERT INTO delta_rows SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
			oldID := cliBackup(t, c, repoURL)
			standby := startStandby(t, c, openFileRepo(t, repoDir))

			// About 1% of the accounts change, rows come and go.
			c.Exec(t, "postgres", "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid <= 3000")
			c.Exec(t, "postgres", "INSERT INTO delta_rows SELECT g, 'new ' || g FROM generate_series(5001, 5500) g")
			c.Exec(t, "postgres", "DELETE FROM delta_rows WHERE id <= 100")
			// Rewrite mapped catalogs, local and shared: the
			// pg_filenode.map files change, and keep their CRC32C (the
			// CRC of data followed by its own CRC is a constant).
			c.Exec(t, "postgres", "VACUUM FULL pg_class")
			c.Exec(t, "postgres", "VACUUM FULL pg_database")
			want := deltaFingerprint(t, c)
			curID := cliBackup(t, c, repoURL)
			cur := readManifest(t, repoDir, curID)
			// Committed after the backup: no restore of it may hold these.
			c.Exec(t, "postgres", "INSERT INTO delta_rows SELECT g, 'late' FROM generate_series(100001, 100100) g")
			rel := func(name string) string {
				return c.Query(t, "postgres", fmt.Sprintf("SELECT pg_relation_filepath('%s')", name))[0][0]
			}
			accounts, accountsPkey, branches := rel("pgbench_accounts"), rel("pgbench_accounts_pkey"), rel("pgbench_branches")
			dbDir := filepath.Dir(accounts)

			// The standby follows the primary past the backup, is promoted
			// and writes on its own timeline, then stops.
			waitReplayed(t, c, standby)
			standby.Exec(t, "postgres", "SELECT pg_promote()")
			standby.Exec(t, "postgres", "INSERT INTO delta_rows SELECT g, 'standby' FROM generate_series(200001, 201000) g")
			standby.Exec(t, "postgres", "UPDATE pgbench_accounts SET abalance = -1 WHERE aid > 250000")
			standby.Exec(t, "postgres", "CHECKPOINT")
			standby.Stop(t)

			// A full restore of the backup: the reference for (c), and
			// what a full restore fetches (its summary has raw_bytes, the
			// chunks' raw bytes downloaded; bytes_fetched is for delta
			// and partial restores).
			ref := filepath.Join(pgtest.TempDir(t), "data")
			fullFetched := summaryInt(t, cliRestore(t, repoURL, curID, ref), "raw_bytes")
			if fullFetched < cur.Totals.RawBytes/2 {
				t.Errorf("a full restore fetched %d bytes of a backup of %d raw bytes", fullFetched, cur.Totals.RawBytes)
			}
			refTree := snapshotTree(t, ref)

			// ownRestore is a fresh restore of the backup, to restore over.
			ownRestore := func(t *testing.T) string {
				dir := filepath.Join(pgtest.TempDir(t), "data")
				cliRestore(t, repoURL, curID, dir)
				return dir
			}
			cases := []struct {
				name string
				// args are added to restore --delta.
				args []string
				// prepare returns the directory to restore over.
				prepare func(t *testing.T) string
				// check judges the summary of the delta restore and the
				// directory before it starts.
				check func(t *testing.T, dir string, rec map[string]string)
			}{{
				name:    "own restore",
				prepare: ownRestore,
				check: func(t *testing.T, dir string, rec map[string]string) {
					// Only pg_control, which a delta sets aside first and
					// writes last, and backup_label may need their chunks.
					allowed := chunkBytesCovering(t, cur, "global/pg_control", "backup_label", "tablespace_map")
					if got := summaryInt(t, rec, "bytes_fetched"); got > allowed {
						t.Errorf("a delta over the backup's own restore fetched %d bytes, want at most %d (the chunks of pg_control and backup_label)", got, allowed)
					}
					if kept := summaryInt(t, rec, "bytes_kept"); kept < cur.Totals.RawBytes/2 {
						t.Errorf("a delta over the backup's own restore kept %d bytes of %d", kept, cur.Totals.RawBytes)
					}
					if got := summaryInt(t, rec, "files_kept"); got < int64(len(cur.Files)/2) {
						t.Errorf("kept %d files of %d", got, len(cur.Files))
					}
				},
			}, {
				// The same without reading: a restore sets every file's
				// mtime to the recorded one.
				name:    "own restore, --delta-check size-mtime",
				args:    []string{"--delta-check", "size-mtime"},
				prepare: ownRestore,
				check: func(t *testing.T, dir string, rec map[string]string) {
					allowed := chunkBytesCovering(t, cur, "global/pg_control", "backup_label", "tablespace_map")
					if got := summaryInt(t, rec, "bytes_fetched"); got > allowed {
						t.Errorf("a size-mtime delta over the backup's own restore fetched %d bytes, want at most %d", got, allowed)
					}
				},
			}, {
				name: "older backup, started since",
				prepare: func(t *testing.T) string {
					dir := filepath.Join(pgtest.TempDir(t), "data")
					cliRestore(t, repoURL, oldID, dir)
					appendAutoConf(t, dir, "autovacuum = off")
					r := restoreChecks(t, major, dir)
					r.Exec(t, "postgres", "INSERT INTO delta_rows SELECT g, 'diverged' FROM generate_series(300001, 300500) g")
					stopped(t, r)
					return dir
				},
				check: func(t *testing.T, dir string, rec map[string]string) {
					got := summaryInt(t, rec, "bytes_fetched")
					t.Logf("delta over an older backup's restore fetched %d bytes, a full restore %d (%.1f%%)", got, fullFetched, 100*float64(got)/float64(fullFetched))
					if got >= fullFetched/2 {
						t.Errorf("a delta over an older restore fetched %d bytes, a full restore %d: want under half", got, fullFetched)
					}
				},
			}, {
				name: "damaged, truncated, extra and missing files",
				prepare: func(t *testing.T) string {
					dir := filepath.Join(pgtest.TempDir(t), "data")
					cliRestore(t, repoURL, curID, dir)
					damage(t, dir, accounts, accountsPkey, branches, dbDir)
					return dir
				},
				check: func(t *testing.T, dir string, rec map[string]string) {
					if n := summaryInt(t, rec, "files_rewritten"); n < 3 {
						t.Errorf("files_rewritten=%d, want at least the damaged, truncated and missing relation files", n)
					}
					if n := summaryInt(t, rec, "entries_removed"); n < 2 {
						t.Errorf("entries_removed=%d, want at least the two extra files", n)
					}
					if got, limit := summaryInt(t, rec, "bytes_fetched"), fullFetched/2; got >= limit {
						t.Errorf("repairing a few files fetched %d bytes, a full restore %d", got, fullFetched)
					}
				},
			}, {
				// "Delta if possible": an empty directory gets a normal
				// restore.
				name: "empty directory",
				prepare: func(t *testing.T) string {
					dir := filepath.Join(pgtest.TempDir(t), "data")
					if err := os.Mkdir(dir, 0o700); err != nil {
						t.Fatal(err)
					}
					return dir
				},
				check: func(t *testing.T, dir string, rec map[string]string) {
					if n := intField(t, rec, "files_kept"); n > 0 {
						t.Errorf("files_kept=%d in an empty directory", n)
					}
				},
			}, {
				name: "promoted former standby",
				prepare: func(t *testing.T) string {
					return standby.DataDir
				},
				check: func(t *testing.T, dir string, rec map[string]string) {
					t.Logf("delta over the promoted standby fetched %d bytes, a full restore %d", summaryInt(t, rec, "bytes_fetched"), fullFetched)
					if _, err := os.Stat(filepath.Join(dir, "standby.signal")); err == nil {
						t.Error("standby.signal is left in the directory")
					}
				},
			}}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t0 := time.Now()
					dir := tc.prepare(t)
					localControl := snapshotTree(t, dir)["global/pg_control"]
					rec := cliRestore(t, repoURL, curID, dir, append([]string{"--delta"}, tc.args...)...)
					for _, leftover := range []string{"global/pg_control.pgstow-delta", "postmaster.pid"} {
						if _, err := os.Lstat(filepath.Join(dir, leftover)); err == nil {
							t.Errorf("%s is left after the delta restore", leftover)
						}
					}
					if _, err := os.Stat(filepath.Join(dir, "global", "pg_control")); err != nil {
						t.Errorf("no pg_control after the delta restore: %v", err)
					}
					tc.check(t, dir, rec)
					// Whatever the directory held, the result is what a
					// fresh restore of the backup writes, byte for byte.
					after := snapshotTree(t, dir)
					if d := treeDiff(refTree, after, 20); len(d) > 0 {
						t.Errorf("after the delta restore the directory differs from a fresh restore of the backup:\n%s", strings.Join(d, "\n"))
					}
					if ctl := after["global/pg_control"]; ctl != refTree["global/pg_control"] && ctl == localControl {
						t.Errorf("global/pg_control is still the directory's own, not the backup's")
					}
					if t.Failed() {
						t.FailNow() // starting would only blur what went wrong
					}
					r := restoreChecks(t, major, dir)
					if got := deltaFingerprint(t, r); got != want {
						t.Errorf("after the delta restore: %s, committed before the backup: %s", got, want)
					}
					if n := r.Query(t, "postgres", "SELECT count(*) FROM delta_rows WHERE id > 100000")[0][0]; n != "0" {
						t.Errorf("%s rows that were not in the backup", n)
					}
					stopped(t, r)
					t.Logf("%s: %s", tc.name, time.Since(t0).Round(100*time.Millisecond))
				})
			}
		})
	}
}

// damage flips bytes in the middle of the relation file accounts keeping
// its size and mtime (so only a checksum notices), puts the shared
// catalogs' pg_filenode.map in place of dbDir's keeping its mtime (a
// whole-file CRC32C cannot tell them apart), truncates accountsPkey
// to half, removes branches and template1's directory base/1, and adds a
// file to dbDir and one at the top.
func damage(t *testing.T, dir, accounts, accountsPkey, branches, dbDir string) {
	t.Helper()
	p := filepath.Join(dir, accounts)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	mid := fi.Size() / 2
	if _, err := f.ReadAt(buf, mid); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] ^= 0x5a
	}
	if _, err := f.WriteAt(buf, mid); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	// A valid pg_filenode.map of another database: same size, and the
	// same CRC32C as every sealed map; its mtime is kept too.
	mp := filepath.Join(dir, dbDir, "pg_filenode.map")
	mi, err := os.Stat(mp)
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(filepath.Join(dir, "global", "pg_filenode.map"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mp, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(mp, mi.ModTime(), mi.ModTime()); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, accountsPkey)
	qi, err := os.Stat(q)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(q, qi.Size()/2); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{branches, "base/1"} {
		if err := os.RemoveAll(filepath.Join(dir, gone)); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string]string{
		filepath.Join(dbDir, "999999"): strings.Repeat("x", 8192),
		"extra-at-the-top":             "not from the backup\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeltaRestoreRefusals: restore --delta refuses a directory where a
// server runs, one of another cluster and one that is no data directory,
// with exit status 1 and one line naming the reason, and leaves each
// directory byte for byte as it was.
func TestDeltaRestoreRefusals(t *testing.T) {
	t.Parallel()
	started := time.Now()
	defer func() { t.Logf("TestDeltaRestoreRefusals took %s", time.Since(started).Round(time.Second)) }()
	major := edgeMajors()[0]
	repoDir := t.TempDir()
	repoURL := "file://" + repoDir
	// No autovacuum: the running server must not write while the
	// directory is compared.
	c := pgtest.Start(t, pgtest.Options{Major: major, Conf: []string{"autovacuum = off"}})
	c.Exec(t, "postgres", "CREATE TABLE refusal_rows AS SELECT g AS id FROM generate_series(1, 1000) g")
	id := cliBackup(t, c, repoURL)
	b := readManifest(t, repoDir, id)

	cases := []struct {
		name string
		// prepare returns the directory and the words the refusal's line
		// must hold.
		prepare func(t *testing.T) (string, []string)
	}{{
		name: "running server",
		prepare: func(t *testing.T) (string, []string) {
			c.Exec(t, "postgres", "CHECKPOINT")
			return c.DataDir, []string{"a server is running", postmasterPID(t, c.DataDir), "stop it first"}
		},
	}, {
		name: "other cluster",
		prepare: func(t *testing.T) (string, []string) {
			o := pgtest.Start(t, pgtest.Options{Major: major})
			sysid := o.Query(t, "postgres", "SELECT system_identifier FROM pg_control_system()")[0][0]
			o.Stop(t)
			if sysid == b.SystemID {
				t.Fatalf("two initdb runs gave the same system identifier %s", sysid)
			}
			return o.DataDir, []string{"system identifier", sysid, b.SystemID}
		},
	}, {
		name: "not a data directory",
		prepare: func(t *testing.T) (string, []string) {
			dir := filepath.Join(pgtest.TempDir(t), "data")
			for name, data := range map[string]string{
				"notes.txt":         "my notes\n",
				"base/1/1259":       strings.Repeat("\x00", 8192),
				"global/pg_control": strings.Repeat("\x01", 8192),
			} {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(data), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			return dir, []string{"not a PostgreSQL data directory"}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, words := tc.prepare(t)
			before := snapshotTree(t, dir)
			r := runCLI(t, 2*time.Minute, nil, "restore", "--repo", repoURL, "--backup", id, "-D", dir, "--delta")
			after := snapshotTree(t, dir)
			t.Logf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
			if r.code != 1 {
				t.Errorf("exit %d, want 1\n%s", r.code, r.stderr)
			}
			if !slices.ContainsFunc(strings.Split(r.stderr, "\n"), func(line string) bool {
				return !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(line, w) })
			}) {
				t.Errorf("no line of stderr holds all of %q:\n%s", words, r.stderr)
			}
			if d := treeDiff(before, after, 20); len(d) > 0 {
				t.Errorf("the refused delta restore changed the directory:\n%s", strings.Join(d, "\n"))
			}
		})
	}

	// --force is no way around a running server: there is no such flag.
	r := runCLI(t, time.Minute, nil, "restore", "--repo", repoURL, "-D", c.DataDir, "--delta", "--force")
	if r.code != 2 {
		t.Errorf("restore --delta --force: exit %d, want 2 (no such flag)\n%s", r.code, r.stderr)
	}
	// The server is unharmed.
	if got := c.Query(t, "postgres", "SELECT count(*) FROM refusal_rows")[0][0]; got != "1000" {
		t.Errorf("the running server holds %s rows after the refused restores, want 1000", got)
	}
}

// postmasterPID is the first line of dir's postmaster.pid.
func postmasterPID(t *testing.T, dir string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		t.Fatalf("empty postmaster.pid in %s", dir)
	}
	pid := strings.TrimSpace(sc.Text())
	if _, err := strconv.Atoi(pid); err != nil {
		t.Fatalf("postmaster.pid starts with %q", pid)
	}
	return pid
}
