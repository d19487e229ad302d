package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"

	"github.com/pgstow/pgstow/integration/pgtest"
)

// queryURI runs one query on a server named by a URI and returns the
// first column of the first row.
func queryURI(t *testing.T, uri, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := pgconn.Connect(ctx, uri)
	if err != nil {
		t.Fatalf("connect to %s: %v", uri, err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("%s on %s: %v", sql, uri, err)
	}
	return string(res[0].Rows[0][0])
}

// refused reports whether nothing accepts connections at uri.
func refused(uri string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, uri)
	if err == nil {
		c.Close(ctx)
	}
	return err != nil
}

// seedDir is a directory for restore --start that the postgres OS user
// can reach, discarded at cleanup if a test left it.
func seedDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(pgtest.TempDir(t), "seed")
	discardAtCleanup(t, dir)
	return dir
}

// discardAtCleanup stops and removes a server a failed test left behind.
// Cleanups run after t.Context() is cancelled, so not through runCLI.
func discardAtCleanup(t *testing.T, dir string) {
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, "pgstow-server.json")); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, pgstowBin, "discard", "-D", dir).CombinedOutput(); err != nil {
			t.Errorf("discard %s at cleanup: %v\n%s", dir, err, out)
		}
	})
}

// TestRestoreStart restores with --start on every major, checks the URI it
// prints reaches the restored data on a server that cannot archive, and
// discards it; discard refuses a directory restore --start did not make.
func TestRestoreStart(t *testing.T) {
	t.Parallel()
	for _, major := range pgtest.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			c := pgtest.Start(t, pgtest.Options{Major: major, Conf: []string{"archive_mode = on", "archive_command = '/bin/false'"}})
			want := seedBeforeBackup(t, c)
			repoDir := t.TempDir()
			repoURL := "file://" + repoDir
			cliBackup(t, c, repoURL)

			// A plain restore of a cluster that archives warns that the
			// copy would archive into the original's archive.
			r := runCLI(t, 5*time.Minute, nil, "restore", "--repo", repoURL, "-D", filepath.Join(t.TempDir(), "plain"))
			if r.code != 0 || !strings.Contains(r.stderr, "level=WARN") || !strings.Contains(r.stderr, "archive_mode = off") || !strings.Contains(r.stderr, "/bin/false") {
				t.Errorf("plain restore of an archiving cluster: exit %d, no warning about archiving:\n%s", r.code, r.stderr)
			}

			dir := seedDir(t)
			args := []string{"restore", "--repo", repoURL, "-D", dir, "--start"}
			if major != 15 {
				// Only 15 is where packages put it; the rest come from npm.
				args = append(args, "--pg-bin", c.BinDir)
			}
			r = runCLI(t, 5*time.Minute, nil, args...)
			if r.code != 0 {
				t.Fatalf("restore --start exited %d:\n%s", r.code, r.stderr)
			}
			if strings.Contains(r.stderr, "archives WAL") {
				t.Errorf("restore --start turns archiving off, yet warned about it:\n%s", r.stderr)
			}
			uri := strings.TrimSpace(r.stdout)
			if strings.Contains(uri, "\n") || !strings.HasPrefix(uri, "postgresql://postgres@127.0.0.1:") {
				t.Fatalf("stdout should be the URI alone, got %q", r.stdout)
			}
			got := queryURI(t, uri, fingerprintSQL)
			if got != want {
				t.Errorf("restored data %s, want %s", got, want)
			}
			if am := queryURI(t, uri, "SHOW archive_mode"); am != "off" {
				t.Errorf("archive_mode = %s on the throw-away server, want off", am)
			}
			if rec := queryURI(t, uri, "SELECT pg_is_in_recovery()"); rec != "f" {
				t.Errorf("pg_is_in_recovery() = %s", rec)
			}
			if _, err := os.Stat(filepath.Join(dir, "pg_hba.conf.pgstow-orig")); err != nil {
				t.Errorf("the backup's pg_hba.conf was not kept aside: %v", err)
			}

			// discard refuses a real cluster, leaving it running.
			r = runCLI(t, time.Minute, nil, "discard", "-D", c.DataDir)
			if r.code != 1 || !strings.Contains(r.stderr, "not started by pgstow restore --start") {
				t.Errorf("discard of a real data directory: exit %d, %s", r.code, r.stderr)
			}
			if _, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION")); err != nil {
				t.Fatalf("discard touched a real data directory: %v", err)
			}
			c.Query(t, "postgres", "SELECT 1")

			r = runCLI(t, 2*time.Minute, nil, "discard", "-D", dir)
			if r.code != 0 {
				t.Fatalf("discard exited %d: %s", r.code, r.stderr)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s still exists after discard: %v", dir, err)
			}
			if !refused(uri) {
				t.Errorf("the server at %s still accepts connections after discard", uri)
			}
			if r := runCLI(t, time.Minute, nil, "discard", "-D", dir); r.code != 0 || !strings.Contains(r.stdout, "nothing to discard") {
				t.Errorf("second discard: exit %d, %s %s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestRestoreStartPITR starts a server at a point in time: it must wait
// until recovery reached the target, and first refuse clearly when the
// server's OS user cannot read the repository restore_command needs.
//
// Not parallel: restore --start quotes the last five lines of the server's
// log, and on a loaded machine its own readiness probes' lines can push out
// the line naming the recovery target that this test looks for.
func TestRestoreStartPITR(t *testing.T) {
	repoDir := filepath.Join(pgtest.TempDir(t), "repo")
	repoURL := "file://" + repoDir
	handToServerUser(t, filepath.Dir(pgstowBin))
	c := pgtest.Start(t, pgtest.Options{Major: 15, Conf: []string{
		"archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push --repo %s --log-level warn %%p'", pgstowBin, repoURL),
	}})
	c.Exec(t, "postgres", "CREATE TABLE events (id int)")
	cliBackup(t, c, repoURL)
	chownServerUser(t, repoDir) // wal-push runs as the server user
	c.Exec(t, "postgres", "INSERT INTO events SELECT generate_series(1, 100)")
	target := c.Query(t, "postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0]
	c.Exec(t, "postgres", "INSERT INTO events SELECT generate_series(101, 150)")
	last := c.Query(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
	pgtest.Eventually(t, 2*time.Minute, "the archiver to reach "+last, func() bool {
		return c.Query(t, "postgres", "SELECT coalesce(last_archived_wal, '') >= '"+last+"' FROM pg_stat_archiver")[0][0] == "t"
	})

	dir := seedDir(t)
	args := []string{"restore", "--repo", repoURL, "-D", dir, "--start", "--target-time", target, "--start-timeout", "2m"}
	if os.Geteuid() == 0 {
		// With the repository root's and mode 0700, the server's user
		// cannot read it, and restore --start must say so up front.
		if err := os.Chown(repoDir, 0, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(repoDir, 0o700); err != nil {
			t.Fatal(err)
		}
		r := runCLI(t, 5*time.Minute, nil, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "cannot read the repository") || !strings.Contains(r.stderr, "pgstow discard -D") {
			t.Fatalf("restore --start with an unreadable repository: exit %d\n%s", r.code, r.stderr)
		}
		if r := runCLI(t, 2*time.Minute, nil, "discard", "-D", dir); r.code != 0 {
			t.Fatalf("discard after a failed start: exit %d %s", r.code, r.stderr)
		}
		handToServerUser(t, repoDir)
	}
	r := runCLI(t, 5*time.Minute, nil, append(args, "--json")...)
	if r.code != 0 {
		t.Fatalf("restore --start --target-time exited %d:\n%s", r.code, r.stderr)
	}
	var s struct {
		URI     string `json:"uri"`
		Port    int    `json:"port"`
		DataDir string `json:"data_dir"`
		LogFile string `json:"log_file"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("--json output %q: %v", r.stdout, err)
	}
	if s.DataDir != dir || s.Port == 0 || s.LogFile == "" {
		t.Errorf("--json: %+v", s)
	}
	// Waited for: recovery is over when the URI is printed.
	if got := queryURI(t, s.URI, "SELECT count(*) || '/' || pg_is_in_recovery() FROM events"); got != "100/false" {
		t.Errorf("at the target time: %s rows/in recovery, want 100/false", got)
	}
	if r := runCLI(t, 2*time.Minute, nil, "discard", "-D", dir); r.code != 0 {
		t.Fatalf("discard: exit %d %s", r.code, r.stderr)
	}

	// A target recovery never meets stops the server: restore --start
	// says so at once, with the server's words, not after the timeout.
	start := time.Now()
	r = runCLI(t, 5*time.Minute, nil, "restore", "--repo", repoURL, "-D", dir, "--start", "--target-xid", "99999999", "--start-timeout", "4m")
	if r.code != 1 || !strings.Contains(r.stderr, "stopped before it was ready") || !strings.Contains(r.stderr, "recovery target") {
		t.Errorf("an unreachable target: exit %d\n%s", r.code, r.stderr)
	}
	if d := time.Since(start); d > 2*time.Minute {
		t.Errorf("an unreachable target took %s to report", d)
	}
	if r := runCLI(t, 2*time.Minute, nil, "discard", "-D", dir); r.code != 0 {
		t.Fatalf("discard after a failed recovery: exit %d %s", r.code, r.stderr)
	}
}

// TestRestoreStartUsage checks the refusals that need no server.
func TestRestoreStartUsage(t *testing.T) {
	t.Parallel()
	repoURL := "file://" + t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"port without start", []string{"--port", "5999"}, "--port only applies with --start"},
		{"shutdown action", []string{"--start", "--target-immediate", "--target-action", "shutdown"}, "--target-action shutdown"},
		{"bad port", []string{"--start", "--port", "70000"}, "--port 70000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, time.Minute, nil, append([]string{"restore", "--repo", repoURL, "-D", filepath.Join(t.TempDir(), "x")}, tc.args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", r.code, r.stderr, tc.want)
			}
		})
	}
}

// ciJob is the part of a GitHub Actions workflow the example uses.
type ciJob struct {
	Jobs map[string]struct {
		Env   map[string]string `yaml:"env"`
		Steps []struct {
			Name string `yaml:"name"`
			Uses string `yaml:"uses"`
			If   string `yaml:"if"`
			Run  string `yaml:"run"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// TestCIExample runs the CI job of docs/ci-seeding.md as written, the way
// a runner would: each step in bash with the job's environment (the
// repository pointed at a local one), $GITHUB_ENV carried between steps,
// and the always() cleanup step run whatever happened. Only the Install
// step is left out: the binaries are already here.
func TestCIExample(t *testing.T) {
	t.Parallel()
	block := docBlocks(t, "ci-seeding.md", "ci-example", "yaml")
	var wf ciJob
	if err := yaml.Unmarshal([]byte(block), &wf); err != nil {
		t.Fatalf("the CI example is not valid YAML: %v", err)
	}
	job, ok := wf.Jobs["test"]
	if !ok || len(job.Steps) == 0 {
		t.Fatal("the CI example has no test job with steps")
	}

	c := pgtest.Start(t, pgtest.Options{Major: 15})
	want := seedBeforeBackup(t, c)
	repoURL := "file://" + t.TempDir()
	cliBackup(t, c, repoURL)

	// The runner: pgstow and psql on PATH, a temp dir and an env file.
	binDir := t.TempDir()
	if err := os.Symlink(pgstowBin, filepath.Join(binDir, "pgstow")); err != nil {
		t.Fatal(err)
	}
	runnerTemp := pgtest.TempDir(t)
	discardAtCleanup(t, filepath.Join(runnerTemp, "seed"))
	envFile := filepath.Join(t.TempDir(), "github_env")
	if err := os.WriteFile(envFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for k, v := range job.Env {
		env[k] = v
	}
	env["PGSTOW_REPO"] = repoURL
	env["RUNNER_TEMP"] = runnerTemp
	env["GITHUB_ENV"] = envFile
	env["PATH"] = binDir + ":" + os.Getenv("PATH")
	env["HOME"] = os.Getenv("HOME")

	failed, ran := false, 0
	for _, step := range job.Steps {
		if step.Run == "" || strings.HasPrefix(step.Name, "Install") {
			continue
		}
		if failed && !strings.Contains(step.If, "always()") {
			continue
		}
		ran++
		cmd := exec.CommandContext(t.Context(), "bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.Run)
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		t.Logf("step %q:\n%s", step.Name, out)
		if err != nil {
			t.Errorf("step %q failed: %v", step.Name, err)
			failed = true
		}
		// What a step appends to $GITHUB_ENV is in the next steps' env.
		f, err := os.Open(envFile)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok {
				env[k] = v
			}
		}
		f.Close()
		if step.Name != "" && strings.HasPrefix(step.Name, "Test") && !failed {
			// The tests ran against the restored data.
			if got := queryURI(t, env["DATABASE_URL"], fingerprintSQL); got != want {
				t.Errorf("DATABASE_URL holds %s, want %s", got, want)
			}
		}
	}
	if ran != 3 {
		t.Errorf("ran %d steps of the example, want 3 (seed, test, discard)", ran)
	}
	if env["DATABASE_URL"] == "" {
		t.Fatal("the seed step exported no DATABASE_URL")
	}
	if !refused(env["DATABASE_URL"]) {
		t.Error("the server still runs after the discard step")
	}
	if _, err := os.Stat(filepath.Join(runnerTemp, "seed")); !os.IsNotExist(err) {
		t.Errorf("the seed directory is still there after the discard step: %v", err)
	}
}

// TestRestoreStartTablespace: a backup chosen by label, with a user
// tablespace, starts with the tablespace remapped and its data readable
// through the URI, and discard removes the remapped directory too.
func TestRestoreStartTablespace(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: 15})
	c.Exec(t, "postgres", "CREATE TABLESPACE ts1 LOCATION '"+tablespaceDir(t, c)+"'")
	c.Exec(t, "postgres", "CREATE TABLE in_ts (id int, v text) TABLESPACE ts1; INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
	want := tsFingerprint(t, c)
	oid := c.Query(t, "postgres", "SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")[0][0]
	repoURL := "file://" + t.TempDir()
	cliBackup(t, c, repoURL, "--label", "seed")
	// A newer backup with other data and another label.
	c.Exec(t, "postgres", "INSERT INTO in_ts SELECT g, 'later' FROM generate_series(1, 10) g")
	cliBackup(t, c, repoURL, "--label", "nightly")

	dir := seedDir(t)
	if r := runCLI(t, time.Minute, nil, "restore", "--repo", repoURL, "-D", dir, "--label", "nope"); r.code != 1 || !strings.Contains(r.stderr, `labelled "nope"`) {
		t.Errorf("an unknown label: exit %d %s", r.code, r.stderr)
	}
	if r := runCLI(t, time.Minute, nil, "restore", "--repo", repoURL, "-D", dir, "--label", "seed", "--backup", "latest"); r.code != 2 {
		t.Errorf("--label with --backup: exit %d %s", r.code, r.stderr)
	}
	tsDir := filepath.Join(filepath.Dir(dir), "ts-copy")
	r := runCLI(t, 5*time.Minute, nil, "restore", "--repo", repoURL, "-D", dir, "--start", "--label", "seed", "--tablespace", oid+"="+tsDir)
	if r.code != 0 {
		t.Fatalf("restore --start with a tablespace: exit %d\n%s", r.code, r.stderr)
	}
	uri := strings.TrimSpace(r.stdout)
	if got := queryURI(t, uri, "SELECT count(*) || ':' || sum(id) FROM in_ts"); got != want {
		t.Errorf("in_ts through the URI: %s, want %s", got, want)
	}
	if got := queryURI(t, uri, "SELECT pg_tablespace_location("+oid+")"); got != tsDir {
		t.Errorf("tablespace location %s, want the remapped %s", got, tsDir)
	}
	if r := runCLI(t, 2*time.Minute, nil, "discard", "-D", dir); r.code != 0 {
		t.Fatalf("discard: exit %d %s", r.code, r.stderr)
	}
	for _, d := range []string{dir, tsDir} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is still there after discard: %v", d, err)
		}
	}
	// The original cluster's tablespace is untouched.
	if got := c.Query(t, "postgres", "SELECT count(*) FROM in_ts")[0][0]; got != "20010" {
		t.Errorf("the original's in_ts has %s rows, want 20010", got)
	}
}
