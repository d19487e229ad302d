package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
)

func TestPushTarget(t *testing.T) {
	tests := []struct {
		raw        string
		url        string
		user, pass string
		auth       bool
	}{
		{raw: "http://pushgateway:9091", url: "http://pushgateway:9091"},
		{raw: "https://pushgateway.example.com/prefix", url: "https://pushgateway.example.com/prefix"},
		{raw: "http://127.0.0.1:9091/", url: "http://127.0.0.1:9091/"},
		{raw: "https://ops:s3cr%40t@gw:9091/x", url: "https://gw:9091/x", user: "ops", pass: "s3cr@t", auth: true},
		{raw: "http://ops@gw:9091", url: "http://gw:9091", user: "ops", auth: true},
		{raw: "http://:tok@gw:9091", url: "http://gw:9091", pass: "tok", auth: true},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			d, err := pushTarget(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			want := pushDest{url: tt.url, user: tt.user, pass: tt.pass, hasAuth: tt.auth}
			if d != want {
				t.Fatalf("pushTarget(%q) = %+v, want %+v", tt.raw, d, want)
			}
			if tt.pass != "" && strings.Contains(d.url, tt.pass) {
				t.Fatalf("the password is left in the URL %q", d.url)
			}
		})
	}
}

func TestPushTargetRefused(t *testing.T) {
	for _, raw := range []string{
		"",
		"ftp://x",
		"ftp://ops:sekr1t@x",
		"file:///tmp/metrics",
		"pushgateway:9091", // parses with scheme "pushgateway"
		"127.0.0.1:9091",   // does not parse
		"//pushgateway:9091",
		"http://",
		"http:///metrics",
		"https://ops:sekr1t@",
		"http://gw:9091/%zz",
	} {
		t.Run(raw, func(t *testing.T) {
			_, err := pushTarget(raw)
			if err == nil {
				t.Fatalf("pushTarget(%q) accepted it", raw)
			}
			if !strings.Contains(err.Error(), "--metrics-push") || !strings.Contains(err.Error(), "http://") {
				t.Errorf("error %q should name --metrics-push and show the form of a good URL", err)
			}
			if strings.Contains(err.Error(), "sekr1t") {
				t.Errorf("error %q echoes the password", err)
			}
		})
	}
}

const sampleTextfile = `# HELP pgstow_last_success_timestamp_seconds Unix time of the last successful run.
# TYPE pgstow_last_success_timestamp_seconds gauge
pgstow_last_success_timestamp_seconds{command="backup",repo="file:///a"} 1.7e+09
pgstow_last_success_timestamp_seconds{command="verify",repo="file:///a"} 1.8e+09
pgstow_last_success_timestamp_seconds{command="backup",repo="s3://bucket/b"} 1.9e+09
# HELP pgstow_last_run_success 1 if the last run succeeded, else 0.
# TYPE pgstow_last_run_success gauge
pgstow_last_run_success{command="restore",repo="file:///a"} 1
`

func TestPreviousSuccess(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sample := write("sample.prom", sampleTextfile)
	tests := []struct {
		name          string
		path          string
		command, repo string
		want          float64
		found         bool
	}{
		{"backup of a", sample, "backup", "file:///a", 1.7e9, true},
		{"verify of a", sample, "verify", "file:///a", 1.8e9, true},
		{"backup of b", sample, "backup", "s3://bucket/b", 1.9e9, true},
		{"other command", sample, "restore", "file:///a", 0, false},
		{"other repository", sample, "backup", "file:///c", 0, false},
		{"repository prefix is no match", sample, "backup", "file:///", 0, false},
		{"missing file", filepath.Join(dir, "none.prom"), "backup", "file:///a", 0, false},
		{"not the text format", write("garbage.prom", "pgstow_last_success_timestamp_seconds{command=\"backup\" 12\n"), "backup", "file:///a", 0, false},
		{"no such metric", write("other.prom", "pgstow_last_run_success{command=\"backup\",repo=\"file:///a\"} 1\n"), "backup", "file:///a", 0, false},
		{"empty file", write("empty.prom", ""), "backup", "file:///a", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found := previousSuccess(tt.path, tt.command, tt.repo)
			if got != tt.want || found != tt.found {
				t.Fatalf("previousSuccess(%s, %s) = %v, %v; want %v, %v", tt.command, tt.repo, got, found, tt.want, tt.found)
			}
		})
	}
}

// testCommand is a command named name with --repo set to repo, as
// metricsFlags sees it.
func testCommand(t *testing.T, name, repo string) *cobra.Command {
	t.Helper()
	c := &cobra.Command{Use: name}
	c.Flags().String("repo", "", "")
	if err := c.Flags().Set("repo", repo); err != nil {
		t.Fatal(err)
	}
	return c
}

func readTextfile(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	return fams
}

// gaugeOf is the value of the gauge name with the labels command and repo.
func gaugeOf(fams map[string]*dto.MetricFamily, name, command, repo string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if l["command"] == command && l["repo"] == repo && m.GetGauge() != nil {
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestWriteTextfile: a success records its time; a failure keeps the last
// success of the same command and repository, and only that; the file is
// replaced whole, with no temporary file left beside it.
func TestWriteTextfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pgstow.prom")
	g := &globals{getenv: func(string) string { return "" }}
	backupCmd := testCommand(t, "backup", "file:///var/backups/pg?x=1")
	repo := g.repoLabel(backupCmd)
	if repo != "file:///var/backups/pg" {
		t.Fatalf("repoLabel = %q, want the URL without its query", repo)
	}

	steps := []struct {
		name        string
		cmd         *cobra.Command
		err         error
		success     float64 // last_run_success
		keepSuccess bool    // last_success must equal the previous one
		noSuccess   bool    // last_success must be absent
	}{
		{"first run fails: nothing to carry", backupCmd, errors.New("boom"), 0, false, true},
		{"success", backupCmd, nil, 1, false, false},
		{"failure carries the success", backupCmd, errors.New("boom"), 0, true, false},
		{"another failure still carries it", backupCmd, errors.New("boom"), 0, true, false},
		{"another command's failure does not take it", testCommand(t, "verify", "file:///var/backups/pg"), errors.New("boom"), 0, false, true},
	}
	var lastSuccess float64
	for _, st := range steps {
		start := time.Now()
		g.run = runStats{rawBytes: 100, storedBytes: 40, newBytes: 10, chunks: 3, newChunks: 1}
		reg := g.runMetrics(start, time.Now(), st.err, prometheus.Labels{"command": st.cmd.Name(), "repo": g.repoLabel(st.cmd)})
		if err := writeTextfile(path, reg, st.cmd.Name(), g.repoLabel(st.cmd), st.err == nil); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		fams := readTextfile(t, path)
		command := st.cmd.Name()
		if v, ok := gaugeOf(fams, "pgstow_last_run_success", command, repo); !ok || v != st.success {
			t.Fatalf("%s: last_run_success %v (%v), want %v", st.name, v, ok, st.success)
		}
		if v, ok := gaugeOf(fams, "pgstow_last_run_errors", command, repo); !ok || v != 1-st.success {
			t.Fatalf("%s: last_run_errors %v (%v), want %v", st.name, v, ok, 1-st.success)
		}
		if v, ok := gaugeOf(fams, "pgstow_last_run_raw_bytes", command, repo); !ok || v != 100 {
			t.Fatalf("%s: last_run_raw_bytes %v (%v)", st.name, v, ok)
		}
		succ, ok := gaugeOf(fams, lastSuccessMetric, command, repo)
		switch {
		case st.noSuccess && ok:
			t.Fatalf("%s: last_success %v present", st.name, succ)
		case st.keepSuccess && (!ok || succ != lastSuccess):
			t.Fatalf("%s: last_success %v (%v), want %v carried over", st.name, succ, ok, lastSuccess)
		case st.err == nil && (!ok || succ < float64(start.Unix())):
			t.Fatalf("%s: last_success %v (%v), want the run's end", st.name, succ, ok)
		}
		if st.err == nil {
			lastSuccess = succ
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != "pgstow.prom" {
			t.Fatalf("%s: the directory holds %v, want pgstow.prom alone", st.name, entries)
		}
	}
}

// pushed is one request to the fake Pushgateway of TestMetricsFlags.
type pushed struct {
	method, path string
	user, pass   string
	fams         map[string]*dto.MetricFamily
}

// fakeGateway records pushes and answers status.
type fakeGateway struct {
	mu     sync.Mutex
	got    []pushed
	status int
}

func (f *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := pushed{method: r.Method, path: r.URL.Path, fams: map[string]*dto.MetricFamily{}}
	p.user, p.pass, _ = r.BasicAuth()
	dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
	for {
		fam := &dto.MetricFamily{}
		if err := dec.Decode(fam); err != nil {
			if !errors.Is(err, io.EOF) {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			break
		}
		p.fams[fam.GetName()] = fam
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, p)
	if f.status != 0 {
		w.WriteHeader(f.status)
	}
}

func (f *fakeGateway) requests() []pushed {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

// groupingKey decodes a push path /metrics/job/<job>{/<label>/<value>};
// a value holding '/' must come base64-encoded (label@base64), as the
// Pushgateway splits the path at every '/'.
func groupingKey(t *testing.T, path string) map[string]string {
	t.Helper()
	rest, ok := strings.CutPrefix(path, "/metrics/")
	parts := strings.Split(rest, "/")
	if !ok || len(parts)%2 != 0 {
		t.Fatalf("push path %q is no grouping key", path)
	}
	key := map[string]string{}
	for i := 0; i < len(parts); i += 2 {
		name, value := parts[i], parts[i+1]
		if n, ok := strings.CutSuffix(name, "@base64"); ok {
			v, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(value, "="))
			if err != nil {
				t.Fatalf("push path %q: %v", path, err)
			}
			name, value = n, string(v)
		}
		key[name] = value
	}
	return key
}

// TestMetricsFlags runs a command wrapped by metricsFlags: a success
// replaces its group with PUT, a failure updates it with POST, both to
// the grouping key {job, command, repo} (the repo base64-encoded since it
// holds '/'), with series that do not repeat the grouping labels (the Go
// client refuses those); credentials in the URL go as basic auth; a usage
// error publishes nothing; a gateway that fails is logged and leaves the
// command's result alone. The textfile is written along.
func TestMetricsFlags(t *testing.T) {
	gw := &fakeGateway{}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	textfile := filepath.Join(t.TempDir(), "pgstow.prom")
	const repo = "file:///tmp/r"
	key := map[string]string{"job": "pgstow", "command": "backup", "repo": repo}
	nightly := map[string]string{"job": "nightly", "command": "backup", "repo": repo}
	withAuth := strings.Replace(srv.URL, "http://", "http://ops:tok@", 1)
	boom := errors.New("boom")
	usage := usageError{errors.New("--bogus")}

	tests := []struct {
		name     string
		runErr   error
		url      string
		extra    []string
		status   int    // the gateway's answer
		method   string // "" when nothing must be pushed
		key      map[string]string
		user     string
		logError bool // an ERROR record about the push is expected
	}{
		{"success", nil, srv.URL, nil, 0, http.MethodPut, key, "", false},
		{"failure", boom, srv.URL, nil, 0, http.MethodPost, key, "", false},
		{"usage error", usage, srv.URL, nil, 0, "", nil, "", false},
		{"job and credentials", nil, withAuth, []string{"--metrics-job", "nightly"}, 0, http.MethodPut, nightly, "ops", false},
		{"gateway refuses", nil, srv.URL, nil, http.StatusBadRequest, http.MethodPut, key, "", true},
	}
	var lastSuccess float64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw.mu.Lock()
			gw.status = tt.status
			gw.mu.Unlock()
			before := len(gw.requests())
			beforeFile, _ := os.ReadFile(textfile)
			var logs bytes.Buffer
			g := &globals{getenv: func(string) string { return "" }, log: slog.New(slog.NewTextHandler(&logs, nil))}
			var repoURL string
			cmd := &cobra.Command{Use: "backup", SilenceErrors: true, SilenceUsage: true,
				RunE: func(*cobra.Command, []string) error {
					g.run = runStats{rawBytes: 1000, storedBytes: 400, newBytes: 100, chunks: 2, newChunks: 1}
					return tt.runErr
				}}
			repoFlag(cmd, &repoURL)
			g.metricsFlags(cmd)
			cmd.SetArgs(append([]string{"--repo", repo, "--metrics-push", tt.url, "--metrics-file", textfile}, tt.extra...))
			if err := cmd.ExecuteContext(t.Context()); !errors.Is(err, tt.runErr) {
				t.Fatalf("the command returned %v, want its own result %v", err, tt.runErr)
			}
			if got := strings.Contains(logs.String(), "level=ERROR"); got != tt.logError {
				t.Fatalf("ERROR logged: %v, want %v:\n%s", got, tt.logError, logs.String())
			}

			reqs := gw.requests()[before:]
			if tt.method == "" {
				if len(reqs) != 0 {
					t.Fatalf("pushed after a usage error: %+v", reqs)
				}
				if after, _ := os.ReadFile(textfile); !bytes.Equal(after, beforeFile) {
					t.Fatalf("the textfile changed after a usage error")
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			p := reqs[0]
			if key := groupingKey(t, p.path); p.method != tt.method || !maps.Equal(key, tt.key) {
				t.Fatalf("%s %s (%v), want %s %v", p.method, p.path, key, tt.method, tt.key)
			}
			if p.user != tt.user || (tt.user != "" && p.pass != "tok") {
				t.Fatalf("basic auth %q:%q, want user %q", p.user, p.pass, tt.user)
			}
			if _, ok := p.fams[lastSuccessMetric]; ok != (tt.runErr == nil) {
				t.Fatalf("last_success pushed: %v; want it only on success", ok)
			}
			for name, f := range p.fams {
				for _, m := range f.GetMetric() {
					if len(m.GetLabel()) != 0 {
						t.Errorf("pushed %s with labels %v; the grouping key carries them", name, m.GetLabel())
					}
				}
			}
			wantOK := 0.0
			if tt.runErr == nil {
				wantOK = 1
			}
			if f := p.fams["pgstow_last_run_success"]; len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge().GetValue() != wantOK {
				t.Fatalf("pushed pgstow_last_run_success %v, want %v", f, wantOK)
			}
			if f := p.fams["pgstow_last_run_raw_bytes"]; len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge().GetValue() != 1000 {
				t.Fatalf("pushed pgstow_last_run_raw_bytes %v, want 1000", f)
			}

			fams := readTextfile(t, textfile)
			if v, ok := gaugeOf(fams, "pgstow_last_run_success", "backup", repo); !ok || v != wantOK {
				t.Fatalf("textfile last_run_success %v (%v), want %v", v, ok, wantOK)
			}
			succ, ok := gaugeOf(fams, lastSuccessMetric, "backup", repo)
			if !ok || (tt.runErr != nil && succ != lastSuccess) {
				t.Fatalf("textfile last_success %v (%v), previous success %v", succ, ok, lastSuccess)
			}
			lastSuccess = succ
		})
	}
}
