package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgstow/pgstow/integration/pgtest"
)

// TestCLIBackupAndList runs the binary the way the README does.
func TestCLIBackupAndList(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Pgbench(t, "-i", "-s", "1", "postgres")
	repo := "file://" + t.TempDir()
	env := []string{"PGSTOW_REPO=" + repo, "PGHOST=127.0.0.1", fmt.Sprintf("PGPORT=%d", c.Port), "PGUSER=postgres"}
	r := runCLI(t, 3*time.Minute, env, "backup", "--checkpoint", "fast", "--label", "nightly")
	if r.code != 0 {
		t.Fatalf("backup exited %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "committed") {
		t.Fatalf("backup printed %q", r.stdout)
	}
	r = runCLI(t, time.Minute, env, "list")
	if r.code != 0 || !strings.Contains(r.stdout, "nightly") || !strings.Contains(r.stdout, "LSN RANGE") {
		t.Fatalf("list exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, time.Minute, env, "list", "--json")
	var entries []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || len(entries) != 1 {
		t.Fatalf("list --json: %v: %s", err, r.stdout)
	}
	if entries[0]["label"] != "nightly" || entries[0]["wal_segments"].(float64) < 1 {
		t.Fatalf("list --json entry %v", entries[0])
	}
}

// TestKillMidStream: a backup killed with SIGKILL while streaming leaves no
// visible backup and no replication slot, and the next run succeeds.
func TestKillMidStream(t *testing.T) {
	t.Parallel()
	// The walsender notices a vanished client only when it next writes,
	// at the latest after wal_sender_timeout/2.
	c := pgtest.Start(t, pgtest.Options{Major: 15, Conf: []string{"wal_sender_timeout = '4s'"}})
	c.Pgbench(t, "-i", "-s", "10", "postgres")
	dir := t.TempDir()
	repo := "file://" + dir
	args := []string{"backup", "--repo", repo, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--chunk-size", "1MB"}
	cmd := exec.Command(pgstowRaceBin, append(args, "--max-rate", "4MB")...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() }) // if a wait below fails
	// Wait until chunks are being stored: the backup is mid-stream.
	pgtest.Eventually(t, 2*time.Minute, "chunks to be stored", func() bool {
		n, _ := filepath.Glob(filepath.Join(dir, "chunks", "*", "*"))
		return len(n) >= 3
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	r := runCLI(t, time.Minute, nil, "list", "--repo", repo, "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("after the kill, list shows %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
	// The temporary slot dies with the connection.
	pgtest.Eventually(t, 30*time.Second, "replication slots to go", func() bool {
		return c.Query(t, "postgres", "SELECT count(*) FROM pg_replication_slots")[0][0] == "0"
	})
	r = runCLI(t, 5*time.Minute, nil, args...)
	if r.code != 0 {
		t.Fatalf("second run exited %d: %s", r.code, r.stderr)
	}
	r = runCLI(t, time.Minute, nil, "list", "--repo", repo, "--json")
	var entries []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || len(entries) != 1 {
		t.Fatalf("after the re-run, list --json: %v: %s", err, r.stdout)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestBadInput: each mistake gets one clear line and a non-zero exit, fast.
func TestBadInput(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Exec(t, "postgres", "CREATE ROLE norepl LOGIN")
	other := pgtest.Start(t, pgtest.Options{Major: 15})
	old := pgtest.Start(t, pgtest.Options{Major: 14})

	// A repository that belongs to the first cluster.
	taken := "file://" + t.TempDir()
	if r := runCLI(t, 3*time.Minute, nil, "backup", "--repo", taken, "--pg", c.DSN("postgres"), "--checkpoint", "fast"); r.code != 0 {
		t.Fatalf("setup backup exited %d: %s", r.code, r.stderr)
	}

	// Usage errors must be found before anything is touched: the rows
	// below name a repository directory that must stay uncreated, and a
	// server nothing listens on, so a late check fails with exit 1.
	fresh := filepath.Join(t.TempDir(), "repo")
	dead := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres connect_timeout=5", freePort(t))
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "PG_VERSION"), []byte("15\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		env      []string
		code     int
		contains []string
	}{
		{"unreachable server", []string{"backup", "--repo", "file://" + t.TempDir(),
			"--pg", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres connect_timeout=5", freePort(t))},
			nil, 1, []string{"connect to 127.0.0.1:", "refused"}},
		{"role without REPLICATION", []string{"backup", "--repo", "file://" + t.TempDir(),
			"--pg", fmt.Sprintf("host=127.0.0.1 port=%d user=norepl dbname=postgres", c.Port)},
			nil, 1, []string{"norepl", "REPLICATION", "ALTER ROLE"}},
		{"server older than 15", []string{"backup", "--repo", "file://" + t.TempDir(), "--pg", old.DSN("postgres")},
			nil, 1, []string{"PostgreSQL 14", "15 or newer"}},
		{"unknown repository scheme", []string{"backup", "--repo", "ftp://host/x", "--pg", c.DSN("postgres")},
			nil, 2, []string{"unknown scheme \"ftp\""}},
		{"no repository", []string{"list"}, nil, 2, []string{"--repo", "PGSTOW_REPO"}},
		{"relative file URL", []string{"list", "--repo", "file://relative/path"}, nil, 2, []string{"absolute path"}},
		{"repository of another cluster", []string{"backup", "--repo", taken, "--pg", other.DSN("postgres"), "--checkpoint", "fast"},
			nil, 1, []string{"another cluster", "use another repository"}},
		{"password is not echoed", []string{"backup", "--repo", "file://" + t.TempDir(),
			"--pg", fmt.Sprintf("postgres://postgres:sekr1t@127.0.0.1:%d/postgres?connect_timeout=5", freePort(t))},
			nil, 1, []string{"connect to 127.0.0.1:"}},
		{"bad flag value", []string{"backup", "--repo", taken, "--wal", "sometimes"}, nil, 2, []string{"--wal"}},
		{"standby and a throw-away server", []string{"restore", "--repo", taken, "-D", filepath.Join(t.TempDir(), "x"), "--standby", "--start"},
			nil, 2, []string{"--standby and --start"}},
		{"max-rate below PostgreSQL's minimum", []string{"backup", "--repo", "file://" + fresh, "--pg", dead, "--max-rate", "1"},
			nil, 2, []string{"--max-rate", "32kB to 1GB"}},
		{"negative wal-timeout", []string{"backup", "--repo", "file://" + fresh, "--pg", dead, "--wal-timeout", "-5s"},
			nil, 2, []string{"--wal-timeout -5s", "above zero"}},
		{"unknown server compression", []string{"backup", "--repo", "file://" + fresh, "--pg", dead, "--server-compression", "brotli"},
			nil, 2, []string{"--server-compression", "lz4"}},
		{"mistyped s3 parameter", []string{"backup", "--repo", "s3://bucket/pg?regoin=eu-west-1", "--pg", dead},
			nil, 2, []string{`unknown parameter "regoin"`}},
		{"unparsable connection string", []string{"backup", "--repo", "file://" + fresh, "--pg", "host=127.0.0.1 port=notaport"},
			nil, 2, []string{"--pg"}},
		{"missing spool directory", []string{"backup", "--repo", "file://" + fresh, "--pg", dead},
			[]string{"PGSTOW_SPOOL_DIR=" + filepath.Join(fresh, "spool")}, 2, []string{"PGSTOW_SPOOL_DIR", "does not exist"}},
		{"wal-receive without a slot", []string{"wal-receive", "--repo", "file://" + fresh, "--pg", dead},
			nil, 2, []string{"--slot is required"}},
		{"target action without a target", []string{"restore", "--repo", taken, "-D", filepath.Join(t.TempDir(), "x"), "--target-action", "pause"},
			nil, 2, []string{"--target-action only applies with a recovery target"}},
		{"restore into a non-empty directory", []string{"restore", "--repo", taken, "-D", full},
			nil, 2, []string{"--pgdata", "is not empty"}},
		{"show without an id", []string{"show", "--repo", taken},
			nil, 2, []string{"accepts 1 arg"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			r := runCLI(t, time.Minute, tt.env, append(tt.args, "--log-level", "error")...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, tt.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			t.Logf("exit %d: %s", r.code, r.stderr)
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "pgstow: ") {
				t.Fatalf("want one error line, got:\n%s", r.stderr)
			}
			for _, s := range tt.contains {
				if !strings.Contains(lines[0], s) {
					t.Errorf("error %q lacks %q", lines[0], s)
				}
			}
			if strings.Contains(r.stderr+r.stdout, "sekr1t") {
				t.Errorf("the password appears in the output: %s", r.stderr)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("took %s to fail", d)
			}
			if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a failed command created the repository directory %s", fresh)
			}
		})
	}
}
