package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
)

// TestDeltaRestoreStartPITR: restore --delta --start --target-time over a
// directory restored from an older backup and started since (so it has
// diverged on a timeline of its own) brings up a server holding exactly
// the rows committed before the target: none after it, none of the
// diverged copy's. The WAL comes from wal-push archiving, fetched as the
// server's user, and the summary shows files kept and fewer bytes fetched
// than the backup holds.
//
// Parallel, unlike TestRestoreStartPITR: that one is serial because it
// looks for a line in the server log restore --start quotes on failure;
// this one only succeeds, and judges the server by querying it.
func TestDeltaRestoreStartPITR(t *testing.T) {
	t.Parallel()
	started := time.Now()
	defer func() { t.Logf("TestDeltaRestoreStartPITR took %s", time.Since(started).Round(time.Second)) }()
	repoDir := filepath.Join(pgtest.TempDir(t), "repo")
	repoURL := "file://" + repoDir
	handToServerUser(t, filepath.Dir(pgstowBin))
	c := pgtest.Start(t, pgtest.Options{Major: 15, Conf: []string{
		"archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push --repo %s --log-level warn %%p'", pgstowBin, repoURL),
	}})
	insert := func(lo, hi int) {
		c.Exec(t, "postgres", fmt.Sprintf("INSERT INTO events SELECT g, 'source ' || g FROM generate_series(%d, %d) g", lo, hi))
	}
	c.Exec(t, "postgres", "CREATE TABLE events (id int PRIMARY KEY, note text)")
	insert(1, 100)
	oldID := cliBackup(t, c, repoURL)
	chownServerUser(t, repoDir) // wal-push runs as the server user

	// The older backup's restore, started (without archiving into the
	// repository: its timeline's WAL must not reach the archive) and
	// written to, then stopped: a stale copy that has diverged.
	dir := seedDir(t)
	cliRestore(t, repoURL, oldID, dir)
	appendAutoConf(t, dir, "archive_mode = off")
	stale := pgtest.StartDir(t, 15, dir)
	pgtest.Eventually(t, 2*time.Minute, "the stale copy to finish recovery", func() bool {
		return stale.Query(t, "postgres", "SELECT pg_is_in_recovery()")[0][0] == "f"
	})
	stale.Exec(t, "postgres", "INSERT INTO events VALUES (900001, 'diverged')")
	stale.Exec(t, "postgres", "CHECKPOINT")
	stopped(t, stale)

	insert(101, 200)
	curID := cliBackup(t, c, repoURL)
	cur := readManifest(t, repoDir, curID)
	chownServerUser(t, repoDir)
	insert(201, 300)
	target := c.Query(t, "postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0]
	insert(301, 400)
	last := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
	pgtest.Eventually(t, 2*time.Minute, "the archiver to reach "+last, func() bool {
		return c.Query(t, "postgres", "SELECT coalesce(last_archived_wal, '') >= '"+last+"' FROM pg_stat_archiver")[0][0] == "t"
	})
	handToServerUser(t, repoDir) // restore_command runs as the server user

	r := runCLI(t, 5*time.Minute, nil, "restore", "--repo", repoURL, "-D", dir, "--delta",
		"--start", "--target-time", target, "--start-timeout", "2m", "--json")
	if r.code != 0 {
		t.Fatalf("restore --delta --start --target-time exited %d:\n%s", r.code, r.stderr)
	}
	recs := logRecords(r.stderr, "restore complete")
	if len(recs) != 1 {
		t.Fatalf("%d \"restore complete\" records, want 1:\n%s", len(recs), r.stderr)
	}
	rec := recs[0]
	t.Logf("restore complete: %v", rec)
	if rec["backup"] != curID || rec["delta"] != "true" {
		t.Errorf("restored backup %s (delta=%s), want %s, the newest before the target, as a delta", rec["backup"], rec["delta"], curID)
	}
	if n := summaryInt(t, rec, "files_kept"); n <= 0 {
		t.Errorf("files_kept=%d: nothing of the stale copy was kept", n)
	}
	if got := summaryInt(t, rec, "bytes_fetched"); got >= cur.Totals.RawBytes {
		t.Errorf("bytes_fetched=%d, not less than the backup's %d raw bytes", got, cur.Totals.RawBytes)
	}
	if !strings.Contains(r.stderr, "files kept") || !strings.Contains(r.stderr, "fetched") {
		t.Errorf("the printed summary does not say what was kept and fetched:\n%s", r.stderr)
	}
	var s struct {
		URI     string `json:"uri"`
		DataDir string `json:"data_dir"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("--json output %q: %v", r.stdout, err)
	}
	if s.DataDir != dir {
		t.Errorf("--json data_dir %q, want %q", s.DataDir, dir)
	}
	if _, err := os.Lstat(filepath.Join(dir, "global", "pg_control.pgstow-delta")); err == nil {
		t.Error("global/pg_control.pgstow-delta is left after the delta restore")
	}

	// Recovery is over when the URI is printed.
	const sql = "SELECT count(*) || '/' || coalesce(max(id), 0) || '/' || count(*) FILTER (WHERE note = 'diverged') || '/' || pg_is_in_recovery() FROM events"
	if got, want := queryURI(t, s.URI, sql), "300/300/0/false"; got != want {
		t.Errorf("at the target time: %s rows/max id/diverged rows/in recovery, want %s", got, want)
	}

	if r := runCLI(t, 2*time.Minute, nil, "discard", "-D", dir); r.code != 0 {
		t.Fatalf("discard: exit %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after discard: %v", dir, err)
	}
	if !refused(s.URI) {
		t.Errorf("the server at %s still accepts connections after discard", s.URI)
	}
}
