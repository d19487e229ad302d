package backup

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgstow/pgstow/manifest"
)

// Phase is the step a running backup is in.
type Phase string

// The phases of a backup, in order.
const (
	PhaseConnecting Phase = "connecting"
	// PhaseCheckpoint waits for the server's start-of-backup checkpoint,
	// which with --checkpoint spread may take minutes of silence.
	PhaseCheckpoint Phase = "checkpoint"
	PhaseStreaming  Phase = "streaming"
	// PhaseWAL waits for the WAL up to the backup's end to be stored.
	PhaseWAL        Phase = "wal"
	PhaseCommitting Phase = "committing"
	PhaseDone       Phase = "done"
)

// Progress is a snapshot of a running backup. The pipeline only counts;
// rates, ETAs and bars are for whoever renders it.
type Progress struct {
	Phase Phase
	// StreamedBytes is what the server has sent of the archives (after
	// server-side compression, if any).
	StreamedBytes int64
	// EstimatedBytes is the server's size estimate of the data directory,
	// or 0 when it was not asked for (Options.EstimateSize).
	EstimatedBytes int64
	// RawBytes is the uncompressed size of the chunks done so far;
	// StoredBytes their compressed size; NewBytes what was uploaded
	// (the rest was already in the repository).
	RawBytes, StoredBytes, NewBytes int64
	Chunks, NewChunks               int64
	// InFlight counts chunks compressed and not yet stored.
	InFlight    int
	WALSegments int64
	Elapsed     time.Duration
}

// DedupBytes is the stored size of the chunks the repository already had.
func (p Progress) DedupBytes() int64 { return p.StoredBytes - p.NewBytes }

// progressReporter gathers counts from the pipeline's goroutines and
// hands snapshots to Options.Progress from one goroutine.
type progressReporter struct {
	fn                 func(Progress)
	start              time.Time
	estimate           atomic.Int64
	raw, stored, fresh atomic.Int64
	chunks, newChunks  atomic.Int64
	walSegments        atomic.Int64

	mu  sync.Mutex // serialises calls to fn and guards what follows
	cur Phase
	// streamed and inFlight read the stream's and the uploader's
	// counters once they exist (attach).
	streamed func() int64
	inFlight func() int
	done     chan struct{}
	stopped  chan struct{}
}

func newProgressReporter(o Options) *progressReporter {
	p := &progressReporter{fn: o.Progress, start: time.Now(), done: make(chan struct{}), stopped: make(chan struct{})}
	if p.fn == nil {
		close(p.stopped)
		return p
	}
	every := o.ProgressInterval
	if every <= 0 {
		every = time.Second
	}
	go func() {
		defer close(p.stopped)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-tick.C:
				p.report("")
			}
		}
	}()
	return p
}

// chunk is the uploader's OnChunk.
func (p *progressReporter) chunk(ref manifest.ChunkRef, uploaded bool) {
	p.raw.Add(ref.RawSize)
	p.stored.Add(ref.StoredSize)
	p.chunks.Add(1)
	if uploaded {
		p.fresh.Add(ref.StoredSize)
		p.newChunks.Add(1)
	}
}

// attach gives the reporter the stream's and the uploader's counters.
func (p *progressReporter) attach(streamed func() int64, inFlight func() int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.streamed, p.inFlight = streamed, inFlight
}

// phase announces a new phase at once.
func (p *progressReporter) phase(ph Phase) { p.report(ph) }

// report calls fn with a snapshot; a non-empty ph changes the phase first.
func (p *progressReporter) report(ph Phase) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ph != "" {
		p.cur = ph
	}
	s := Progress{
		Phase:          p.cur,
		EstimatedBytes: p.estimate.Load(),
		RawBytes:       p.raw.Load(),
		StoredBytes:    p.stored.Load(),
		NewBytes:       p.fresh.Load(),
		Chunks:         p.chunks.Load(),
		NewChunks:      p.newChunks.Load(),
		WALSegments:    p.walSegments.Load(),
		Elapsed:        time.Since(p.start),
	}
	if p.streamed != nil {
		s.StreamedBytes = p.streamed()
	}
	if p.inFlight != nil {
		s.InFlight = p.inFlight()
	}
	p.fn(s)
}

// stop ends the ticker; it waits so that no call to fn follows Run.
func (p *progressReporter) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	<-p.stopped
}
