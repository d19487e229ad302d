package restore

import (
	"sync/atomic"
	"time"
)

// progressEvery is how often the Progress callback is called.
const progressEvery = time.Second

// progress counts what the writer has consumed. It is updated from the
// writer and read from the reporting goroutine.
type progress struct {
	start time.Time
	// The totals are what is to be downloaded: the whole backup, or
	// what the range engine found it needs once it has looked.
	bytesTotal  atomic.Int64
	chunksTotal atomic.Int64
	bytesDone   atomic.Int64
	chunksDone  atomic.Int64
	// Set by the range engine (Progress.Ranged).
	ranged           atomic.Bool
	bytesKept        atomic.Int64
	bytesPlaceholder atomic.Int64
}

func newProgress(bytesTotal int64, chunksTotal int) *progress {
	p := &progress{}
	p.setTotal(bytesTotal, chunksTotal)
	return p
}

func (p *progress) setTotal(bytes int64, chunks int) {
	p.bytesTotal.Store(bytes)
	p.chunksTotal.Store(int64(chunks))
}

// startRanged switches to the range engine's counts: what is to be
// downloaded is unknown until every file has been looked at.
func (p *progress) startRanged() {
	p.setTotal(0, 0)
	p.ranged.Store(true)
}

// planned records one file looked at by the range engine: the local bytes
// found right, and the size of a placeholder.
func (p *progress) planned(kept, placeholder int64) {
	p.bytesKept.Add(kept)
	p.bytesPlaceholder.Add(placeholder)
}

// chunk records one chunk taken by the writer.
func (p *progress) chunk(rawSize int64) {
	p.bytesDone.Add(rawSize)
	p.chunksDone.Add(1)
}

func (p *progress) snapshot() Progress {
	return Progress{
		BytesDone:   p.bytesDone.Load(),
		BytesTotal:  p.bytesTotal.Load(),
		ChunksDone:  int(p.chunksDone.Load()),
		ChunksTotal: int(p.chunksTotal.Load()),
		Elapsed:     time.Since(p.start),

		Ranged:           p.ranged.Load(),
		BytesKept:        p.bytesKept.Load(),
		BytesPlaceholder: p.bytesPlaceholder.Load(),
	}
}

// run reports progress until the returned function is called, which also
// makes the final call to o.Progress. Only one goroutine calls o.Progress
// at a time.
func (p *progress) run(o Options) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(progressEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if o.Progress != nil {
					o.Progress(p.snapshot())
				}
			}
		}
	}()
	return func() {
		close(done)
		<-exited
		if o.Progress != nil {
			o.Progress(p.snapshot())
		}
	}
}

// rate is bytes over d in MiB/s, rounded to a tenth for logs.
func rate(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(bytes)/(1<<20)/d.Seconds()*10)) / 10
}
