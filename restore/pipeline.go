package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// The chunk pipeline downloads and verifies the chunks of every archive, in
// manifest order, ahead of the single writer that extracts them. It is one
// stream over all archives (repository.StreamChunks), so the next
// archive's first chunks arrive while the writer finishes the current one.
//
// The stream hands each chunk, in order, to a callback on its own
// goroutine; the callback passes the chunk's bytes to the writer's reader
// and waits until the writer has read them, as the stream reuses the
// buffer once the callback returns. Memory is the stream's budget
// (repository.StreamOptions.MemoryBudget): Concurrency stored buffers and
// at most Concurrency decompressed ones, fewer with few cores, and
// fetchCacheChunks kept for references that name a chunk again.
//
// A reference may be a slice of its chunk (an incremental backup): the
// writer gets only the slice's bytes, and a chunk several references
// slice is downloaded once while its uses are close (the stream's fetch
// plan, repository.StreamOptions.CacheChunks).

// handed is one verified chunk on its way to the writer.
type handed struct {
	archive int
	raw     []byte // the stream's buffer, valid until the writer releases it
}

type pipeline struct {
	repo        *repository.Repository
	p           *plan
	concurrency int
	// starts[a] is the stream position of archive a's first chunk.
	starts []int
	// onChunk is called as the writer takes each verified chunk.
	onChunk func(rawSize int64)
	// handoff carries each chunk to the writer; taken says the writer
	// is done with it (it has room for one: releasing never waits).
	handoff chan handed
	taken   chan struct{}
	// ended is closed when the stream has handed out every chunk.
	ended chan struct{}
}

func newPipeline(repo *repository.Repository, p *plan, concurrency int, onChunk func(int64)) *pipeline {
	pl := &pipeline{
		repo:        repo,
		p:           p,
		concurrency: concurrency,
		onChunk:     onChunk,
		handoff:     make(chan handed),
		taken:       make(chan struct{}, 1),
		ended:       make(chan struct{}),
	}
	n := 0
	for _, a := range p.b.Archives {
		pl.starts = append(pl.starts, n)
		n += len(a.Chunks)
	}
	return pl
}

// refs ranges over the chunks of every archive in order, without a copy.
func (pl *pipeline) refs(yield func(manifest.ChunkRef) bool) {
	for _, a := range pl.p.b.Archives {
		for _, ref := range a.Chunks {
			if !yield(ref) {
				return
			}
		}
	}
}

// locate returns the archive of the chunk at stream position i and its
// index there. An empty archive starts where the next one does, and the
// search takes the last archive starting at or before i.
func (pl *pipeline) locate(i int) (archive, index int) {
	archive = sort.Search(len(pl.starts), func(k int) bool { return pl.starts[k] > i }) - 1
	return archive, i - pl.starts[archive]
}

// start runs the stream in g. A bad chunk stops it with an error naming
// the chunk, which is therefore the error that stops the restore: the
// writer only sees the cancellation that follows.
func (pl *pipeline) start(ctx context.Context, g *errgroup.Group) {
	g.Go(func() error {
		err := pl.repo.StreamChunks(ctx, pl.refs, streamOptions(pl.concurrency),
			func(i int, raw []byte, err error) error {
				ai, ci := pl.locate(i)
				if err == nil {
					raw, err = sliceOf(pl.p.b.Archives[ai].Chunks[ci], raw)
				}
				if err != nil {
					return pl.chunkError(ai, ci, err)
				}
				select {
				case pl.handoff <- handed{archive: ai, raw: raw}:
				case <-ctx.Done():
					return ctx.Err()
				}
				select {
				case <-pl.taken:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		if err == nil {
			// Only now: after a failure the group's cancellation,
			// not the end of the stream, must reach the writer.
			close(pl.ended)
		}
		return err
	})
}

// chunkError names the chunk, its archive and the files it holds, so the
// user knows what a missing or corrupt chunk affects.
func (pl *pipeline) chunkError(archive, index int, err error) error {
	what := "could not be downloaded"
	if errors.Is(err, repository.ErrCorrupt) {
		what = "is corrupt"
	}
	a := pl.p.b.Archives[archive]
	ref := a.Chunks[index]
	holds := pl.p.b.FilesIn(archive, pl.p.chunkOffsets[archive][index], ref.Len())
	return fmt.Errorf("chunk %s (%s, chunk %d of %d; it holds %s) %s: %w",
		ref.ID, a.Name, index+1, len(a.Chunks), holds, what, err)
}

// fetchCacheChunks is how many decompressed chunks a restore keeps for
// references that name them again soon (repository.StreamOptions.
// CacheChunks): an incremental backup's archive alternates between
// slices of its parent's chunks and of its own, so a few suffice.
const fetchCacheChunks = 4

// streamOptions are a restore's chunk stream options.
func streamOptions(concurrency int) repository.StreamOptions {
	return repository.StreamOptions{Concurrency: concurrency, CacheChunks: fetchCacheChunks}
}

// sliceOf returns the bytes of chunk content raw that ref contributes to
// its archive: all of them, or for a slice [Offset, Offset+Length). A
// slice beyond the chunk is the manifest's fault, reported as corrupt.
func sliceOf(ref manifest.ChunkRef, raw []byte) ([]byte, error) {
	if !ref.Sliced() {
		return raw, nil
	}
	if ref.Offset < 0 || ref.Offset > int64(len(raw)) || ref.Length > int64(len(raw))-ref.Offset {
		return nil, fmt.Errorf("%w: the manifest slices bytes [%d, %d) of a chunk of %d bytes", repository.ErrCorrupt, ref.Offset, ref.Offset+ref.Length, len(raw))
	}
	return raw[ref.Offset : ref.Offset+ref.Length], nil
}

// chunkReader reads one archive as the concatenation of its chunks, taking
// them from the pipeline in order.
type chunkReader struct {
	ctx     context.Context
	pl      *pipeline
	archive int
	left    int  // chunks of the archive not yet taken
	held    bool // a chunk is taken and not yet released
	rest    []byte
}

func (pl *pipeline) reader(ctx context.Context, archive int) *chunkReader {
	return &chunkReader{ctx: ctx, pl: pl, archive: archive, left: len(pl.p.b.Archives[archive].Chunks)}
}

func (r *chunkReader) Read(b []byte) (int, error) {
	for len(r.rest) == 0 {
		r.release()
		if r.left == 0 {
			return 0, io.EOF
		}
		var h handed
		select {
		case h = <-r.pl.handoff:
		case <-r.pl.ended:
			return 0, errors.New("internal error: chunk pipeline ended early")
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
		r.held = true
		if h.archive != r.archive {
			r.release()
			return 0, fmt.Errorf("internal error: chunk of archive %d read as archive %d", h.archive, r.archive)
		}
		r.rest = h.raw
		r.left--
		r.pl.onChunk(int64(len(h.raw)))
	}
	n := copy(b, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// finish reads the archive to its last chunk, so every chunk is verified
// (the bytes after the tar's end marker too) and the stream is positioned
// at the next archive.
func (r *chunkReader) finish() error {
	var one [1]byte
	for {
		// Dropping the rest of the current chunk makes Read take the
		// next one; nothing is copied but a byte per chunk.
		r.rest = nil
		if _, err := r.Read(one[:]); err != nil {
			r.release()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// release tells the stream the writer is done with the chunk it holds,
// whose buffer the stream then reuses.
func (r *chunkReader) release() {
	if r.held {
		r.held, r.rest = false, nil
		r.pl.taken <- struct{}{} // never waits: one chunk is handed at a time
	}
}
