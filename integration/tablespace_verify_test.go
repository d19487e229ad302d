package integration

import (
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
)

// inTSSQL sums up every row of in_ts in one value.
const inTSSQL = "SELECT count(*) || ':' || md5(string_agg(id || v, ',' ORDER BY id)) FROM in_ts"

// TestRestoreRemappedTablespaceVerifies: a backup with a user tablespace,
// restored with --tablespace OID=DIR, leaves a directory that
// pg_verifybackup accepts as it is (no -i), that starts and reads the
// tablespace's rows from the new location, and nothing is written into
// the tablespace's original location, before or after the restored server
// runs.
func TestRestoreRemappedTablespaceVerifies(t *testing.T) {
	t.Parallel()
	for _, major := range pgtest.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			c := pgtest.Start(t, pgtest.Options{Major: major})
			origTS := tablespaceDir(t, c)
			c.Exec(t, "postgres", "CREATE TABLESPACE ts1 LOCATION '"+origTS+"'")
			c.Exec(t, "postgres", "CREATE TABLE in_ts (id int PRIMARY KEY, v text) TABLESPACE ts1; INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 30000) g")
			want := c.Query(t, "postgres", inTSSQL)[0][0]
			oid := c.Query(t, "postgres", "SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")[0][0]

			repoURL := "file://" + filepath.Join(t.TempDir(), "repo")
			if r := runCLI(t, 3*time.Minute, nil, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast"); r.code != 0 {
				t.Fatalf("backup exited %d: %s", r.code, r.stderr)
			}
			// The source stops, so that its tablespace directory changes
			// only if the restore or the restored server writes into it.
			c.Stop(t)
			before := snapshotDir(t, origTS)

			target := filepath.Join(pgtest.TempDir(t), "data")
			newTS := filepath.Join(pgtest.TempDir(t), "ts1-moved")
			r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "-D", target, "--tablespace", oid+"="+newTS)
			if r.code != 0 {
				t.Fatalf("restore exited %d: %s", r.code, r.stderr)
			}
			if _, err := os.Lstat(filepath.Join(target, "tablespace_map")); !os.IsNotExist(err) {
				t.Errorf("tablespace_map is in the restored directory (%v); a remapped restore leaves it out", err)
			}
			if got, err := os.Readlink(filepath.Join(target, "pg_tblspc", oid)); err != nil || got != newTS {
				t.Errorf("pg_tblspc/%s links to %q (%v), want %q", oid, got, err, newTS)
			}
			// Our own referee, on every major (PostgreSQL 15's
			// pg_verifybackup reads no version 2 manifest), before the
			// server changes anything.
			checkAgainstPGManifest(t, target)
			chownServerUser(t, newTS)
			// pg_verifybackup with no option on 15: a failure here is the
			// one issue 17 reports.
			rs := restoreChecks(t, major, target)
			if got := rs.Query(t, "postgres", inTSSQL)[0][0]; got != want {
				t.Fatalf("in_ts: %s after restore, %s before the backup", got, want)
			}
			if loc := rs.Query(t, "postgres", "SELECT pg_tablespace_location("+oid+")")[0][0]; loc != newTS {
				t.Fatalf("tablespace %s at %q, want %q", oid, loc, newTS)
			}
			// Writes into the tablespace land in the new location.
			rs.Exec(t, "postgres", "INSERT INTO in_ts SELECT g, 'after' FROM generate_series(30001, 31000) g; CREATE TABLE in_ts2 TABLESPACE ts1 AS SELECT * FROM in_ts; CHECKPOINT")
			rel := rs.Query(t, "postgres", "SELECT pg_relation_filepath('in_ts2')")[0][0]
			if _, err := os.Stat(filepath.Join(rs.DataDir, rel)); err != nil || !strings.HasPrefix(rel, "pg_tblspc/"+oid+"/") {
				t.Fatalf("in_ts2 at %s: %v", rel, err)
			}
			if n, _ := filepath.Glob(filepath.Join(newTS, "PG_*", "*", filepath.Base(rel))); len(n) != 1 {
				t.Fatalf("in_ts2's file %s is not under %s", filepath.Base(rel), newTS)
			}
			rs.Stop(t)
			if diff := cmp.Diff(before, snapshotDir(t, origTS)); diff != "" {
				t.Fatalf("the original tablespace location %s changed (-before +after):\n%s", origTS, diff)
			}
		})
	}
}

// snapshotDir records every entry below dir: type, size and content hash.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			snap[rel] = "dir " + info.Mode().String()
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			snap[rel] = fmt.Sprintf("file %s %d %x %s", info.Mode(), info.Size(), sum, info.ModTime().UTC())
		default:
			snap[rel] = info.Mode().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// checkAgainstPGManifest checks a restored directory against its
// backup_manifest the way pg_verifybackup does for a plain-format backup:
// the manifest's own checksum, every regular file (following the
// pg_tblspc links) listed with its size and CRC32C, and every entry
// present, with the same files left out of the comparison.
func checkAgainstPGManifest(t *testing.T, dir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "backup_manifest"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.ParsePGManifest(data)
	if err != nil {
		t.Fatalf("backup_manifest: %v", err)
	}
	want := map[string]manifest.PGFile{}
	for _, f := range m.Files {
		want[f.Path] = f
	}
	// Left out both ways: on disk and in the manifest.
	ignored := map[string]bool{"backup_manifest": true, "pg_wal": true, "postgresql.auto.conf": true, "recovery.signal": true, "standby.signal": true}
	for p := range want {
		if top, _, _ := strings.Cut(p, "/"); ignored[top] {
			delete(want, p)
		}
	}
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	var walk func(rel string)
	walk = func(rel string) {
		entries, err := os.ReadDir(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := filepath.Join(rel, e.Name())
			if ignored[p] {
				continue
			}
			fi, err := os.Stat(filepath.Join(dir, p)) // follows the links, as pg_verifybackup does
			if err != nil {
				t.Fatal(err)
			}
			if fi.IsDir() {
				walk(p)
				continue
			}
			f, ok := want[p]
			if !ok {
				t.Errorf("%s is on disk but not in backup_manifest", p)
				continue
			}
			delete(want, p)
			if f.Size != fi.Size() {
				t.Errorf("%s: %d bytes on disk, %d in backup_manifest", p, fi.Size(), f.Size)
				continue
			}
			if f.ChecksumAlgorithm != "CRC32C" {
				t.Fatalf("%s: checksum algorithm %q, want CRC32C", p, f.ChecksumAlgorithm)
			}
			wantCRC, err := manifest.PGChecksumCRC32C(f.Checksum)
			if err != nil {
				t.Fatal(err)
			}
			in, err := os.Open(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			crc := crc32.New(castagnoli)
			_, err = io.Copy(crc, in)
			in.Close()
			if err != nil {
				t.Fatal(err)
			}
			if crc.Sum32() != wantCRC {
				t.Errorf("%s: CRC32C %08x on disk, %08x in backup_manifest", p, crc.Sum32(), wantCRC)
			}
		}
	}
	walk("")
	for p := range want {
		t.Errorf("%s is in backup_manifest but not on disk", p)
	}
	t.Logf("checked %s against the %d files of its backup_manifest", dir, len(m.Files))
}
