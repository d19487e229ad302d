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
