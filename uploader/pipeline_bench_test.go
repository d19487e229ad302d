package uploader

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"testing"

	"github.com/pgstow/pgstow/chunker"
)

// nullRepo accepts every chunk and keeps nothing: it measures what the
// pipeline itself costs, without PostgreSQL or a disk.
type nullRepo struct{}

func (nullRepo) ChunkID(raw []byte) string { return chunker.ID(raw) }
func (nullRepo) HasChunk(context.Context, string) (int64, bool, error) {
	return 0, false, nil
}
func (nullRepo) PutChunk(context.Context, string, []byte, uint32) (bool, error) {
	return true, nil
}

// BenchmarkPipeline runs the backup pipeline (tar parsing, chunking,
// SHA-256, lz4, CRC32C) over an archive into a null store, with one
// Uploader for every iteration as a backup has for all its archives, so
// its pools are allocated once. Set PGSTOW_BENCH_TAR to a recorded
// base.tar (pg_basebackup -Ft -D - > base.tar) to measure on real data;
// otherwise a synthetic archive. Besides -benchmem's per-archive figures it
// reports the bytes and allocations per chunk after the first archive:
// the per-chunk path must allocate nothing in proportion to the chunk size
// (a few small values per chunk — its id, its manifest reference — are
// expected).
func BenchmarkPipeline(b *testing.B) {
	var data []byte
	if p := os.Getenv("PGSTOW_BENCH_TAR"); p != "" {
		var err error
		if data, err = os.ReadFile(p); err != nil {
			b.Fatal(err)
		}
	} else {
		data = makeTar(b, 42, 96<<20)
	}
	u := New(nullRepo{}, Config{}, slog.New(slog.DiscardHandler))
	run := func() int {
		a, _, err := u.Archive(context.Background(), bytesReader(data), 0, "base.tar", 0)
		if err != nil {
			b.Fatal(err)
		}
		return len(a.Chunks)
	}
	run() // fills the pools
	b.SetBytes(int64(len(data)))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	chunks := 0
	for b.Loop() {
		chunks += run()
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(chunks), "B/chunk")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(chunks), "allocs/chunk")
}

func bytesReader(b []byte) io.Reader { return &sliceReader{b: b} }

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
