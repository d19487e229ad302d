package restore

import (
	"runtime"

	"github.com/pgstow/pgstow/uploader"
)

// MemoryBudget is the memory, in bytes, a restore with o's concurrency
// keeps in pooled buffers: Concurrency stored chunks in flight, one raw
// chunk per core plus two, and the fetchCacheChunks raw chunks kept for
// an incremental backup's repeated references, each of the default
// chunk size. It is an
// estimate made before the manifest is read (a backup taken with a larger
// --chunk-size needs more), for sizing the Go runtime's memory limit.
func (o Options) MemoryBudget() int64 {
	c := o.Concurrency
	if c <= 0 {
		c = DefaultConcurrency
	}
	return int64(c+runtime.GOMAXPROCS(0)+2+fetchCacheChunks) * uploader.DefaultChunkSize
}
