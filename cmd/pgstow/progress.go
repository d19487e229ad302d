package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/pgstow/pgstow/backup"
	"github.com/pgstow/pgstow/catalog"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/restore"
)

// progressMode is how a long command shows how it is doing.
type progressMode int

const (
	progressOff   progressMode = iota
	progressLines              // a structured log line every few seconds
	progressBars               // live bars on the terminal
)

// resolveProgress turns --progress (auto, always, never) and --quiet into
// a mode. auto draws bars only when stderr is a terminal and logs are
// text; elsewhere (CI logs, systemd, files) it logs lines instead.
func (g *globals) resolveProgress(flag string) (progressMode, error) {
	switch flag {
	case "never":
		return progressOff, nil
	case "always":
		if g.quiet {
			return progressOff, nil
		}
		return progressBars, nil
	case "auto":
		if g.quiet {
			return progressOff, nil
		}
		// A terminal that reports no width (some pseudo-terminals) would
		// get empty bars: it gets lines.
		if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && g.logFormat == "text" {
			if w, _, err := term.GetSize(int(f.Fd())); err == nil && w >= 40 {
				return progressBars, nil
			}
		}
		return progressLines, nil
	default:
		return progressOff, usageError{fmt.Errorf("--progress %q: use auto, always or never", flag)}
	}
}

// progressFromFlags checks --progress (flag) and --progress-interval
// (every) and returns the mode resolveProgress makes of them.
func (g *globals) progressFromFlags(flag string, every time.Duration) (progressMode, error) {
	mode, err := g.resolveProgress(flag)
	if err != nil {
		return progressOff, err
	}
	if err := positiveDuration("progress-interval", every, "5s"); err != nil {
		return progressOff, err
	}
	return mode, nil
}

// progressFlags adds --progress and the hidden --progress-interval.
func progressFlags(cmd *cobra.Command, mode *string, every *time.Duration) {
	cmd.Flags().StringVar(mode, "progress", "auto", "show progress: auto (bars on a terminal, a log line every few seconds elsewhere), always (bars) or never")
	cmd.Flags().DurationVar(every, "progress-interval", 5*time.Second, "how often a progress log line is written when not drawing bars")
	_ = cmd.Flags().MarkHidden("progress-interval")
}

// snapshot is what either pipeline's progress looks like to the renderer.
type snapshot struct {
	phase       string
	done, total int64 // bytes; total 0 when unknown
	elapsed     time.Duration
	detail      string // the second line under the bar
	detailTail  string // after the upload rate, when there is one
	// uploaded counts bytes sent to the store, for the upload rate;
	// negative when the pipeline does not upload (a restore).
	uploaded int64
	fields   []any // the log line's attributes, after the common ones
	final    bool
}

// progressView renders snapshots as bars or log lines. Only cmd renders:
// the pipelines just count.
type progressView struct {
	mode  progressMode
	title string
	log   *slog.Logger
	every time.Duration
	logs  *switchWriter

	mu      sync.Mutex
	last    snapshot
	lastLog time.Time
	rate    rateMeter
	upload  rateMeter
	p       *mpb.Progress
	bar     *mpb.Bar
	info    *mpb.Bar
}

func (g *globals) newProgressView(mode progressMode, title string, every time.Duration) *progressView {
	v := &progressView{mode: mode, title: title, log: g.log, every: every, logs: g.logOut, lastLog: time.Now()}
	if mode != progressBars {
		return v
	}
	opts := []mpb.ContainerOption{mpb.WithOutput(g.stderr), mpb.WithAutoRefresh(), mpb.WithRefreshRate(200 * time.Millisecond)}
	if f, ok := g.stderr.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		// A terminal's own width is used; elsewhere (--progress always
		// into a file) lines are this wide.
		opts = append(opts, mpb.WithWidth(120))
	}
	v.p = mpb.New(opts...)
	// Log records go above the bars while they are drawn.
	v.logs.set(v.p)
	v.bar = v.p.New(0, mpb.BarStyle().Lbound("[").Rbound("]"),
		mpb.PrependDecorators(decor.Name(title+" ", decor.WCSyncSpaceR), decor.Any(v.phaseText, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Any(v.countersText)))
	v.info = v.p.New(0, mpb.NopStyle(), mpb.PrependDecorators(decor.Any(v.detailText)))
	return v
}

func (v *progressView) phaseText(decor.Statistics) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.last.phase
}

func (v *progressView) detailText(decor.Statistics) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.last.uploaded < 0 {
		return "  " + v.last.detail
	}
	return fmt.Sprintf("  %s · upload %s/s · %s", v.last.detail, manifest.HumanBytes(int64(v.upload.perSecond())), v.last.detailTail)
}

func (v *progressView) countersText(decor.Statistics) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return progressCounters(v.last, v.rate.perSecond())
}

// progressCounters is "done / total  pct  rate  ETA", with what is known.
func progressCounters(s snapshot, rate float64) string {
	var b strings.Builder
	b.WriteString(manifest.HumanBytes(s.done))
	if s.total > 0 {
		fmt.Fprintf(&b, " / %s  %3.0f%%", manifest.HumanBytes(s.total), min(100, 100*float64(s.done)/float64(s.total)))
	}
	fmt.Fprintf(&b, "  %s/s", manifest.HumanBytes(int64(rate)))
	if eta, ok := estimate(s, rate); ok {
		fmt.Fprintf(&b, "  ETA %s", eta)
	} else {
		fmt.Fprintf(&b, "  %s", s.elapsed.Round(time.Second))
	}
	return b.String()
}

// estimate is the time left at rate, when a total is known and there is
// progress to go by.
func estimate(s snapshot, rate float64) (time.Duration, bool) {
	if s.final || s.total <= 0 || rate <= 0 || s.done >= s.total {
		return 0, false
	}
	return time.Duration(float64(s.total-s.done) / rate * float64(time.Second)).Round(time.Second), true
}

// update takes a snapshot from the pipeline.
func (v *progressView) update(s snapshot) {
	if v == nil || v.mode == progressOff {
		return
	}
	v.mu.Lock()
	v.last = s
	v.rate.add(s.elapsed, s.done)
	rate := v.rate.perSecond()
	if s.uploaded >= 0 {
		v.upload.add(s.elapsed, s.uploaded)
	}
	uploadRate := v.upload.perSecond()
	due := v.mode == progressLines && time.Since(v.lastLog) >= v.every && !s.final
	if due {
		v.lastLog = time.Now()
	}
	v.mu.Unlock()
	switch v.mode {
	case progressBars:
		v.bar.SetTotal(max(s.total, s.done), false)
		v.bar.SetCurrent(s.done)
	case progressLines:
		if !due {
			return
		}
		attrs := []any{"phase", s.phase, "done_bytes", s.done}
		if s.total > 0 {
			attrs = append(attrs, "total_bytes", s.total, "percent", min(100, int(100*float64(s.done)/float64(s.total))))
		}
		attrs = append(attrs, "mib_per_s", float64(int64(rate/(1<<20)*10))/10)
		if eta, ok := estimate(s, rate); ok {
			attrs = append(attrs, "eta_s", int(eta.Seconds()))
		}
		if s.uploaded >= 0 {
			attrs = append(attrs, "upload_mib_per_s", float64(int64(uploadRate/(1<<20)*10))/10)
		}
		attrs = append(attrs, s.fields...)
		attrs = append(attrs, "elapsed_s", int(s.elapsed.Seconds()))
		v.log.Info(v.title+" progress", attrs...)
	}
}

// finish completes the bars (ok) or drops them, and gives the log back
// its terminal.
func (v *progressView) finish(ok bool) {
	if v == nil || v.p == nil {
		return
	}
	for _, b := range []*mpb.Bar{v.bar, v.info} {
		if ok {
			b.SetTotal(-1, true)
		} else {
			b.Abort(false)
		}
	}
	v.p.Wait()
	v.logs.set(nil)
}

// rateMeter is the rate over the last rateWindow of samples, so a long
// backup's rate follows the present, not its whole history.
type rateMeter struct {
	samples []rateSample
}

type rateSample struct {
	at    time.Duration
	bytes int64
}

const rateWindow = 10 * time.Second

func (r *rateMeter) add(at time.Duration, bytes int64) {
	r.samples = append(r.samples, rateSample{at, bytes})
	i := 0
	for i < len(r.samples)-2 && at-r.samples[i+1].at >= rateWindow {
		i++
	}
	r.samples = r.samples[i:]
}

func (r *rateMeter) perSecond() float64 {
	if len(r.samples) < 2 {
		if len(r.samples) == 1 && r.samples[0].at > 0 {
			return float64(r.samples[0].bytes) / r.samples[0].at.Seconds()
		}
		return 0
	}
	a, b := r.samples[0], r.samples[len(r.samples)-1]
	if b.at <= a.at {
		return 0
	}
	return float64(b.bytes-a.bytes) / (b.at - a.at).Seconds()
}

// backupSnapshot shows a backup: the bar is the raw bytes stored so far
// against the server's estimate of the data directory.
func backupSnapshot(p backup.Progress) snapshot {
	// The upload rate goes between the two halves; a narrow terminal
	// cuts the end of the line.
	detail := fmt.Sprintf("stored %s · new %s", manifest.HumanBytes(p.StoredBytes), manifest.HumanBytes(p.NewBytes))
	tail := fmt.Sprintf("dedup %s · %d chunks, %d in flight · WAL %d", manifest.HumanBytes(p.DedupBytes()), p.Chunks, p.InFlight, p.WALSegments)
	return snapshot{
		phase:      string(p.Phase),
		done:       p.RawBytes,
		total:      p.EstimatedBytes,
		elapsed:    p.Elapsed,
		detail:     detail,
		detailTail: tail,
		uploaded:   p.NewBytes,
		final:      p.Phase == backup.PhaseDone,
		fields: []any{"streamed_bytes", p.StreamedBytes, "stored_bytes", p.StoredBytes, "new_bytes", p.NewBytes,
			"dedup_bytes", p.DedupBytes(), "chunks", p.Chunks, "new_chunks", p.NewChunks, "in_flight", p.InFlight,
			"wal_segments", p.WALSegments},
	}
}

// verifySnapshot shows a full verification: stored bytes checked against
// what the backups read so far reference.
func verifySnapshot(p catalog.VerifyProgress) snapshot {
	return snapshot{
		phase:    fmt.Sprintf("%s (%d of %d)", p.Backup, p.Index, p.Count),
		done:     p.BytesDone,
		total:    p.BytesTotal,
		elapsed:  p.Elapsed,
		detail:   "stored bytes downloaded and checked",
		uploaded: -1,
		fields:   []any{"backup", p.Backup, "index", p.Index, "count", p.Count},
	}
}

// restoreSnapshot shows a restore: verified raw bytes written against the
// backup's total. A delta restore or one of chosen databases (Ranged)
// shows the bytes fetched against what it needs, and beside them the
// local bytes it kept and the placeholders it made.
func restoreSnapshot(p restore.Progress) snapshot {
	if p.Ranged {
		detail := "kept " + manifest.HumanBytes(p.BytesKept) + ", fetched " + manifest.HumanBytes(p.BytesDone)
		if p.BytesTotal > 0 {
			detail += " of " + manifest.HumanBytes(p.BytesTotal)
		}
		if p.BytesPlaceholder > 0 {
			detail += ", placeholders " + manifest.HumanBytes(p.BytesPlaceholder)
		}
		return snapshot{
			phase:    "restoring",
			done:     p.BytesDone,
			total:    p.BytesTotal,
			elapsed:  p.Elapsed,
			detail:   fmt.Sprintf("%s · %d of %d chunks", detail, p.ChunksDone, p.ChunksTotal),
			uploaded: -1,
			fields: []any{"kept_bytes", p.BytesKept, "fetched_bytes", p.BytesDone, "placeholder_bytes", p.BytesPlaceholder,
				"chunks_done", p.ChunksDone, "chunks_total", p.ChunksTotal},
		}
	}
	return snapshot{
		phase:    "restoring",
		done:     p.BytesDone,
		total:    p.BytesTotal,
		elapsed:  p.Elapsed,
		detail:   fmt.Sprintf("%d of %d chunks verified and written", p.ChunksDone, p.ChunksTotal),
		uploaded: -1,
		fields:   []any{"chunks_done", p.ChunksDone, "chunks_total", p.ChunksTotal},
	}
}

// switchWriter is the log's output: stderr, or the bars' writer while
// bars are drawn, so records print above them instead of through them.
type switchWriter struct {
	mu       sync.Mutex
	base, to io.Writer
}

func (w *switchWriter) set(to io.Writer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.to = to
}

func (w *switchWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	to := w.to
	w.mu.Unlock()
	if to != nil {
		if n, err := to.Write(b); err == nil {
			return n, nil
		}
	}
	return w.base.Write(b)
}
