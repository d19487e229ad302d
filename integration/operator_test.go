package integration

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/pgstow/pgstow/integration/pgtest"
	"github.com/pgstow/pgstow/integration/testserver"
)

// logfmtPair is one key=value of a text log record.
var logfmtPair = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// logRecords returns the text log records on stderr whose message is msg,
// as key → value (quotes removed).
func logRecords(stderr, msg string) []map[string]string {
	var out []map[string]string
	for line := range strings.Lines(stderr) {
		rec := map[string]string{}
		for _, m := range logfmtPair.FindAllStringSubmatch(line, -1) {
			v := m[2]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			rec[m[1]] = v
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// intField is a record's integer attribute, or -1 when it is absent.
func intField(t *testing.T, rec map[string]string, key string) int64 {
	t.Helper()
	v, ok := rec[key]
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q is no integer in %v", key, v, rec)
	}
	return n
}

// checkProgressLines: periodic progress records, at least min of them,
// with the byte counters, and at least one with a total and a percentage.
func checkProgressLines(t *testing.T, r cliResult, msg string, min int) {
	t.Helper()
	recs := logRecords(r.stderr, msg)
	if len(recs) < min {
		t.Fatalf("%d %q records on stderr, want at least %d:\n%s", len(recs), msg, min, r.stderr)
	}
	withTotal := 0
	for _, rec := range recs {
		if rec["level"] != "INFO" || rec["phase"] == "" || intField(t, rec, "done_bytes") < 0 || rec["mib_per_s"] == "" || intField(t, rec, "elapsed_s") < 0 {
			t.Fatalf("progress record lacks its counters: %v", rec)
		}
		total, pct := intField(t, rec, "total_bytes"), intField(t, rec, "percent")
		if (total < 0) != (pct < 0) {
			t.Fatalf("total_bytes and percent come together: %v", rec)
		}
		if total > 0 {
			withTotal++
			if want := 100 * intField(t, rec, "done_bytes") / total; pct < 0 || pct < want-1 || pct > want+1 {
				t.Fatalf("percent %d does not match done_bytes/total_bytes: %v", pct, rec)
			}
		}
	}
	if withTotal == 0 {
		t.Fatalf("no %q record has total_bytes and percent:\n%s", msg, r.stderr)
	}
	t.Logf("%d %q records, %d with a total; last: %v", len(recs), msg, withTotal, recs[len(recs)-1])
}

// lastBarFrame is the last line on stderr that draws the bar of title.
func lastBarFrame(stderr, title string) string {
	last := ""
	for line := range strings.Lines(strings.ReplaceAll(stderr, "\r", "\n")) {
		if strings.HasPrefix(line, title+" ") && strings.Contains(line, "[") && strings.Contains(line, "]") {
			last = strings.TrimSpace(line)
		}
	}
	return last
}

// TestProgress: how backup, restore and verify show their progress depending on
// --progress and --quiet, with stderr a pipe as under CI or systemd.
func TestProgress(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: pgtest.Majors()[0]})
	c.Pgbench(t, "-i", "-s", "2", "postgres")
	repoURL := "file://" + t.TempDir()
	backupCmd := func(extra ...string) []string {
		return append([]string{"backup", "--repo", repoURL, "--pg", c.DSN("postgres"), "--checkpoint", "fast", "--chunk-size", "1MB"}, extra...)
	}
	restoreCmd := func(extra ...string) []string {
		return append([]string{"restore", "--repo", repoURL, "-D", filepath.Join(t.TempDir(), "data")}, extra...)
	}
	// Restores have something to restore even when a backup case fails.
	cliBackup(t, c, repoURL, "--progress", "never")

	noProgress := func(t *testing.T, r cliResult) {
		t.Helper()
		for _, title := range []string{"backup", "restore"} {
			if len(logRecords(r.stderr, title+" progress")) != 0 || lastBarFrame(r.stderr, title) != "" {
				t.Fatalf("%s progress on stderr:\n%s", title, r.stderr)
			}
		}
	}
	bars := func(title string) func(*testing.T, cliResult) {
		return func(t *testing.T, r cliResult) {
			t.Helper()
			if n := len(logRecords(r.stderr, title+" progress")); n != 0 {
				t.Fatalf("%d progress log records besides the bars:\n%s", n, r.stderr)
			}
			frame := lastBarFrame(r.stderr, title)
			if !strings.Contains(frame, "100%") {
				t.Fatalf("the last %s bar frame %q is not at 100%%; stderr:\n%q", title, frame, r.stderr)
			}
			t.Logf("last frame: %s", frame)
		}
	}
	quiet := func(t *testing.T, r cliResult) {
		t.Helper()
		noProgress(t, r)
		if strings.Contains(r.stderr, "level=INFO") {
			t.Fatalf("INFO records with --quiet:\n%s", r.stderr)
		}
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // what stdout must hold
		check  func(*testing.T, cliResult)
	}{
		{"backup auto into a pipe logs lines",
			backupCmd("--progress", "auto", "--progress-interval", "200ms", "--max-rate", "10MB"), 0, "committed",
			func(t *testing.T, r cliResult) {
				checkProgressLines(t, r, "backup progress", 2)
				if lastBarFrame(r.stderr, "backup") != "" {
					t.Fatalf("bars drawn with --progress auto into a pipe:\n%s", r.stderr)
				}
			}},
		{"backup always draws bars into a pipe", backupCmd("--progress", "always"), 0, "committed", bars("backup")},
		{"backup never", backupCmd("--progress", "never"), 0, "committed", func(t *testing.T, r cliResult) {
			noProgress(t, r)
			if !strings.Contains(r.stderr, "level=INFO") {
				t.Fatalf("--progress never also silenced the log:\n%s", r.stderr)
			}
		}},
		{"backup quiet", backupCmd("--quiet"), 0, "committed", quiet},
		{"backup -q overrides always", backupCmd("-q", "--progress", "always"), 0, "committed", quiet},
		{"backup bogus", backupCmd("--progress", "bogus"), 2, "", func(t *testing.T, r cliResult) {
			if !strings.Contains(r.stderr, `--progress "bogus"`) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Fatalf("want one line naming --progress \"bogus\":\n%s", r.stderr)
			}
		}},
		{"restore auto into a pipe logs lines", restoreCmd("--progress", "auto", "--progress-interval", "200ms"), 0, "restored backup",
			func(t *testing.T, r cliResult) { checkProgressLines(t, r, "restore progress", 1) }},
		{"restore always draws bars into a pipe", restoreCmd("--progress", "always"), 0, "restored backup", bars("restore")},
		{"restore quiet", restoreCmd("-q"), 0, "restored backup", quiet},
		{"verify always draws bars into a pipe", []string{"verify", "--repo", repoURL, "--all", "--progress", "always"}, 0, "OK  full", bars("verify")},
		{"verify quick has no progress", []string{"verify", "--repo", repoURL, "--all", "--quick", "--progress", "always"}, 0, "OK  quick",
			func(t *testing.T, r cliResult) {
				if f := lastBarFrame(r.stderr, "verify"); f != "" {
					t.Fatalf("a quick verify drew bars: %q", f)
				}
			}},
		{"restore bogus", restoreCmd("--progress", "bogus"), 2, "", func(t *testing.T, r cliResult) {
			if !strings.Contains(r.stderr, `--progress "bogus"`) {
				t.Fatalf("want an error naming --progress \"bogus\":\n%s", r.stderr)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			r := runCLI(t, 5*time.Minute, nil, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stdout, tt.stdout) {
				t.Fatalf("exit %d, want %d with %q on stdout; stdout:\n%s\nstderr:\n%s", r.code, tt.code, tt.stdout, r.stdout, r.stderr)
			}
			t.Logf("took %s", time.Since(start).Round(time.Millisecond))
			tt.check(t, r)
		})
	}
}

// listEntries is `pgstow list --json` of a repository.
func listEntries(t *testing.T, repoURL string) []map[string]any {
	t.Helper()
	r := runCLI(t, time.Minute, nil, "list", "--repo", repoURL, "--json")
	var entries []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &entries); r.code != 0 || err != nil {
		t.Fatalf("list --json: exit %d, %v:\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	return entries
}

// checkRunBytes compares a run's byte metrics with what list --json says
// of the backup it made.
func checkRunBytes(t *testing.T, value func(string) (float64, bool), entry map[string]any) {
	t.Helper()
	for metric, field := range map[string]string{
		"pgstow_last_run_raw_bytes":    "raw_bytes",
		"pgstow_last_run_stored_bytes": "stored_bytes",
		"pgstow_last_run_new_bytes":    "new_bytes",
	} {
		got, ok := value(metric)
		want, _ := entry[field].(float64)
		if !ok || got != want || want <= 0 {
			t.Errorf("%s = %v (present %v), want %s %v from list --json", metric, got, ok, field, want)
		}
	}
	for _, metric := range []string{"pgstow_last_run_chunks", "pgstow_last_run_new_chunks", "pgstow_last_run_duration_seconds"} {
		if v, ok := value(metric); !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want > 0", metric, v, ok)
		}
	}
}

// TestMetrics: a backup's metrics pushed to a Pushgateway and written for
// node_exporter's textfile collector, across a success and a failure.
func TestMetrics(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: pgtest.Majors()[0]})
	c.Pgbench(t, "-i", "-s", "1", "postgres")
	// A server that is down: the backup fails after argument checking.
	down := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres connect_timeout=5", freePort(t))
	backupCmd := func(repoURL, pg string, extra ...string) []string {
		return append([]string{"backup", "--repo", repoURL, "--pg", pg, "--checkpoint", "fast", "--chunk-size", "1MB"}, extra...)
	}

	t.Run("push", func(t *testing.T) {
		gw := testserver.StartPushgateway(t)
		repoURL := "file://" + t.TempDir()
		key := map[string]string{"job": "pgstow", "command": "backup", "repo": repoURL}
		// lastRequest checks the requests so far and that the last one,
		// the n-th, was method to key and accepted.
		lastRequest := func(t *testing.T, n int, method string, key map[string]string, stderr string) {
			t.Helper()
			reqs := gw.Requests()
			if len(reqs) != n {
				t.Fatalf("the gateway got %d requests, want %d: %+v\nstderr:\n%s", len(reqs), n, reqs, stderr)
			}
			r := reqs[n-1]
			if r.Method != method || !maps.Equal(r.Grouping, key) || r.Status != http.StatusOK {
				t.Fatalf("request %d: %s %v answered %d %s; want %s %v", n, r.Method, r.Grouping, r.Status, r.Err, method, key)
			}
			if !strings.HasPrefix(r.ContentType, expfmt.ProtoType) {
				t.Errorf("pushed as %q, want the protobuf format", r.ContentType)
			}
		}
		group := func(t *testing.T, key map[string]string) testserver.PushGroup {
			t.Helper()
			g, ok := gw.Group(key)
			if !ok {
				t.Fatalf("no group %v; groups: %v", key, gw.Groups())
			}
			return g
		}

		start := float64(time.Now().Unix())
		r := runCLI(t, 5*time.Minute, nil, backupCmd(repoURL, c.DSN("postgres"), "--metrics-push", gw.URL)...)
		if r.code != 0 || strings.Contains(r.stderr, "level=ERROR") {
			t.Fatalf("backup exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		lastRequest(t, 1, http.MethodPut, key, r.stderr)
		g := group(t, key)
		for name, f := range g.Families {
			for _, m := range f.GetMetric() {
				if l := labelMap(m); !maps.Equal(l, key) {
					t.Errorf("%s has labels %v, want the grouping key %v", name, l, key)
				}
			}
		}
		success, ok := g.Value("pgstow_last_success_timestamp_seconds")
		if !ok || success < start || success > float64(time.Now().Unix()+1) {
			t.Fatalf("last_success %v (present %v), want the time of the run (after %v)", success, ok, start)
		}
		ranAt, _ := g.Value("pgstow_last_run_timestamp_seconds")
		for name, want := range map[string]float64{"pgstow_last_run_success": 1, "pgstow_last_run_errors": 0, "pgstow_last_run_timestamp_seconds": success} {
			if v, ok := g.Value(name); !ok || v != want {
				t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
			}
		}
		if _, ok := g.Value("pgstow_last_run_retries"); !ok {
			t.Error("no pgstow_last_run_retries")
		}
		entries := listEntries(t, repoURL)
		if len(entries) != 1 {
			t.Fatalf("%d backups listed, want 1", len(entries))
		}
		checkRunBytes(t, g.Value, entries[0])

		// A failed run updates with POST: the last success stays.
		r = runCLI(t, time.Minute, nil, backupCmd(repoURL, down, "--metrics-push", gw.URL)...)
		if r.code != 1 {
			t.Fatalf("backup against a server that is down exited %d:\n%s", r.code, r.stderr)
		}
		lastRequest(t, 2, http.MethodPost, key, r.stderr)
		g = group(t, key)
		if v, ok := g.Value("pgstow_last_success_timestamp_seconds"); !ok || v != success {
			t.Errorf("last_success %v (present %v) after a failure, want %v kept", v, ok, success)
		}
		for name, want := range map[string]float64{"pgstow_last_run_success": 0, "pgstow_last_run_errors": 1, "pgstow_last_run_raw_bytes": 0} {
			if v, ok := g.Value(name); !ok || v != want {
				t.Errorf("after the failure %s = %v (present %v), want %v", name, v, ok, want)
			}
		}
		if v, _ := g.Value("pgstow_last_run_timestamp_seconds"); v <= ranAt {
			t.Errorf("last_run_timestamp %v after the failure, not after %v", v, ranAt)
		}

		// The URL from the environment, under another job: another group;
		// the flag wins over the environment.
		env := []string{"PGSTOW_METRICS_PUSH=" + gw.URL}
		nightly := map[string]string{"job": "nightly", "command": "backup", "repo": repoURL}
		r = runCLI(t, 5*time.Minute, env, backupCmd(repoURL, c.DSN("postgres"), "--metrics-job", "nightly")...)
		if r.code != 0 {
			t.Fatalf("backup with PGSTOW_METRICS_PUSH exited %d:\n%s", r.code, r.stderr)
		}
		lastRequest(t, 3, http.MethodPut, nightly, r.stderr)
		if v, ok := group(t, nightly).Value("pgstow_last_run_success"); !ok || v != 1 {
			t.Errorf("nightly last_run_success %v (present %v)", v, ok)
		}
		if v, _ := group(t, key).Value("pgstow_last_run_success"); v != 0 {
			t.Errorf("a push under job nightly changed the pgstow group")
		}
		env = []string{"PGSTOW_METRICS_PUSH=ftp://not-used"}
		r = runCLI(t, 3*time.Minute, env, "verify", "--repo", repoURL, "--metrics-push", gw.URL)
		if r.code != 0 {
			t.Fatalf("verify exited %d:\n%s", r.code, r.stderr)
		}
		verifyKey := map[string]string{"job": "pgstow", "command": "verify", "repo": repoURL}
		lastRequest(t, 4, http.MethodPut, verifyKey, r.stderr)
		if v, ok := group(t, verifyKey).Value("pgstow_last_run_success"); !ok || v != 1 {
			t.Errorf("verify last_run_success %v (present %v)", v, ok)
		}
		if n := len(gw.Groups()); n != 3 {
			t.Errorf("%d groups, want 3: %v", n, gw.Groups())
		}
	})

	t.Run("textfile", func(t *testing.T) {
		repoURL := "file://" + t.TempDir()
		textDir := t.TempDir()
		path := filepath.Join(textDir, "pgstow.prom")
		read := func(t *testing.T) func(string) (float64, bool) {
			t.Helper()
			entries, err := os.ReadDir(textDir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != "pgstow.prom" {
				t.Fatalf("the textfile directory holds %v, want pgstow.prom alone", entries)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fams, err := decodeMetrics(f, expfmt.NewFormat(expfmt.TypeTextPlain))
			if err != nil {
				t.Fatalf("%s does not parse: %v", path, err)
			}
			return func(name string) (float64, bool) {
				return seriesValue(fams, name, map[string]string{"command": "backup", "repo": repoURL})
			}
		}

		start := float64(time.Now().Unix())
		r := runCLI(t, 5*time.Minute, nil, backupCmd(repoURL, c.DSN("postgres"), "--metrics-file", path)...)
		if r.code != 0 || strings.Contains(r.stderr, "level=ERROR") {
			t.Fatalf("backup exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		value := read(t)
		success, ok := value("pgstow_last_success_timestamp_seconds")
		if !ok || success < start {
			t.Fatalf("last_success %v (present %v), want the time of the run", success, ok)
		}
		if v, ok := value("pgstow_last_run_success"); !ok || v != 1 {
			t.Fatalf("last_run_success %v (present %v)", v, ok)
		}
		entries := listEntries(t, repoURL)
		if len(entries) != 1 {
			t.Fatalf("%d backups listed, want 1", len(entries))
		}
		checkRunBytes(t, value, entries[0])

		r = runCLI(t, time.Minute, nil, backupCmd(repoURL, down, "--metrics-file", path)...)
		if r.code != 1 {
			t.Fatalf("backup against a server that is down exited %d:\n%s", r.code, r.stderr)
		}
		value = read(t)
		if v, ok := value("pgstow_last_success_timestamp_seconds"); !ok || v != success {
			t.Errorf("last_success %v (present %v) after a failure, want %v carried over", v, ok, success)
		}
		for name, want := range map[string]float64{"pgstow_last_run_success": 0, "pgstow_last_run_errors": 1} {
			if v, ok := value(name); !ok || v != want {
				t.Errorf("after the failure %s = %v (present %v), want %v", name, v, ok, want)
			}
		}
	})

	t.Run("bad push URL is a usage error", func(t *testing.T) {
		tests := []struct {
			name string
			args []string
			env  []string
		}{
			{"ftp flag", []string{"--metrics-push", "ftp://x"}, nil},
			{"no scheme", []string{"--metrics-push", "pushgateway:9091"}, nil},
			{"no host", []string{"--metrics-push", "http://"}, nil},
			{"ftp from the environment", nil, []string{"PGSTOW_METRICS_PUSH=ftp://x"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				dir := t.TempDir()
				r := runCLI(t, time.Minute, tt.env, backupCmd("file://"+dir, c.DSN("postgres"), tt.args...)...)
				if r.code != 2 || !strings.Contains(r.stderr, "--metrics-push") {
					t.Fatalf("exit %d, want 2 with an error naming --metrics-push:\n%s", r.code, r.stderr)
				}
				// Refused before anything ran: the repository is untouched.
				if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
					t.Fatalf("the repository directory holds %v (%v) after a usage error", entries, err)
				}
			})
		}
	})

	t.Run("unreachable gateway", func(t *testing.T) {
		gwURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		r := runCLI(t, 5*time.Minute, nil, backupCmd("file://"+t.TempDir(), c.DSN("postgres"), "--metrics-push", gwURL)...)
		if r.code != 0 || !committedRE.MatchString(r.stdout) {
			t.Fatalf("backup exited %d, want 0: a monitoring outage must not fail it:\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		recs := logRecords(r.stderr, "metrics push failed; the command's own result is unaffected")
		if len(recs) != 1 || recs[0]["level"] != "ERROR" || !strings.Contains(recs[0]["err"], "refused") {
			t.Fatalf("want one ERROR record saying the push was refused:\n%s", r.stderr)
		}
	})
}

func labelMap(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// decodeMetrics reads metric families in format from r.
func decodeMetrics(r io.Reader, format expfmt.Format) (map[string]*dto.MetricFamily, error) {
	dec := expfmt.NewDecoder(r, format)
	fams := map[string]*dto.MetricFamily{}
	for {
		f := &dto.MetricFamily{}
		if err := dec.Decode(f); err != nil {
			if errors.Is(err, io.EOF) {
				return fams, nil
			}
			return nil, err
		}
		fams[f.GetName()] = f
	}
}

// seriesValue is the value of the series of name whose labels include
// want: a gauge's, a counter's or an untyped one's.
func seriesValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		l := labelMap(m)
		match := true
		for k, v := range want {
			match = match && l[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetUntyped() != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// TestWALReceiveMetrics: wal-receive's /metrics endpoint follows the
// stream, and a --metrics-listen address in use stops it before it
// touches the server.
func TestWALReceiveMetrics(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Major: pgtest.Majors()[0]})
	c.Exec(t, "postgres", "CREATE TABLE walgen (v text)")
	repoDir := t.TempDir()
	repoURL := "file://" + repoDir

	t.Run("address in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		start := time.Now()
		r := runCLI(t, time.Minute, nil, "wal-receive", "--repo", repoURL, "--pg", c.DSN("postgres"),
			"--slot", "pgstow_busy", "--create-slot", "--metrics-listen", l.Addr().String())
		if r.code != 2 || !strings.Contains(r.stderr, "--metrics-listen "+l.Addr().String()) || !strings.Contains(r.stderr, "address already in use") {
			t.Fatalf("exit %d, want 2 with an error naming --metrics-listen and the address:\n%s", r.code, r.stderr)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("took %s to fail", d)
		}
		if n := c.Query(t, "postgres", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgstow_busy'")[0][0]; n != "0" {
			t.Fatalf("the slot was created before the listen failed")
		}
	})

	t.Run("scrape", func(t *testing.T) {
		addr := testserver.Addr(freePort(t))
		start := time.Now()
		startReceiver(t, repoURL, c.DSN("postgres"), "--create-slot", "--metrics-listen", addr)
		client := &http.Client{Timeout: 5 * time.Second}
		scrape := func() (map[string]*dto.MetricFamily, error) {
			resp, err := client.Get("http://" + addr + "/metrics")
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
			}
			return decodeMetrics(resp.Body, expfmt.ResponseFormat(resp.Header))
		}
		labels := map[string]string{"slot": "pgstow_test", "repo": repoURL}
		value := func(fams map[string]*dto.MetricFamily, name string) float64 {
			v, ok := seriesValue(fams, name, labels)
			if !ok {
				return -1
			}
			return v
		}

		// Write WAL and switch segments, every two seconds once the slot
		// streams, until a segment shows as stored.
		deadline := time.Now().Add(2 * time.Minute)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		var fams map[string]*dto.MetricFamily
		var lastErr error
		var lastSwitch time.Time
		switches := 0
		for {
			fams, lastErr = scrape()
			if lastErr == nil && value(fams, "pgstow_wal_receive_segments_stored_total") >= 1 &&
				value(fams, "pgstow_wal_receive_last_segment_timestamp_seconds") > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no stored segment on /metrics within 2 minutes (%d switches); last error %v; last scrape: %v", switches, lastErr, fams)
			}
			if time.Since(lastSwitch) > 2*time.Second &&
				c.Query(t, "postgres", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgstow_test' AND active")[0][0] == "1" {
				c.Exec(t, "postgres", "INSERT INTO walgen SELECT md5(g::text) FROM generate_series(1, 20000) g; SELECT pg_switch_wal()")
				lastSwitch = time.Now()
				switches++
			}
			select {
			case <-tick.C:
			case <-t.Context().Done():
				t.Fatal(t.Context().Err())
			}
		}

		got := map[string]float64{}
		for _, name := range []string{"lag_bytes", "lag_seconds", "server_lsn_bytes", "received_lsn_bytes", "stored_lsn_bytes",
			"last_segment_timestamp_seconds", "segments_stored_total", "retries_total"} {
			got[name] = value(fams, "pgstow_wal_receive_"+name)
			if got[name] < 0 {
				t.Errorf("pgstow_wal_receive_%s{slot=pgstow_test, repo=%s} is missing", name, repoURL)
			}
		}
		t.Logf("after %d switches: %v", switches, got)
		if got["stored_lsn_bytes"] <= 0 || got["stored_lsn_bytes"] > got["received_lsn_bytes"] || got["stored_lsn_bytes"] > got["server_lsn_bytes"] {
			t.Errorf("want 0 < stored ≤ received and stored ≤ server: %v", got)
		}
		if int64(got["stored_lsn_bytes"])%(16<<20) != 0 {
			t.Errorf("stored_lsn_bytes %v is not a segment boundary", got["stored_lsn_bytes"])
		}
		if ts := got["last_segment_timestamp_seconds"]; ts < float64(start.Unix()) || ts > float64(time.Now().Unix()+1) {
			t.Errorf("last_segment_timestamp_seconds %v is not the time of this run", ts)
		}
		if segs, _ := filepath.Glob(filepath.Join(repoDir, "wal", "*", "*")); len(segs) < int(got["segments_stored_total"]) {
			t.Errorf("%v segments counted, %d in the repository", got["segments_stored_total"], len(segs))
		}
		if f := fams["pgstow_wal_receive_segments_stored_total"]; f.GetType() != dto.MetricType_COUNTER {
			t.Errorf("segments_stored_total is a %s, want a counter", f.GetType())
		}
	})
}

// TestMetricsPushgatewayStandIn: the Pushgateway stand-in the metrics
// tests rely on speaks the push API as the Go client uses it and keeps
// groups as the real one does, and refuses what the real one refuses.
func TestMetricsPushgatewayStandIn(t *testing.T) {
	t.Parallel()
	gw := testserver.StartPushgateway(t)
	gauges := func(values map[string]float64) *prometheus.Registry {
		reg := prometheus.NewRegistry()
		for name, v := range values {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: name})
			g.Set(v)
			reg.MustRegister(g)
		}
		return reg
	}
	// A job and a value with '/' go base64-encoded, an empty value as "=".
	key := map[string]string{"job": "nightly/db1", "instance": "", "repo": "file:///var/backups/pg"}
	pusher := func(reg prometheus.Gatherer) *push.Pusher {
		return push.New(gw.URL, key["job"]).Grouping("instance", key["instance"]).Grouping("repo", key["repo"]).Gatherer(reg)
	}
	values := func(t *testing.T) map[string]float64 {
		t.Helper()
		g, ok := gw.Group(key)
		if !ok {
			t.Fatalf("no group %v; groups %v; requests %+v", key, gw.Groups(), gw.Requests())
		}
		out := map[string]float64{}
		for name, f := range g.Families {
			for _, m := range f.GetMetric() {
				if l := labelMap(m); !maps.Equal(l, key) {
					t.Fatalf("%s carries labels %v, want the grouping key %v", name, l, key)
				}
			}
			out[name], _ = g.Value(name)
		}
		return out
	}
	steps := []struct {
		name string
		do   func() error
		want map[string]float64 // the group afterwards; nil: no group
	}{
		{"PUT creates the group", func() error { return pusher(gauges(map[string]float64{"a": 1, "b": 2})).Push() },
			map[string]float64{"a": 1, "b": 2}},
		{"POST replaces only the families it carries", func() error { return pusher(gauges(map[string]float64{"a": 5, "c": 3})).Add() },
			map[string]float64{"a": 5, "b": 2, "c": 3}},
		{"PUT replaces the whole group", func() error { return pusher(gauges(map[string]float64{"b": 7})).Push() },
			map[string]float64{"b": 7}},
		{"DELETE removes the group", func() error { return pusher(gauges(nil)).Delete() }, nil},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.want == nil {
			if _, ok := gw.Group(key); ok {
				t.Fatalf("%s: the group is still there", st.name)
			}
			continue
		}
		if got := values(t); !maps.Equal(got, st.want) {
			t.Fatalf("%s: group %v, want %v", st.name, got, st.want)
		}
	}
	var methods []string
	for _, r := range gw.Requests() {
		methods = append(methods, fmt.Sprintf("%s %d", r.Method, r.Status))
	}
	if want := []string{"PUT 200", "POST 200", "PUT 200", "DELETE 202"}; !slices.Equal(methods, want) {
		t.Fatalf("requests %v, want %v", methods, want)
	}

	// A family of another type than in another group is refused.
	if err := push.New(gw.URL, "j").Gatherer(gauges(map[string]float64{"x": 1})).Push(); err != nil {
		t.Fatal(err)
	}
	counter := prometheus.NewRegistry()
	counter.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "x", Help: "x"}))
	if err := push.New(gw.URL, "other").Gatherer(counter).Push(); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("a counter x beside a gauge x was accepted: %v", err)
	}

	// Raw requests: the text format, gzip, and what is malformed.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.WriteString(zw, "t 3\n")
	zw.Close()
	raw := []struct {
		name, method, path, contentType, encoding, body string
		status                                          int
		group                                           map[string]string
	}{
		{"text format", http.MethodPut, "/metrics/job/j/l/v", "text/plain; version=0.0.4", "", "t{l=\"other\",k=\"x\"} 1\n", 200, map[string]string{"job": "j", "l": "v"}},
		{"no content type is text", http.MethodPost, "/metrics/job@base64/ag/l@base64/=", "", "", "t 2\n", 200, map[string]string{"job": "j", "l": ""}},
		{"gzip", http.MethodPut, "/metrics/job/gz", "text/plain", "gzip", gz.String(), 200, map[string]string{"job": "gz"}},
		{"odd components", http.MethodPut, "/metrics/job/j/l", "", "", "t 1\n", 400, nil},
		{"empty job", http.MethodPut, "/metrics/job//l/v", "", "", "t 1\n", 400, nil},
		{"bad base64", http.MethodPut, "/metrics/job/j/l@base64/!!", "", "", "t 1\n", 400, nil},
		{"reserved label name", http.MethodPut, "/metrics/job/j/__l/v", "", "", "t 1\n", 400, nil},
		{"invalid label name", http.MethodPut, "/metrics/job/j/1l/v", "", "", "t 1\n", 400, nil},
		{"job twice", http.MethodPut, "/metrics/job/j/job/k", "", "", "t 1\n", 400, nil},
		{"garbage body", http.MethodPut, "/metrics/job/j", "", "", "t{ 1\n", 400, nil},
		{"bad protobuf", http.MethodPut, "/metrics/job/j", string(expfmt.NewFormat(expfmt.TypeProtoDelim)), "", "\x05abc", 400, nil},
		{"timestamp", http.MethodPut, "/metrics/job/j", "", "", "t 1 1700000000000\n", 400, nil},
		{"series twice", http.MethodPut, "/metrics/job/j", "", "", "t{a=\"1\"} 1\nt{a=\"1\"} 2\n", 400, nil},
		{"GET", http.MethodGet, "/metrics/job/j", "", "", "", 405, nil},
		{"other path", http.MethodPut, "/api/v1/metrics", "", "", "t 1\n", 404, nil},
	}
	for _, tt := range raw {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, gw.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			if tt.encoding != "" {
				req.Header.Set("Content-Encoding", tt.encoding)
			}
			before := len(gw.Groups())
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, msg, tt.status)
			}
			if tt.group == nil {
				if n := len(gw.Groups()); n != before {
					t.Fatalf("a refused request changed the groups: %d → %d", before, n)
				}
				return
			}
			g, ok := gw.Group(tt.group)
			if !ok {
				t.Fatalf("no group %v; groups %v", tt.group, gw.Groups())
			}
			// The grouping labels override the pushed ones.
			for _, m := range g.Families["t"].GetMetric() {
				if l := labelMap(m); l["l"] != tt.group["l"] || l["job"] != tt.group["job"] {
					t.Fatalf("series labels %v, want the grouping key %v over them", l, tt.group)
				}
			}
			if _, ok := g.Value("t"); !ok {
				t.Fatalf("no value t in %v", g.Families)
			}
		})
	}
}
