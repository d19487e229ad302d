package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/walarchive"
)

// runStats is what a one-shot command reports about its run, for metrics.
// Commands fill in what applies to them.
type runStats struct {
	rawBytes, storedBytes, newBytes int64
	chunks, newChunks               int64
	// problems counts what the command found wrong (verify's problems),
	// beyond failing.
	problems int64
}

// lastSuccessMetric survives failed runs: a Pushgateway keeps it because
// failures push with POST, which leaves absent metrics alone; a textfile
// carries it over from the file being replaced.
const lastSuccessMetric = "pgstow_last_success_timestamp_seconds"

// metricsFlags adds --metrics-push and --metrics-file to a one-shot
// command and publishes its metrics after every run that got past
// argument checking, successful or not.
func (g *globals) metricsFlags(cmd *cobra.Command) {
	var pushURL, file, job string
	cmd.Flags().StringVar(&pushURL, "metrics-push", "", "push this run's metrics to a Prometheus Pushgateway at this URL (env PGSTOW_METRICS_PUSH)")
	cmd.Flags().StringVar(&file, "metrics-file", "", "write this run's metrics to this file for node_exporter's textfile collector (replaced atomically)")
	cmd.Flags().StringVar(&job, "metrics-job", "pgstow", "job label of pushed metrics")
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		fromEnv(c, g, "metrics-push", "PGSTOW_METRICS_PUSH", &pushURL)
		if pushURL != "" {
			if _, err := pushTarget(pushURL); err != nil {
				return usageError{err}
			}
			if job == "" {
				return usageError{errors.New("--metrics-job: give a job name, e.g. pgstow")}
			}
		}
		if file != "" {
			// Written at the end of the run: a missing directory must
			// not surface only after an hour's backup.
			if err := checkFileDir("metrics-file", file); err != nil {
				return err
			}
		}
		start := time.Now()
		err := run(c, args)
		var ue usageError
		if (pushURL == "" && file == "") || errors.As(err, &ue) {
			return err
		}
		end := time.Now()
		// Monitoring failing must not turn a good backup into a failed
		// command, but it must be seen.
		if pushURL != "" {
			// Pushed series carry command and repo in the grouping key,
			// which the Pushgateway adds; they must not carry them again.
			reg := g.runMetrics(start, end, err, nil)
			if perr := pushMetrics(c.Context(), pushURL, job, c.Name(), g.repoLabel(c), reg, err == nil); perr != nil {
				g.log.Error("metrics push failed; the command's own result is unaffected", "err", perr)
			}
		}
		if file != "" {
			reg := g.runMetrics(start, end, err, prometheus.Labels{"command": c.Name(), "repo": g.repoLabel(c)})
			if ferr := writeTextfile(file, reg, c.Name(), g.repoLabel(c), err == nil); ferr != nil {
				g.log.Error("metrics file not written; the command's own result is unaffected", "file", file, "err", ferr)
			}
		}
		return err
	}
}

// repoLabel is the repository the command ran against, without secrets.
func (g *globals) repoLabel(c *cobra.Command) string {
	raw := ""
	if f := c.Flag("repo"); f != nil {
		raw = f.Value.String()
	}
	if raw == "" {
		raw = g.getenv("PGSTOW_REPO")
	}
	u, err := providers.ParseURL(raw)
	if err != nil {
		return "invalid"
	}
	return providers.RedactURL(u)
}

// runMetrics builds the registry of one run, every series with labels.
// The last-success time is only in it when the run succeeded.
func (g *globals) runMetrics(start, now time.Time, runErr error, labels prometheus.Labels) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, v float64) {
		m := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels})
		m.Set(v)
		reg.MustRegister(m)
	}
	ok := 0.0
	errs := g.run.problems
	if runErr == nil {
		ok = 1
		gauge(lastSuccessMetric, "Unix time of the last successful run.", float64(now.UnixNano())/1e9)
	} else {
		errs++
	}
	gauge("pgstow_last_run_timestamp_seconds", "Unix time the last run ended.", float64(now.UnixNano())/1e9)
	gauge("pgstow_last_run_success", "1 if the last run succeeded, else 0.", ok)
	gauge("pgstow_last_run_duration_seconds", "How long the last run took.", now.Sub(start).Seconds())
	gauge("pgstow_last_run_raw_bytes", "Uncompressed bytes the last run backed up or restored.", float64(g.run.rawBytes))
	gauge("pgstow_last_run_stored_bytes", "Compressed size in the repository of what the last run backed up.", float64(g.run.storedBytes))
	gauge("pgstow_last_run_new_bytes", "Compressed bytes the last run uploaded (the rest was deduplicated).", float64(g.run.newBytes))
	gauge("pgstow_last_run_chunks", "Chunks the last run handled.", float64(g.run.chunks))
	gauge("pgstow_last_run_new_chunks", "Chunks the last run uploaded.", float64(g.run.newChunks))
	gauge("pgstow_last_run_retries", "Storage requests the last run retried.", float64(g.retries()))
	gauge("pgstow_last_run_errors", "Errors of the last run: 1 when it failed, plus problems verify found.", float64(errs))
	return reg
}

// pushTarget checks a Pushgateway URL; credentials in it are taken out
// and sent as basic auth, so they never appear in errors.
type pushDest struct {
	url        string
	user, pass string
	hasAuth    bool
}

func pushTarget(raw string) (pushDest, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return pushDest{}, errors.New("--metrics-push: give the Pushgateway's http:// or https:// URL, e.g. http://pushgateway:9091")
	}
	d := pushDest{}
	if u.User != nil {
		d.user = u.User.Username()
		d.pass, _ = u.User.Password()
		d.hasAuth = true
		u.User = nil
	}
	d.url = u.String()
	return d, nil
}

// pushMetrics pushes to the group {job, command, repo}: a successful run
// replaces the group (PUT); a failed one only the metrics it carries
// (POST), so the last success time stays.
func pushMetrics(ctx context.Context, raw, job, command, repo string, reg *prometheus.Registry, ok bool) error {
	d, err := pushTarget(raw)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	p := push.New(d.url, job).Gatherer(reg).Grouping("command", command).Grouping("repo", repo).
		Client(&http.Client{Timeout: 15 * time.Second})
	if d.hasAuth {
		p = p.BasicAuth(d.user, d.pass)
	}
	if ok {
		return p.PushContext(ctx)
	}
	return p.AddContext(ctx)
}

// writeTextfile writes the run's metrics for node_exporter, atomically.
// After a failed run the last success time of the same command and
// repository is carried over from the file it replaces.
func writeTextfile(path string, reg *prometheus.Registry, command, repo string, ok bool) error {
	if !ok {
		if v, found := previousSuccess(path, command, repo); found {
			m := prometheus.NewGauge(prometheus.GaugeOpts{Name: lastSuccessMetric, Help: "Unix time of the last successful run.",
				ConstLabels: prometheus.Labels{"command": command, "repo": repo}})
			m.Set(v)
			reg.MustRegister(m)
		}
	}
	return prometheus.WriteToTextfile(path, reg)
}

// previousSuccess reads the last success time from an earlier textfile.
func previousSuccess(path, command, repo string) (float64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		return 0, false
	}
	fam, ok := fams[lastSuccessMetric]
	if !ok {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		var c, r string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "command":
				c = l.GetValue()
			case "repo":
				r = l.GetValue()
			}
		}
		if c == command && r == repo && m.GetGauge() != nil {
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// walReceiveMetrics serves /metrics for wal-receive.
type walReceiveMetrics struct {
	mu sync.Mutex
	st walarchive.ReceiveStatus
}

func (m *walReceiveMetrics) update(s walarchive.ReceiveStatus) {
	m.mu.Lock()
	m.st = s
	m.mu.Unlock()
}

func (m *walReceiveMetrics) get() walarchive.ReceiveStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}

// walReceiveSeries are wal-receive's series; one scrape reads one status
// snapshot for all of them, so they agree with each other.
var walReceiveSeries = []struct {
	name, help string
	counter    bool
	value      func(s walarchive.ReceiveStatus, retries int64) float64
}{
	{"pgstow_wal_receive_lag_bytes", "WAL bytes the server has written that are not yet stored in the repository.", false,
		func(s walarchive.ReceiveStatus, _ int64) float64 {
			if s.ServerEnd <= s.Stored {
				return 0
			}
			return float64(s.ServerEnd - s.Stored)
		}},
	{"pgstow_wal_receive_lag_seconds", "How long the oldest WAL received but not yet stored has waited (0 when all is stored).", false,
		func(s walarchive.ReceiveStatus, _ int64) float64 {
			if s.PendingSince.IsZero() {
				return 0
			}
			return time.Since(s.PendingSince).Seconds()
		}},
	{"pgstow_wal_receive_server_lsn_bytes", "End of WAL on the server, as a byte position.", false,
		func(s walarchive.ReceiveStatus, _ int64) float64 { return float64(s.ServerEnd) }},
	{"pgstow_wal_receive_received_lsn_bytes", "End of the WAL received, as a byte position.", false,
		func(s walarchive.ReceiveStatus, _ int64) float64 { return float64(s.Received) }},
	{"pgstow_wal_receive_stored_lsn_bytes", "End of the WAL stored in the repository, as a byte position.", false,
		func(s walarchive.ReceiveStatus, _ int64) float64 { return float64(s.Stored) }},
	{"pgstow_wal_receive_last_segment_timestamp_seconds", "Unix time the last segment was stored (0 before the first).", false,
		func(s walarchive.ReceiveStatus, _ int64) float64 {
			if s.LastSegment.IsZero() {
				return 0
			}
			return float64(s.LastSegment.UnixNano()) / 1e9
		}},
	{"pgstow_wal_receive_segments_stored_total", "WAL segments stored since wal-receive started.", true,
		func(s walarchive.ReceiveStatus, _ int64) float64 { return float64(s.Segments) }},
	{"pgstow_wal_receive_retries_total", "Storage requests retried since wal-receive started.", true,
		func(_ walarchive.ReceiveStatus, r int64) float64 { return float64(r) }},
}

// walReceiveCollector is a prometheus.Collector over the latest status.
type walReceiveCollector struct {
	m       *walReceiveMetrics
	retries func() int64
	descs   []*prometheus.Desc
}

func (c *walReceiveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *walReceiveCollector) Collect(ch chan<- prometheus.Metric) {
	s, r := c.m.get(), c.retries()
	for i, series := range walReceiveSeries {
		t := prometheus.GaugeValue
		if series.counter {
			t = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[i], t, series.value(s, r))
	}
}

// registry exposes the stream's state. Lag in bytes is the WAL the server
// has that is not yet stored; lag in seconds is how long the oldest WAL
// not yet stored has waited, which is what a disaster would lose.
func (m *walReceiveMetrics) registry(g *globals, slot, repo string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	c := &walReceiveCollector{m: m, retries: g.retries}
	for _, s := range walReceiveSeries {
		c.descs = append(c.descs, prometheus.NewDesc(s.name, s.help, nil, prometheus.Labels{"slot": slot, "repo": repo}))
	}
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics listens on addr and serves reg at /metrics until ctx ends.
// A listen failure is returned at once, before any work starts.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, g *globals) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("--metrics-listen %s: %w", addr, err)}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	g.log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}
