package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/restore"
)

// TestArchiveCommand: a server archiving through pgstow wal-push under
// pgbench load stores every segment intact, fails none, and a backup that
// relies on that archive (--wal=none) restores and starts.
func TestArchiveCommand(t *testing.T) {
	t.Parallel()
	repoDir := filepath.Join(pgtest.TempDir(t), "repo")
	handToServerUser(t, filepath.Dir(pgstowBin))
	cmd := fmt.Sprintf("%s wal-push --repo file://%s --log-level warn %%p", pgstowBin, repoDir)
	c := pgtest.Start(t, pgtest.Options{Major: 15, Conf: []string{
		"archive_mode = on",
		"archive_command = '" + cmd + "'",
	}})
	c.Pgbench(t, "-i", "-s", "5", "postgres")
	c.Pgbench(t, "-c", "2", "-t", "3000", "postgres")
	want := seedBeforeBackup(t, c)

	// The backup runs as the server user, as archive_command does: both
	// read the repository configuration, so one user must be able to
	// read what the other wrote.
	backupCmd := exec.Command(pgstowBin, "backup", "--repo", "file://"+repoDir, "--pg", c.DSN("postgres"),
		"--wal", "none", "--wal-timeout", "2m", "--checkpoint", "fast")
	if os.Geteuid() == 0 {
		backupCmd = exec.Command("runuser", append([]string{"-u", "postgres", "--"}, backupCmd.Args...)...)
	}
	if out, err := backupCmd.CombinedOutput(); err != nil {
		t.Fatalf("backup relying on archive_command: %v\n%s", err, out)
	}
	repo := openFileRepo(t, repoDir)
	b, err := repo.Backup(t.Context(), "latest")
	if err != nil {
		t.Fatal(err)
	}

	c.Pgbench(t, "-c", "2", "-t", "6000", "postgres") // WAL after the backup
	last := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
	pgtest.Eventually(t, 2*time.Minute, "the archiver to reach "+last, func() bool {
		r := c.Query(t, "postgres", "SELECT coalesce(last_archived_wal, '') >= '"+last+"' FROM pg_stat_archiver")
		return r[0][0] == "t"
	})
	st := c.Query(t, "postgres", "SELECT archived_count, failed_count FROM pg_stat_archiver")[0]
	t.Logf("archiver: %s archived, %s failed", st[0], st[1])
	if st[1] != "0" {
		t.Errorf("archive_command failed %s times", st[1])
	}
	// Every segment from the first to the last is there, and those still
	// in pg_wal match byte for byte.
	_, lastNo, err := manifest.ParseSegmentName(last, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	for no := uint64(1); no <= lastNo; no++ {
		name := manifest.SegmentName(1, no, 16<<20)
		data, _, err := repo.FetchWAL(t.Context(), name)
		if err != nil {
			t.Fatalf("segment %s: %v", name, err)
		}
		if local, err := os.ReadFile(filepath.Join(c.DataDir, "pg_wal", name)); err == nil && !bytes.Equal(local, data) {
			t.Errorf("segment %s differs from the server's copy", name)
		}
	}

	if r := runCLI(t, time.Minute, nil, "verify", "--wal", "--repo", "file://"+repoDir); r.code != 0 || !strings.Contains(r.stdout, "0 missing") {
		t.Fatalf("verify --wal exited %d: %s %s", r.code, r.stdout, r.stderr)
	}
	// A gap after the backup's first segment is found and named.
	_, firstNo, _ := manifest.ParseSegmentName(b.WAL[0].Name, 16<<20)
	if lastNo-firstNo < 2 {
		t.Fatalf("only segments %d..%d: too little WAL for a gap test", firstNo, lastNo)
	}
	gap := manifest.SegmentName(1, (firstNo+lastNo)/2, 16<<20)
	gapKey := filepath.Join(repoDir, repository.WALKey(gap))
	saved, _ := os.ReadFile(gapKey)
	os.Remove(gapKey)
	if r := runCLI(t, time.Minute, nil, "verify", "--wal", "--repo", "file://"+repoDir); r.code != 1 || !strings.Contains(r.stdout, "missing "+gap) {
		t.Fatalf("verify --wal with %s removed exited %d: %s", gap, r.code, r.stdout)
	}
	os.WriteFile(gapKey, saved, 0o600)

	target := filepath.Join(pgtest.TempDir(t), "data")
	if _, err := restore.Run(t.Context(), repo, restore.Options{Target: target, BackupID: b.ID, Log: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	// The restored server must not archive into the same repository.
	f, err := os.OpenFile(filepath.Join(target, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("archive_mode = off\n")
	f.Close()
	r := restoreChecks(t, 15, target)
	if got := fingerprint(t, r); got != want {
		t.Fatalf("committed_before: %s after restore, %s before", got, want)
	}
}

// TestWALPushChecksCluster: wal-push reads the cluster a segment belongs
// to from its first page: it binds a new repository to that cluster and
// refuses a repository of another one before storing anything.
func TestWALPushChecksCluster(t *testing.T) {
	t.Parallel()
	a := pgtest.Start(t, pgtest.Options{Major: 15})
	b := pgtest.Start(t, pgtest.Options{Major: 15})
	// A flushed segment of cluster b, well past any name cluster a uses.
	for i := range 6 {
		b.Exec(t, "postgres", fmt.Sprintf("CREATE TABLE t%d AS SELECT 1 AS x", i))
		b.Exec(t, "postgres", "SELECT pg_switch_wal()")
	}
	b.Exec(t, "postgres", "CREATE TABLE t AS SELECT 1 AS x")
	seg := b.Query(t, "postgres", "SELECT pg_walfile_name(pg_current_wal_flush_lsn())")[0][0]
	bID := b.Query(t, "postgres", "SELECT system_identifier FROM pg_control_system()")[0][0]
	segPath := filepath.Join(b.DataDir, "pg_wal", seg)

	// A new repository is bound to the segment's cluster.
	fresh := t.TempDir()
	if r := runCLI(t, time.Minute, nil, "wal-push", "--repo", "file://"+fresh, segPath); r.code != 0 {
		t.Fatalf("wal-push into a new repository: exit %d %s", r.code, r.stderr)
	}
	data, err := os.ReadFile(filepath.Join(fresh, repository.RepoKey))
	if err != nil {
		t.Fatalf("wal-push did not bind the new repository: %v", err)
	}
	cfg, err := manifest.DecodeRepo(data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SystemID != bID || cfg.WALSegmentSize != 16<<20 {
		t.Errorf("bound to cluster %s, segment size %d; want %s, 16 MiB", cfg.SystemID, cfg.WALSegmentSize, bID)
	}

	// The repository of cluster a refuses b's segment, and stores nothing.
	repoDir := t.TempDir()
	cliBackup(t, a, "file://"+repoDir)
	r := runCLI(t, time.Minute, nil, "wal-push", "--repo", "file://"+repoDir, segPath)
	if r.code != 1 || !strings.Contains(r.stderr, "cluster "+bID) {
		t.Errorf("wal-push of another cluster's segment: exit %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(repoDir, filepath.FromSlash(repository.WALKey(seg)))); !os.IsNotExist(err) {
		t.Errorf("another cluster's segment was stored: %v", err)
	}
}
