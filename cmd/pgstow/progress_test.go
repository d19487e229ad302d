package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgstow/pgstow/restore"
)

func TestRateMeter(t *testing.T) {
	type sample struct {
		at    time.Duration
		bytes int64
	}
	tests := []struct {
		name    string
		samples []sample
		want    float64 // bytes per second
	}{
		{"no samples", nil, 0},
		{"one sample at the start", []sample{{0, 100}}, 0},
		{"one sample: average since the start", []sample{{2 * time.Second, 10 << 20}}, 5 << 20},
		{"two samples", []sample{{time.Second, 1 << 20}, {3 * time.Second, 21 << 20}}, 10 << 20},
		{"no time between the samples", []sample{{time.Second, 0}, {time.Second, 1 << 20}}, 0},
		{"a stall reads as zero", []sample{{0, 0}, {time.Second, 1 << 20}, {2 * time.Second, 1 << 20}, {15 * time.Second, 1 << 20}, {20 * time.Second, 1 << 20}}, 0},
		// The window keeps the newest sample at least rateWindow old, so
		// the rate spans 15 s here (5 s → 20 s), not the whole 20 s.
		{"old samples drop out", []sample{{0, 0}, {5 * time.Second, 50}, {15 * time.Second, 150}, {20 * time.Second, 350}}, 300.0 / 15},
		{"a window never shrinks below two samples", []sample{{0, 0}, {100 * time.Second, 1000}}, 10},
		{"the rate follows the present", []sample{{0, 0}, {10 * time.Second, 100 << 20}, {20 * time.Second, 110 << 20}, {25 * time.Second, 115 << 20}}, float64(15<<20) / 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r rateMeter
			for _, s := range tt.samples {
				r.add(s.at, s.bytes)
			}
			if got := r.perSecond(); math.Abs(got-tt.want) > 1e-9*max(1, tt.want) {
				t.Fatalf("perSecond() = %v, want %v (samples kept %v)", got, tt.want, r.samples)
			}
		})
	}
}

// TestRateMeterBounded: a long run keeps a bounded number of samples.
func TestRateMeterBounded(t *testing.T) {
	var r rateMeter
	for i := range 10000 {
		r.add(time.Duration(i)*time.Second, int64(i)<<20)
	}
	if n := len(r.samples); n > int(rateWindow/time.Second)+2 {
		t.Fatalf("%d samples kept after 10000 s of one per second", n)
	}
	if got := r.perSecond(); got != 1<<20 {
		t.Fatalf("perSecond() = %v, want 1 MiB/s", got)
	}
}

func TestEstimate(t *testing.T) {
	tests := []struct {
		name string
		s    snapshot
		rate float64
		want time.Duration
		ok   bool
	}{
		{"half done", snapshot{done: 512 << 20, total: 1 << 30}, 100 << 20, 5 * time.Second, true},
		{"rounded to the second", snapshot{done: 0, total: 1500}, 1000, 2 * time.Second, true},
		{"no total", snapshot{done: 100}, 10, 0, false},
		{"no rate yet", snapshot{done: 0, total: 100}, 0, 0, false},
		{"done", snapshot{done: 100, total: 100}, 10, 0, false},
		{"past the estimate", snapshot{done: 150, total: 100}, 10, 0, false},
		{"final", snapshot{done: 50, total: 100, final: true}, 10, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := estimate(tt.s, tt.rate)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("estimate = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestProgressCounters(t *testing.T) {
	tests := []struct {
		name string
		s    snapshot
		rate float64
		want string
	}{
		{"with a total", snapshot{done: 512 << 20, total: 1 << 30, elapsed: 7 * time.Second}, 100 << 20,
			"512.0 MiB / 1.0 GiB   50%  100.0 MiB/s  ETA 5s"},
		{"no total: elapsed instead of an ETA", snapshot{done: 1 << 20, elapsed: 3400 * time.Millisecond}, 0,
			"1.0 MiB  0 B/s  3s"},
		{"past the estimate: capped at 100%", snapshot{done: 1100 << 20, total: 1 << 30, elapsed: time.Minute}, 1 << 20,
			"1.1 GiB / 1.0 GiB  100%  1.0 MiB/s  1m0s"},
		{"final: no ETA", snapshot{done: 1 << 30, total: 2 << 30, elapsed: 90 * time.Second, final: true}, 1 << 20,
			"1.0 GiB / 2.0 GiB   50%  1.0 MiB/s  1m30s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := progressCounters(tt.s, tt.rate); got != tt.want {
				t.Fatalf("progressCounters = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestResolveProgress(t *testing.T) {
	// A file that is not a terminal: what stderr is under systemd or cron.
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests := []struct {
		name      string
		flag      string
		quiet     bool
		stderr    io.Writer
		logFormat string
		want      progressMode
		usage     bool
	}{
		{"never", "never", false, &bytes.Buffer{}, "text", progressOff, false},
		{"always into a buffer", "always", false, &bytes.Buffer{}, "text", progressBars, false},
		{"always with json logs", "always", false, f, "json", progressBars, false},
		{"auto into a buffer", "auto", false, &bytes.Buffer{}, "text", progressLines, false},
		{"auto into a file", "auto", false, f, "text", progressLines, false},
		{"auto with json logs", "auto", false, f, "json", progressLines, false},
		{"quiet auto", "auto", true, f, "text", progressOff, false},
		{"quiet always", "always", true, &bytes.Buffer{}, "text", progressOff, false},
		{"quiet never", "never", true, &bytes.Buffer{}, "text", progressOff, false},
		{"bad value", "bogus", false, &bytes.Buffer{}, "text", progressOff, true},
		{"bad value, quiet", "bogus", true, &bytes.Buffer{}, "text", progressOff, true},
		{"case matters", "Auto", false, &bytes.Buffer{}, "text", progressOff, true},
		{"empty", "", false, &bytes.Buffer{}, "text", progressOff, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &globals{quiet: tt.quiet, logFormat: tt.logFormat, stderr: tt.stderr}
			got, err := g.resolveProgress(tt.flag)
			var ue usageError
			if tt.usage {
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--progress") {
					t.Fatalf("resolveProgress(%q) error %v, want a usage error naming --progress", tt.flag, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("resolveProgress(%q) = %v, %v; want %v", tt.flag, got, err, tt.want)
			}
		})
	}
}

// TestProgressViewLines: in line mode a snapshot becomes one INFO record
// with the counters as attributes once the interval has passed, the final
// snapshot none; a view that is off writes nothing.
func TestProgressViewLines(t *testing.T) {
	half := snapshot{phase: "streaming", done: 50 << 20, total: 100 << 20, elapsed: 10 * time.Second, fields: []any{"chunks", 7}}
	tests := []struct {
		name  string
		mode  progressMode
		every time.Duration
		snaps []snapshot
		want  []map[string]any // attributes each record must have
	}{
		{"a line per snapshot", progressLines, 0, []snapshot{half}, []map[string]any{{
			"msg": "backup progress", "phase": "streaming", "done_bytes": float64(50 << 20), "total_bytes": float64(100 << 20),
			"percent": float64(50), "mib_per_s": float64(5), "eta_s": float64(10), "chunks": float64(7), "elapsed_s": float64(10),
		}}},
		{"no total: no percent", progressLines, 0, []snapshot{{phase: "checkpoint", elapsed: time.Second}}, []map[string]any{{
			"msg": "backup progress", "phase": "checkpoint", "done_bytes": float64(0), "total_bytes": nil, "percent": nil, "eta_s": nil,
		}}},
		{"the final snapshot logs nothing", progressLines, 0, []snapshot{{phase: "done", done: 1, total: 1, elapsed: time.Second, final: true}}, nil},
		{"not due yet", progressLines, time.Hour, []snapshot{half, half}, nil},
		{"off", progressOff, 0, []snapshot{half}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			g := &globals{log: slog.New(slog.NewJSONHandler(&buf, nil))}
			v := g.newProgressView(tt.mode, "backup", tt.every)
			for _, s := range tt.snaps {
				v.update(s)
			}
			v.finish(true)
			var got []map[string]any
			for line := range strings.Lines(buf.String()) {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				got = append(got, rec)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d records, want %d:\n%s", len(got), len(tt.want), buf.String())
			}
			for i, want := range tt.want {
				if got[i]["level"] != "INFO" {
					t.Errorf("record %d level %v, want INFO", i, got[i]["level"])
				}
				for k, v := range want {
					if got[i][k] != v {
						t.Errorf("record %d: %s = %v, want %v\n%s", i, k, got[i][k], v, buf.String())
					}
				}
			}
		})
	}
}

// syncBuffer is a bytes.Buffer the bars' goroutine can write while the
// test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestProgressViewBars: bars drawn into a writer that is no terminal end
// with a complete frame, and log records written meanwhile are not lost.
func TestProgressViewBars(t *testing.T) {
	out := &syncBuffer{}
	g := &globals{stderr: out}
	g.logOut = &switchWriter{base: out}
	g.log = slog.New(slog.NewTextHandler(g.logOut, nil))
	v := g.newProgressView(progressBars, "restore", time.Second)
	v.update(snapshot{phase: "restoring", done: 10 << 20, total: 40 << 20, elapsed: time.Second, detail: "1 of 4 chunks"})
	g.log.Info("while the bars are drawn")
	v.update(snapshot{phase: "restoring", done: 40 << 20, total: 40 << 20, elapsed: 2 * time.Second, detail: "4 of 4 chunks"})
	v.finish(true)
	s := out.String()
	for _, want := range []string{"restore", "restoring", "40.0 MiB / 40.0 MiB", "100%", "4 of 4 chunks", "while the bars are drawn"} {
		if !strings.Contains(s, want) {
			t.Errorf("bar output lacks %q:\n%q", want, s)
		}
	}
	// After finish the log writes straight to stderr again.
	g.log.Info("after the bars")
	if !strings.Contains(out.String(), "after the bars") {
		t.Fatalf("a record after finish was lost:\n%q", out.String())
	}
}

// TestRestoreSnapshot: a normal restore shows the chunks written; a delta
// restore or one of chosen databases shows the bytes kept against those
// fetched, in the bar's detail line and as attributes of the log line.
func TestRestoreSnapshot(t *testing.T) {
	tests := []struct {
		name   string
		p      restore.Progress
		detail string
		attrs  map[string]any // in the JSON log line; nil: must be absent
	}{
		{"normal", restore.Progress{BytesDone: 3 << 20, BytesTotal: 8 << 20, ChunksDone: 3, ChunksTotal: 8, Elapsed: time.Second},
			"3 of 8 chunks verified and written",
			map[string]any{"done_bytes": float64(3 << 20), "total_bytes": float64(8 << 20), "chunks_done": float64(3),
				"kept_bytes": nil, "fetched_bytes": nil, "placeholder_bytes": nil}},
		{"delta, checking", restore.Progress{Ranged: true, BytesKept: 5 << 20, Elapsed: time.Second},
			"kept 5.0 MiB, fetched 0 B · 0 of 0 chunks",
			map[string]any{"kept_bytes": float64(5 << 20), "fetched_bytes": float64(0), "total_bytes": nil, "placeholder_bytes": float64(0)}},
		{"delta, fetching", restore.Progress{Ranged: true, BytesKept: 5 << 20, BytesDone: 1 << 20, BytesTotal: 2 << 20, ChunksDone: 1, ChunksTotal: 2, Elapsed: time.Second},
			"kept 5.0 MiB, fetched 1.0 MiB of 2.0 MiB · 1 of 2 chunks",
			map[string]any{"kept_bytes": float64(5 << 20), "fetched_bytes": float64(1 << 20), "done_bytes": float64(1 << 20), "total_bytes": float64(2 << 20)}},
		{"chosen databases", restore.Progress{Ranged: true, BytesDone: 1 << 20, BytesTotal: 2 << 20, BytesPlaceholder: 7 << 20, ChunksDone: 1, ChunksTotal: 2, Elapsed: time.Second},
			"kept 0 B, fetched 1.0 MiB of 2.0 MiB, placeholders 7.0 MiB · 1 of 2 chunks",
			map[string]any{"kept_bytes": float64(0), "placeholder_bytes": float64(7 << 20)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := restoreSnapshot(tt.p)
			if s.detail != tt.detail {
				t.Errorf("detail %q, want %q", s.detail, tt.detail)
			}
			var buf bytes.Buffer
			g := &globals{log: slog.New(slog.NewJSONHandler(&buf, nil))}
			v := g.newProgressView(progressLines, "restore", 0)
			v.update(s)
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			for k, want := range tt.attrs {
				if got := rec[k]; got != want {
					t.Errorf("%s = %v, want %v\n%s", k, got, want, buf.String())
				}
			}
		})
	}
}
