package restore

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
)

// benchPlan stores archives of 8 MiB chunks of semi-compressible data in
// an in-memory store and returns a plan over them, as restore makes one.
func benchPlan(b *testing.B, archives, chunks int) (*repository.Repository, *plan) {
	b.Helper()
	ctx := b.Context()
	store := mem.New()
	rng := rand.New(rand.NewPCG(7, 1))
	comp := chunker.NewCompressor()
	bk := &manifest.Backup{}
	p := &plan{b: bk}
	for ai := range archives {
		a := manifest.Archive{Name: "a.tar"}
		for range chunks {
			raw := make([]byte, 8<<20)
			for i := 0; i < len(raw); i += 4 {
				raw[i] = byte(rng.IntN(256))
			}
			frame, crc, err := comp.Append(nil, raw)
			if err != nil {
				b.Fatal(err)
			}
			id := chunker.ID(raw)
			if err := store.Put(ctx, repository.ChunkKey(id), bytes.NewReader(frame), int64(len(frame)), providers.PutOptions{}); err != nil {
				b.Fatal(err)
			}
			a.Chunks = append(a.Chunks, manifest.ChunkRef{ID: id, RawSize: int64(len(raw)), StoredSize: int64(len(frame)), StoredCRC32C: &crc, Codec: "lz4"})
			a.RawSize += int64(len(raw))
			p.maxChunkRaw = max(p.maxChunkRaw, int64(len(raw)))
			p.maxChunkStored = max(p.maxChunkStored, int64(len(frame)))
		}
		bk.Archives = append(bk.Archives, a)
		p.chunkOffsets = append(p.chunkOffsets, bk.ChunkOffsets(ai))
		p.rawBytes += a.RawSize
	}
	return repository.New(store), p
}

// BenchmarkChunkStream measures restore's chunk path alone: download,
// decompress and verify every chunk of two archives, in order, from an
// in-memory store, read by a writer that discards them.
func BenchmarkChunkStream(b *testing.B) {
	repo, p := benchPlan(b, 2, 16)
	b.SetBytes(p.rawBytes)
	for b.Loop() {
		if err := readArchives(b.Context(), repo, p, DefaultConcurrency); err != nil {
			b.Fatal(err)
		}
	}
}

// readArchives streams every archive of p to io.Discard the way
// extractArchives does.
func readArchives(ctx context.Context, repo *repository.Repository, p *plan, concurrency int) error {
	g, gctx := errgroup.WithContext(ctx)
	pl := newPipeline(repo, p, concurrency, func(int64) {})
	pl.start(gctx, g)
	g.Go(func() error {
		for ai := range p.b.Archives {
			cr := pl.reader(gctx, ai)
			if _, err := io.Copy(io.Discard, cr); err != nil {
				return err
			}
			if err := cr.finish(); err != nil {
				return err
			}
		}
		return nil
	})
	return g.Wait()
}
