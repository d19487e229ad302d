//go:build !race

// The race detector makes sync.Pool drop buffers on purpose (pierrec/lz4's
// among them), which this test would count: it is built without -race
// only, and make test runs this package so too.

package uploader

import (
	"bytes"
	"log/slog"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/pgstow/pgstow/chunker"
)

// TestNoPerChunkAllocation checks the pooled pipeline's promise: once an
// Uploader's pools are filled, an archive allocates nothing per chunk in
// proportion to the chunk size (no clone of a frame, no new buffer), only
// a few small values (ids, references). BenchmarkPipeline reports the same
// figure (B/chunk) on real data.
func TestNoPerChunkAllocation(t *testing.T) {
	const chunk = 1 << 20
	data := makeTar(t, 7, 24<<20)
	u := New(nullRepo{}, Config{ChunkSize: chunk, Concurrency: 2, SealWorkers: 2}, slog.New(slog.DiscardHandler))
	if _, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0); err != nil {
		t.Fatal(err) // fills the pools
	}
	// The pools' slots are filled lazily, as buffers are first needed:
	// how many an archive needs at once depends on timing, and one first
	// needed in the measured archive would count as its allocation.
	fillPool(u.raw, u.cfg.ChunkSize)
	fillPool(u.packed, chunker.CompressBound(u.cfg.ChunkSize))
	// A collection empties sync.Pools (pierrec/lz4 keeps its buffers in
	// them), and one that happens to fall inside the measured archive on
	// a busy machine would count refills as the path's own allocations.
	// What is measured is what the path allocates, so the collector stays
	// off meanwhile.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	// Even so a sync.Pool may come up one buffer short now and then (a
	// Get on one P racing a Put on another), and the encoder makes a new
	// one: once, not per chunk. The least of three archives is what every
	// archive costs; an allocation per chunk shows in each of them.
	perChunk := uint64(1 << 62)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		a, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0)
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		n := (after.TotalAlloc - before.TotalAlloc) / uint64(len(a.Chunks))
		t.Logf("%d chunks, %d bytes allocated per chunk", len(a.Chunks), n)
		perChunk = min(perChunk, n)
	}
	if perChunk > chunk/16 {
		t.Fatalf("%d bytes allocated per %d-byte chunk: the per-chunk path allocates in proportion to the chunk size", perChunk, chunk)
	}
}

// fillPool gives every empty slot of a buffer pool its buffer.
func fillPool(pool chan []byte, size int) {
	for range cap(pool) {
		b := <-pool
		if b == nil {
			b = make([]byte, 0, size)
		}
		pool <- b
	}
}
