package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
)

// TestPITROnNewTimeline: restore a backup and promote it (timeline 2),
// archive on timeline 2 into the same repository, then recover from the
// timeline-1 backup to a point on timeline 2.
func TestPITROnNewTimeline(t *testing.T) {
	t.Parallel()
	repoDir := filepath.Join(pgtest.TempDir(t), "repo")
	repoURL := "file://" + repoDir
	handToServerUser(t, filepath.Dir(pgstowBin))
	archive := []string{
		"archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push --repo %s --log-level warn %%p'", pgstowBin, repoURL),
	}
	c := pgtest.Start(t, pgtest.Options{Major: 15, Conf: archive})
	c.Exec(t, "postgres", "CREATE TABLE tl (id int, batch int)")
	batch := func(c *pgtest.Cluster, n int) {
		c.Exec(t, "postgres", fmt.Sprintf("INSERT INTO tl SELECT g, %d FROM generate_series(1, 100) g", n))
	}
	switchAndArchive := func(c *pgtest.Cluster) {
		last := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
		pgtest.Eventually(t, 2*time.Minute, "the archiver to reach "+last, func() bool {
			return c.Query(t, "postgres", "SELECT coalesce(last_archived_wal, '') >= '"+last+"' FROM pg_stat_archiver")[0][0] == "t"
		})
	}
	if r := runCLI(t, 3*time.Minute, nil, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast"); r.code != 0 {
		t.Fatalf("backup: %s", r.stderr)
	}
	chownServerUser(t, repoDir) // the archiver runs as the server user
	batch(c, 1)
	switchAndArchive(c)
	c.Stop(t)

	// Restore to the end of the archive and promote: timeline 2, which
	// archives into the same repository (its archive_command came along).
	first := filepath.Join(pgtest.TempDir(t), "data")
	if r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "-D", first, "--wal", "fetch"); r.code != 0 {
		t.Fatalf("restore: %s", r.stderr)
	}
	p := restoreChecks(t, 15, first, "-n")
	if tli := p.Query(t, "postgres", "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")[0][0]; tli != "00000002" {
		t.Fatalf("the promoted server writes WAL on timeline %s, want 00000002", tli)
	}
	batch(p, 2)
	target := p.Query(t, "postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0]
	batch(p, 3)
	switchAndArchive(p)
	if ok, _ := openFileRepo(t, repoDir).HasWAL(t.Context(), "00000002.history"); !ok {
		t.Fatal("the promoted server did not archive 00000002.history")
	}
	p.Stop(t)
	chownServerUser(t, repoDir)
	// The archive is continuous across the switch.
	if r := runCLI(t, time.Minute, nil, "verify", "--wal", "--repo", repoURL); r.code != 0 || !strings.Contains(r.stdout, "0 missing") || !strings.Contains(r.stdout, "[1 2]") {
		t.Fatalf("verify --wal exited %d: %s %s", r.code, r.stdout, r.stderr)
	}

	// From the timeline-1 backup to a point on timeline 2.
	second := filepath.Join(pgtest.TempDir(t), "data")
	if r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", repoURL, "-D", second, "--target-time", target, "--target-timeline", "latest"); r.code != 0 {
		t.Fatalf("restore to %s: %s", target, r.stderr)
	}
	f, _ := os.OpenFile(filepath.Join(second, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("archive_mode = off\n")
	f.Close()
	r := restoreChecks(t, 15, second, "-n")
	if got := r.Query(t, "postgres", "SELECT max(batch) || ':' || count(*) FROM tl")[0][0]; got != "2:200" {
		t.Fatalf("rows %s (max batch:count), want 2:200 (batches 1 and 2, on timelines 1 and 2)", got)
	}
}
