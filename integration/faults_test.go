package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/repository"
)

// slowBackup starts a throttled backup of c into dir through dsn and
// returns once it is storing chunks, mid-stream.
func slowBackup(t *testing.T, dsn, dir string, extra ...string) (*exec.Cmd, *testserver.LockedBuffer) {
	t.Helper()
	args := append([]string{"backup", "--repo", "file://" + dir, "--pg", dsn, "--checkpoint", "fast",
		"--chunk-size", "1MB", "--max-rate", "2MB"}, extra...)
	cmd := exec.Command(pgstowRaceBin, args...)
	out := &testserver.LockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pgtest.Eventually(t, 2*time.Minute, "the backup to store chunks", func() bool {
		n, _ := filepath.Glob(filepath.Join(dir, "chunks", "*", "*"))
		return len(n) >= 3
	})
	return cmd, out
}

// exitWithin waits for cmd and returns its exit code, failing the test if
// it takes longer than limit.
func exitWithin(t *testing.T, cmd *exec.Cmd, limit time.Duration, out *testserver.LockedBuffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		return 0
	case <-time.After(limit):
		t.Fatalf("pgstow did not exit within %s of the fault; output so far:\n%s", limit, out.String())
		return -1
	}
}

// nothingPublished checks the promise after a failed backup: no visible
// backup, no replication slot left on the server, no lease left behind.
func nothingPublished(t *testing.T, c *pgtest.Cluster, dir string, slotWait time.Duration) {
	t.Helper()
	r := runCLI(t, time.Minute, nil, "list", "--repo", "file://"+dir, "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("after the fault, list shows %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
	pgtest.Eventually(t, slotWait, "the temporary replication slot to go", func() bool {
		return c.Query(t, "postgres", "SELECT count(*) FROM pg_replication_slots")[0][0] == "0"
	})
	if leases, _ := filepath.Glob(filepath.Join(dir, "locks", "*")); len(leases) != 0 {
		t.Errorf("leases left behind: %v", leases)
	}
}

// TestSignalsAbortBackup: SIGINT and SIGTERM stop a backup mid-stream with
// exit 130 and 143, a message saying so, nothing published, no slot left
// and none of the chunks it stored; the repository takes the next backup.
func TestSignalsAbortBackup(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 17})
	c.Pgbench(t, "-i", "-s", "5", "postgres")
	for _, tc := range []struct {
		sig  syscall.Signal
		name string
		code int
	}{
		{syscall.SIGINT, "SIGINT", 130},
		{syscall.SIGTERM, "SIGTERM", 143},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd, out := slowBackup(t, c.DSN("postgres"), dir)
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			if code := exitWithin(t, cmd, 30*time.Second, out); code != tc.code {
				t.Fatalf("exit %d after %s, want %d:\n%s", code, tc.name, tc.code, out.String())
			}
			if msg := out.String(); !strings.Contains(msg, "interrupted by "+tc.name) || !strings.Contains(msg, "nothing was committed") {
				t.Errorf("the message does not say what happened:\n%s", msg)
			}
			// Interrupted, it still removes the chunks it stored, and
			// says so.
			if msg := out.String(); !strings.Contains(msg, "removed the ") {
				t.Errorf("the message does not say what the interrupted backup removed:\n%s", msg)
			}
			if left := chunkFiles(t, dir); len(left) != 0 {
				t.Errorf("the interrupted backup left %d chunks", len(left))
			}
			nothingPublished(t, c, dir, 30*time.Second)
			cliBackup(t, c, "file://"+dir)
		})
	}
}

// TestServerSideFaults: the walsender terminated, and the server
// restarted, in the middle of a backup. pgstow fails at once with a
// message naming the cause and publishes nothing.
func TestServerSideFaults(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 17})
	c.Pgbench(t, "-i", "-s", "5", "postgres")
	for _, tc := range []struct {
		name  string
		fault func(t *testing.T)
		says  string
	}{
		{"walsender terminated", func(t *testing.T) {
			r := c.Query(t, "postgres", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'walsender' AND query LIKE 'BASE_BACKUP%'")
			if r[0][0] != "1" {
				t.Fatalf("terminated %s walsenders, want 1", r[0][0])
			}
		}, "terminating connection due to administrator command"},
		{"server restarted", func(t *testing.T) { c.Restart(t) }, "terminating connection due to administrator command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd, out := slowBackup(t, c.DSN("postgres"), dir)
			tc.fault(t)
			code := exitWithin(t, cmd, time.Minute, out)
			msg := out.String()
			if code != 1 || !strings.Contains(msg, tc.says) {
				t.Fatalf("exit %d, want 1 with a message containing %q:\n%s", code, tc.says, msg)
			}
			nothingPublished(t, c, dir, 30*time.Second)
		})
	}
}

// TestStalledNetwork: the path to the server stops forwarding without
// closing (what keepalives cannot see). The backup fails within its
// --io-timeout, says the connection stalled, and publishes nothing; the
// server drops the slot once its wal_sender_timeout passes.
func TestStalledNetwork(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 17, Conf: []string{"wal_sender_timeout = '5s'"}})
	c.Pgbench(t, "-i", "-s", "5", "postgres")
	proxy := testserver.StartTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", c.Port))
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", proxy.Port())
	dir := t.TempDir()
	cmd, out := slowBackup(t, dsn, dir, "--io-timeout", "5s")
	stalled := time.Now()
	proxy.Stall()
	code := exitWithin(t, cmd, time.Minute, out)
	msg := out.String()
	if code != 1 || !strings.Contains(msg, "stalled") {
		t.Fatalf("exit %d, want 1 with a message saying the connection stalled:\n%s", code, msg)
	}
	t.Logf("failed %s after the stall", time.Since(stalled).Round(100*time.Millisecond))
	nothingPublished(t, c, dir, time.Minute)
}

// mountTmpfs mounts a tmpfs of size bytes (read-only when ro) and
// unmounts it when the test ends. It needs root, as these tests run.
func mountTmpfs(t *testing.T, size int64, ro bool) string {
	t.Helper()
	dir := t.TempDir()
	opts := fmt.Sprintf("size=%d", size)
	if ro {
		opts += ",ro"
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a %d-byte tmpfs for the disk-full test (needs root and CAP_SYS_ADMIN): %v\n%s", size, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// TestRestoreFaults: a target that fills up, a read-only target and a
// chunk missing from the store each fail the restore with a message
// naming the cause, and leave nothing that looks like a data directory.
func TestRestoreFaults(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 17})
	c.Pgbench(t, "-i", "-s", "2", "postgres")
	dir := t.TempDir()
	id := cliBackup(t, c, "file://"+dir)
	b := readManifest(t, dir, id)
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) string
		break_ func(t *testing.T) (undo func())
		says   []string
	}{
		{"disk full", func(t *testing.T) string { return filepath.Join(mountTmpfs(t, 8<<20, false), "data") }, nil,
			[]string{"no space left on device", "incomplete"}},
		{"read-only target", func(t *testing.T) string { return filepath.Join(mountTmpfs(t, 1<<20, true), "data") }, nil,
			[]string{"read-only file system"}},
		{"chunk missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "data") }, func(t *testing.T) func() {
			key := filepath.Join(dir, filepath.FromSlash(repository.ChunkKey(b.Archives[0].Chunks[1].ID)))
			data, err := os.ReadFile(key)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(key); err != nil {
				t.Fatal(err)
			}
			return func() { _ = os.WriteFile(key, data, 0o600) }
		}, []string{b.Archives[0].Chunks[1].ID, "could not be downloaded", "incomplete"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target(t)
			if tc.break_ != nil {
				defer tc.break_(t)()
			}
			r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", "file://"+dir, "-D", target)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", r.code, r.stderr)
			}
			for _, want := range tc.says {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("the message lacks %q:\n%s", want, r.stderr)
				}
			}
			if _, err := os.Stat(filepath.Join(target, "global", "pg_control")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed restore left global/pg_control (%v)", err)
			}
		})
	}
}

// TestBackupDiskFull: a backup into a file:// repository on a disk that
// fills up fails, naming the cause, and removes the chunks it stored
// (issue 19: they used to stay, and the default gc spared them for an
// hour), saying so in its one-line error. The backup committed before
// still verifies, and nothing else is published or left locked.
func TestBackupDiskFull(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: pgtest.Majors()[0]})
	dir := filepath.Join(mountTmpfs(t, 24<<20, false), "repo")
	repoURL := "file://" + dir
	id := cliBackup(t, c, repoURL)
	before := chunkFiles(t, dir)
	// About 60 MB that LZ4 shrinks only to 40: the next backup's new
	// chunks do not fit.
	c.Exec(t, "postgres", "CREATE TABLE junk AS SELECT md5(random()::text) || md5(random()::text) AS a FROM generate_series(1, 600000)")

	r := runCLI(t, 5*time.Minute, nil, "backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--chunk-size", "1MB", "--progress", "never")
	if r.code != 1 {
		t.Fatalf("backup into a full disk exited %d, want 1:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	msg := strings.TrimSpace(r.stderr[strings.LastIndex(strings.TrimSpace(r.stderr), "\n")+1:])
	for _, want := range []string{"no space left on device", "removed the ", " chunk(s) ("} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error lacks %q:\n%s", want, r.stderr)
		}
	}
	after := chunkFiles(t, dir)
	for k := range after {
		if !before[k] {
			t.Errorf("chunk %s of the failed backup is still stored", k)
		}
	}
	for k := range before {
		if !after[k] {
			t.Errorf("chunk %s of the committed backup was removed", k)
		}
	}
	if r := runCLI(t, 3*time.Minute, nil, "verify", id, "--repo", repoURL); r.code != 0 || !strings.Contains(r.stdout, id+"  OK  full") {
		t.Errorf("the committed backup does not verify after the failed one (exit %d):\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, time.Minute, nil, "list", "--repo", repoURL); r.code != 0 || strings.Count(strings.TrimSpace(r.stdout), "\n") != 1 || !strings.Contains(r.stdout, id) {
		t.Errorf("list after the failure:\n%s\n%s", r.stdout, r.stderr)
	}
	if leases, _ := filepath.Glob(filepath.Join(dir, "locks", "*")); len(leases) != 0 {
		t.Errorf("leases left behind: %v", leases)
	}
	t.Logf("failed backup said: %s", msg)
}

// chunkFiles returns the set of chunk keys stored in a file:// repository.
func chunkFiles(t *testing.T, dir string) map[string]bool {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "chunks", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range names {
		out[filepath.Base(n)] = true
	}
	return out
}

// TestConcurrentBackups: two backups of one cluster into one repository
// at the same time, while pgbench writes on both cores: both commit, under
// different ids, and both restore to servers holding what was committed
// before they started.
func TestConcurrentBackups(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 17})
	c.Pgbench(t, "-i", "-s", "3", "postgres")
	want := seedBeforeBackup(t, c)
	stop := c.StartPgbenchLoad(t, "postgres", 2)
	dir := t.TempDir()
	ids := make([]string, 2)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { ids[i] = cliBackup(t, c, "file://"+dir, "--max-rate", "16MB") })
	}
	wg.Wait()
	stop()
	if ids[0] == ids[1] {
		t.Fatalf("both backups committed as %s", ids[0])
	}
	if v, r := runVerify(t, "file://"+dir, "--all"); r.code != 0 || !v.OK || len(v.Backups) != 2 {
		t.Fatalf("verify: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, id := range ids {
		target := filepath.Join(pgtest.TempDir(t), "restored")
		if r := runCLI(t, 3*time.Minute, nil, "restore", "--repo", "file://"+dir, "--backup", id, "-D", target); r.code != 0 {
			t.Fatalf("restore %s: exit %d: %s", id, r.code, r.stderr)
		}
		handToServerUser(t, target)
		rc := restoreChecks(t, 17, target)
		if got := fingerprint(t, rc); got != want {
			t.Errorf("backup %s restored %s, want %s", id, got, want)
		}
		rc.Stop(t)
	}
}
