//go:build !race

// The race detector makes sync.Pool drop buffers on purpose (pierrec/lz4's
// among them), which this test would count: it is built without -race
// only, and make test runs this package so too.

package uploader

import (
	"bytes"
	"log/slog"
	"runtime"
	"testing"
)

// TestNoPerChunkAllocation checks the pooled pipeline's promise: once an
// Uploader's pools are filled, an archive allocates nothing per chunk in
// proportion to the chunk size (no clone of a frame, no new buffer), only
// a few small values (ids, references). BenchmarkPipeline reports the same
// figure (B/chunk) on real data.
func TestNoPerChunkAllocation(t *testing.T) {
	const chunk = 1 << 20
	data := makeTar(t, 7, 24<<20)
	u := New(nullStore{}, Config{ChunkSize: chunk, Concurrency: 2, SealWorkers: 2}, slog.New(slog.DiscardHandler))
	if _, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0); err != nil {
		t.Fatal(err) // fills the pools
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	a, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	perChunk := (after.TotalAlloc - before.TotalAlloc) / uint64(len(a.Chunks))
	t.Logf("%d chunks, %d bytes allocated per chunk", len(a.Chunks), perChunk)
	if perChunk > chunk/16 {
		t.Fatalf("%d bytes allocated per %d-byte chunk: the per-chunk path allocates in proportion to the chunk size", perChunk, chunk)
	}
}
