package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/restore"
)

// pg15Bin is where Debian's PostgreSQL 15 client tools are; pg_verifybackup
// and pg_checksums exist only for 15 here (ENVIRONMENT.md).
const pg15Bin = "/usr/lib/postgresql/15/bin"

// seedBeforeBackup records committed transactions that any restore must
// hold, and returns a fingerprint of them.
func seedBeforeBackup(t *testing.T, c *pgtest.Cluster) string {
	c.Exec(t, "postgres", "CREATE TABLE committed_before (id int PRIMARY KEY, note text)")
	for i := 0; i < 20; i++ { // separate transactions
		c.Exec(t, "postgres", fmt.Sprintf("INSERT INTO committed_before SELECT g, md5(g::text) FROM generate_series(%d, %d) g", i*1000+1, (i+1)*1000))
	}
	return fingerprint(t, c)
}

// fingerprintSQL sums up committed_before in one value.
const fingerprintSQL = "SELECT count(*) || ':' || md5(string_agg(id || note, ',' ORDER BY id)) FROM committed_before"

func fingerprint(t *testing.T, c *pgtest.Cluster) string {
	r := c.Query(t, "postgres", fingerprintSQL)
	return r[0][0]
}

func tsFingerprint(t *testing.T, c *pgtest.Cluster) string {
	return c.Query(t, "postgres", "SELECT count(*) || ':' || sum(id) FROM in_ts")[0][0]
}

// restoreChecks runs PostgreSQL's own referees on a restored directory and
// starts it.
func restoreChecks(t *testing.T, major int, dataDir string, verifyArgs ...string) *pgtest.Cluster {
	t.Helper()
	if major == 15 {
		args := append([]string{dataDir}, verifyArgs...)
		out, err := exec.Command(filepath.Join(pg15Bin, "pg_verifybackup"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("pg_verifybackup %v: %v\n%s", args, err, out)
		}
		t.Logf("pg_verifybackup: %s", strings.TrimSpace(string(out)))
	}
	r := pgtest.StartDir(t, major, dataDir)
	// With recovery.signal the server accepts connections once consistent
	// and promotes when the archive has no more WAL.
	pgtest.Eventually(t, 2*time.Minute, "the restored server to finish recovery", func() bool {
		return r.Query(t, "postgres", "SELECT pg_is_in_recovery()")[0][0] == "f"
	})
	return r
}

func amcheck(t *testing.T, r *pgtest.Cluster) {
	t.Helper()
	r.Exec(t, "postgres", "CREATE EXTENSION IF NOT EXISTS amcheck")
	out, err := exec.Command(filepath.Join(pg15Bin, "pg_amcheck"), "-h", "127.0.0.1", "-p", fmt.Sprint(r.Port), "-U", "postgres",
		"--heapallindexed", "--install-missing", "-d", "postgres").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_amcheck: %v\n%s", err, out)
	}
}

func pgChecksums(t *testing.T, r *pgtest.Cluster) {
	t.Helper()
	if r.Major != 15 {
		return // only PostgreSQL 15's pg_checksums is installed here
	}
	r.Stop(t)
	cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(pg15Bin, "pg_checksums"), "--check", "-D", r.DataDir)
	if os.Geteuid() != 0 {
		cmd = exec.Command(filepath.Join(pg15Bin, "pg_checksums"), "--check", "-D", r.DataDir)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pg_checksums --check: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Bad checksums:  0") {
		t.Fatalf("pg_checksums: %s", out)
	}
}

// TestRestore: back up while pgbench writes, restore with the tablespace
// remapped, and let PostgreSQL judge the result.
func TestRestore(t *testing.T) {
	t.Parallel()
	for _, major := range pgtest.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			c := pgtest.Start(t, pgtest.Options{Major: major})
			c.Exec(t, "postgres", "CREATE TABLESPACE ts1 LOCATION '"+tablespaceDir(t, c)+"'")
			c.Exec(t, "postgres", "CREATE TABLE in_ts (id int, v text) TABLESPACE ts1; INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
			c.Pgbench(t, "-i", "-s", "5", "postgres")
			want := seedBeforeBackup(t, c)
			wantTS := tsFingerprint(t, c)
			stop := c.StartPgbenchLoad(t, "postgres", 2)
			repo := openFileRepo(t, t.TempDir())
			b, err := backup.Run(t.Context(), repo, backupOpts(t, c))
			stop()
			if err != nil {
				t.Fatalf("backup: %v", err)
			}
			oid := b.Tablespaces[0].OID
			target := filepath.Join(pgtest.TempDir(t), "data")
			newTS := filepath.Join(pgtest.TempDir(t), "ts1-moved")
			res, err := restore.Run(t.Context(), repo, restore.Options{
				Target:      target,
				Tablespaces: map[uint32]string{oid: newTS},
				Log:         testLogger(t),
			})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			t.Logf("restored %d files, %d bytes in %s", res.Files, res.Bytes, res.Elapsed)
			// pgtest hands the data directory to the server user; the
			// tablespace lives outside it.
			chownServerUser(t, newTS)
			r := restoreChecks(t, major, target)
			if got := fingerprint(t, r); got != want {
				t.Fatalf("committed_before: %s after restore, %s before the backup", got, want)
			}
			if got := tsFingerprint(t, r); got != wantTS {
				t.Fatalf("in_ts: %s after restore, %s before", got, wantTS)
			}
			loc := r.Query(t, "postgres", fmt.Sprintf("SELECT pg_tablespace_location(%d)", oid))[0][0]
			if loc != newTS {
				t.Fatalf("tablespace at %q, want %q", loc, newTS)
			}
			amcheck(t, r)
			pgChecksums(t, r)
		})
	}
}

// TestRestoreWALFetch: --wal=fetch yields a server that reaches
// consistency with pgstow wal-fetch as its restore_command.
func TestRestoreWALFetch(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "2", "postgres")
	want := seedBeforeBackup(t, c)
	// The server user runs restore_command: it must reach the binary and
	// the repository.
	repoDir := filepath.Join(pgtest.TempDir(t), "repo")
	repoURL := "file://" + repoDir
	if r := runCLI(t, 3*time.Minute, nil, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast"); r.code != 0 {
		t.Fatalf("backup: %s", r.stderr)
	}
	handToServerUser(t, repoDir, filepath.Dir(pgstowBin))
	target := filepath.Join(pgtest.TempDir(t), "data")
	r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "-D", target, "--wal", "fetch")
	if r.code != 0 {
		t.Fatalf("restore exited %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(target, "recovery.signal")); err != nil {
		t.Fatal(err)
	}
	if segs, _ := filepath.Glob(filepath.Join(target, "pg_wal", "0*")); len(segs) != 0 {
		t.Fatalf("--wal=fetch embedded WAL: %v", segs)
	}
	auto, _ := os.ReadFile(filepath.Join(target, "postgresql.auto.conf"))
	if !strings.Contains(string(auto), "wal-fetch") {
		t.Fatalf("postgresql.auto.conf lacks the restore_command:\n%s", auto)
	}
	rs := restoreChecks(t, 15, target, "-n")
	if got := fingerprint(t, rs); got != want {
		t.Fatalf("committed_before: %s after restore, %s before", got, want)
	}
	log, _ := os.ReadFile(filepath.Join(rs.Dir, "server.log"))
	if !bytes.Contains(log, []byte("restored log file")) {
		t.Logf("server log:\n%s", log)
		t.Fatal("the server did not restore WAL through restore_command")
	}
}

// handToServerUser lets the postgres user read the repository and run the
// pgstow binary.
func handToServerUser(t *testing.T, dirs ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	for _, d := range dirs {
		chownServerUser(t, d)
		os.Chmod(d, 0o755)
	}
}

func chownServerUser(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	if out, err := exec.Command("chown", "-R", "postgres:postgres", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v %s", dir, err, out)
	}
}

// TestWALFetchCLI: the exit codes restore_command relies on.
func TestWALFetchCLI(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	dir := t.TempDir()
	repo := openFileRepo(t, dir)
	o := backupOpts(t, c)
	b, err := backup.Run(t.Context(), repo, o)
	if err != nil {
		t.Fatal(err)
	}
	seg := b.WAL[0]
	out := filepath.Join(t.TempDir(), "seg")
	r := runCLI(t, time.Minute, nil, "wal-fetch", "--repo", "file://"+dir, seg.Name, out)
	if r.code != 0 {
		t.Fatalf("wal-fetch exited %d: %s", r.code, r.stderr)
	}
	data, _ := os.ReadFile(out)
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != seg.SHA256 {
		t.Fatal("wal-fetch wrote other bytes")
	}
	missing := filepath.Join(t.TempDir(), "missing")
	r = runCLI(t, time.Minute, nil, "wal-fetch", "--repo", "file://"+dir, "0000000100000000000000FE", missing)
	if r.code != 1 {
		t.Fatalf("missing segment: exit %d, want 1: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatal("wal-fetch created the destination of a missing segment")
	}
	// Anything else must stop recovery, not end it.
	r = runCLI(t, time.Minute, nil, "wal-fetch", "--repo", "ftp://x", seg.Name, missing)
	if r.code != 128 {
		t.Fatalf("bad repository: exit %d, want 128", r.code)
	}
	r = runCLI(t, time.Minute, nil, "wal-fetch", "--repo", "file://"+dir, seg.Name)
	if r.code != 128 {
		t.Fatalf("missing argument: exit %d, want 128", r.code)
	}
	// Corrupt the stored segment: fatal, nothing written.
	key := filepath.Join(dir, repository.WALKey(seg.Name))
	stored, _ := os.ReadFile(key)
	stored[len(stored)/2] ^= 0xff
	os.WriteFile(key, stored, 0o600)
	r = runCLI(t, time.Minute, nil, "wal-fetch", "--repo", "file://"+dir, seg.Name, missing)
	if r.code != 128 {
		t.Fatalf("corrupt segment: exit %d, want 128: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatal("wal-fetch wrote a corrupt segment")
	}
}

// TestRestoreRefusesDamage: a flipped byte in a chunk, or a hostile
// manifest, fails the restore by name and leaves nothing that looks
// complete.
func TestRestoreRefusesDamage(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "1", "postgres")
	dir := t.TempDir()
	repoURL := "file://" + dir
	if r := runCLI(t, 3*time.Minute, nil, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--chunk-size", "1MB"); r.code != 0 {
		t.Fatalf("backup: %s", r.stderr)
	}
	repo := openFileRepo(t, dir)
	b, err := repo.Backup(t.Context(), "latest")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("corrupt chunk", func(t *testing.T) {
		victim := b.Archives[0].Chunks[len(b.Archives[0].Chunks)/2].ID
		p := filepath.Join(dir, repository.ChunkKey(victim))
		orig, _ := os.ReadFile(p)
		bad := bytes.Clone(orig)
		bad[len(bad)/2] ^= 0x01
		os.WriteFile(p, bad, 0o600)
		defer os.WriteFile(p, orig, 0o600)
		target := filepath.Join(t.TempDir(), "data")
		r := runCLI(t, time.Minute, nil, "restore", "--repo", repoURL, "-D", target)
		if r.code != 1 || !strings.Contains(r.stderr, victim[:12]) || !strings.Contains(r.stderr, "base/") {
			t.Fatalf("exit %d, stderr %s; want failure naming chunk %s and its files", r.code, r.stderr, victim[:12])
		}
		if _, err := os.Stat(filepath.Join(target, "global", "pg_control")); !os.IsNotExist(err) {
			t.Fatal("a failed restore wrote pg_control")
		}
	})

	t.Run("hostile manifest", func(t *testing.T) {
		// Rewrite one file path to climb out of the target, with a valid
		// self-checksum, as an attacker with write access to the bucket
		// would.
		key := filepath.Join(dir, repository.BackupManifestKey(b.ID))
		orig, _ := os.ReadFile(key)
		defer os.WriteFile(key, orig, 0o600)
		victim := b.Files[len(b.Files)/2].Path
		hostile := bytes.Replace(orig, []byte(`"path": "`+victim+`"`), []byte(`"path": "../../escaped"`), 1)
		if bytes.Equal(hostile, orig) {
			hostile = bytes.Replace(orig, []byte(`"path":"`+victim+`"`), []byte(`"path":"../../escaped"`), 1)
		}
		if bytes.Equal(hostile, orig) {
			t.Fatalf("could not find %q in the manifest", victim)
		}
		os.WriteFile(key, resign(t, hostile), 0o600)
		parent := t.TempDir()
		target := filepath.Join(parent, "a", "data")
		r := runCLI(t, time.Minute, nil, "restore", "--repo", repoURL, "-D", target)
		if r.code == 0 || !strings.Contains(r.stderr, "..") {
			t.Fatalf("exit %d, stderr %s; want a refusal naming the path", r.code, r.stderr)
		}
		entries, _ := os.ReadDir(parent)
		if len(entries) > 1 {
			t.Fatalf("something was written beside the target: %v", entries)
		}
		if _, err := os.Stat(filepath.Join(parent, "escaped")); !os.IsNotExist(err) {
			t.Fatal("a file escaped the target")
		}
	})
}

// resign recomputes a manifest's self-checksum after tampering.
func resign(t *testing.T, doc []byte) []byte {
	i := bytes.LastIndex(doc, []byte(`"manifest_sha256"`))
	if i < 0 {
		t.Fatal("no manifest_sha256")
	}
	lineStart := bytes.LastIndexByte(doc[:i], '\n') + 1
	sum := sha256.Sum256(doc[:lineStart])
	rest := doc[lineStart:]
	q := bytes.Index(rest, []byte(`: "`)) + 3
	out := append([]byte{}, doc[:lineStart]...)
	out = append(out, rest[:q]...)
	out = append(out, hex.EncodeToString(sum[:])...)
	return append(out, rest[q+64:]...)
}

// TestRestoreWithoutPgstow runs the recipe of docs/restore-without-pgstow.md,
// as written there, and lets PostgreSQL judge the result.
func TestRestoreWithoutPgstow(t *testing.T) {
	t.Parallel()
	recipe := docBlocks(t, "restore-without-pgstow.md", "restore-without-pgstow", "sh")
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "2", "postgres")
	want := seedBeforeBackup(t, c)
	dir := t.TempDir()
	repo := openFileRepo(t, dir)
	if _, err := backup.Run(t.Context(), repo, backupOpts(t, c)); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(pgtest.TempDir(t), "data")
	cmd := exec.Command("sh", "-euc", string(recipe))
	cmd.Env = append(os.Environ(), "REPO="+dir, "TARGET="+target)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the restore-without-pgstow recipe failed: %v\n%s", err, out)
	}
	r := restoreChecks(t, 15, target)
	if got := fingerprint(t, r); got != want {
		t.Fatalf("committed_before: %s after restore, %s before", got, want)
	}
}
