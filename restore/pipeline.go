package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// The chunk pipeline downloads and verifies the chunks of every archive, in
// manifest order, ahead of the single writer that extracts them. It is one
// stream over all archives, so the next archive's first chunks arrive while
// the writer finishes the current one.
//
// Memory: a token is taken for each chunk before it is handed to a worker
// and given back only once the writer has consumed it, so at most
// concurrency chunks are downloaded ahead, each worker keeping one buffer
// for the stored (compressed) bytes. Decompression is held to a smaller
// window: chunk i is decompressed only once the writer has consumed chunk
// i−rawWindow, so at most rawWindow raw buffers exist. Downloads (which
// want many in flight against a remote store) thus do not each cost a
// decompressed chunk, and the window cannot deadlock because chunk i only
// ever waits for earlier chunks. The budget is concurrency × largest
// stored chunk + rawWindow × largest raw chunk.

// chunkJob is one chunk on its way from the store to the writer.
type chunkJob struct {
	seq            int // position over all archives
	archive, index int
	ref            manifest.ChunkRef
	done           chan struct{} // closed once raw or err is set
	raw            *bytes.Buffer
	err            error
}

type pipeline struct {
	repo   *repository.Repository
	p      *plan
	jobs   chan *chunkJob     // to the workers
	queue  chan *chunkJob     // to the writer, in archive order
	tokens chan struct{}      // one per chunk in flight
	pool   chan *bytes.Buffer // raw buffers, nil until first used
	// onChunk is called as the writer takes each verified chunk.
	onChunk func(rawSize int64)

	rawWindow int
	mu        sync.Mutex
	cond      *sync.Cond
	consumed  int // chunks the writer has released
}

func newPipeline(repo *repository.Repository, p *plan, concurrency int, onChunk func(int64)) *pipeline {
	pl := &pipeline{
		repo:    repo,
		p:       p,
		jobs:    make(chan *chunkJob, concurrency),
		queue:   make(chan *chunkJob, concurrency),
		tokens:  make(chan struct{}, concurrency),
		onChunk: onChunk,
	}
	pl.rawWindow = min(concurrency, runtime.GOMAXPROCS(0)+2)
	pl.pool = make(chan *bytes.Buffer, pl.rawWindow)
	for range pl.rawWindow {
		pl.pool <- nil
	}
	pl.cond = sync.NewCond(&pl.mu)
	return pl
}

// awaitWindow blocks until chunk seq may be decompressed.
func (pl *pipeline) awaitWindow(ctx context.Context, seq int) error {
	stop := context.AfterFunc(ctx, func() {
		pl.mu.Lock()
		pl.cond.Broadcast()
		pl.mu.Unlock()
	})
	defer stop()
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for seq-pl.consumed >= pl.rawWindow {
		if err := ctx.Err(); err != nil {
			return err
		}
		pl.cond.Wait()
	}
	return nil
}

// start runs the producer and the workers in g.
func (pl *pipeline) start(ctx context.Context, g *errgroup.Group) {
	g.Go(func() error { return pl.produce(ctx) })
	for range cap(pl.tokens) {
		g.Go(func() error { return pl.work(ctx) })
	}
}

// produce hands out the chunks in order, each once a token is free.
func (pl *pipeline) produce(ctx context.Context) error {
	defer close(pl.queue)
	defer close(pl.jobs)
	seq := 0
	for ai, a := range pl.p.b.Archives {
		for ci, ref := range a.Chunks {
			seq++
			select {
			case pl.tokens <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			job := &chunkJob{seq: seq - 1, archive: ai, index: ci, ref: ref, done: make(chan struct{})}
			// Neither send waits: a channel holds at most the chunks
			// that hold tokens, and there are as many tokens as slots.
			select {
			case pl.jobs <- job:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case pl.queue <- job:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// work downloads and verifies chunks. Its first failure is returned to the
// errgroup as well as left on the job, so the error that stops the restore
// is the one naming the chunk, not the writer's cancellation.
func (pl *pipeline) work(ctx context.Context) error {
	// Chunk ids are checked: the frames' own checksums add nothing here.
	dec := &chunker.Decompressor{TrustID: true}
	// Sized once for the largest chunk, so no download grows it again.
	stored := make([]byte, 0, pl.p.maxChunkStored)
	for job := range pl.jobs {
		job.raw, job.err = pl.fetch(ctx, dec, &stored, job)
		close(job.done)
		if job.err != nil {
			return job.err
		}
	}
	return nil
}

// fetch downloads one chunk into stored and decompresses it into a pooled
// buffer, checking the stored size, the LZ4 content checksum, the SHA-256
// against the chunk's id and the raw size.
func (pl *pipeline) fetch(ctx context.Context, dec *chunker.Decompressor, stored *[]byte, job *chunkJob) (*bytes.Buffer, error) {
	data, err := pl.repo.DownloadChunk(ctx, job.ref, stored)
	if err != nil {
		return nil, pl.chunkError(job, err)
	}
	if err := pl.awaitWindow(ctx, job.seq); err != nil {
		return nil, pl.chunkError(job, err)
	}
	var raw *bytes.Buffer
	select {
	case raw = <-pl.pool:
	case <-ctx.Done():
		return nil, pl.chunkError(job, ctx.Err())
	}
	if raw == nil {
		// Sized once for the largest chunk: decoding into it never
		// grows it, and the decoder has room to decode in place.
		raw = bytes.NewBuffer(make([]byte, 0, pl.p.maxChunkRaw))
	}
	if err := pl.repo.DecodeChunk(dec, job.ref, data, raw); err != nil {
		pl.putBuffer(raw)
		return nil, pl.chunkError(job, err)
	}
	return raw, nil
}

// chunkError names the chunk, its archive and the files it holds, so the
// user knows what a missing or corrupt chunk affects.
func (pl *pipeline) chunkError(job *chunkJob, err error) error {
	what := "could not be downloaded"
	if errors.Is(err, repository.ErrCorrupt) {
		what = "is corrupt"
	}
	a := pl.p.b.Archives[job.archive]
	holds := pl.p.b.FilesIn(job.archive, pl.p.chunkOffsets[job.archive][job.index], job.ref.RawSize)
	return fmt.Errorf("chunk %s (%s, chunk %d of %d; it holds %s) %s: %w",
		job.ref.ID, a.Name, job.index+1, len(a.Chunks), holds, what, err)
}

// putBuffer returns a raw buffer to the pool; it never blocks.
func (pl *pipeline) putBuffer(b *bytes.Buffer) {
	b.Reset()
	select {
	case pl.pool <- b:
	default:
	}
}

// recycle gives back what a consumed chunk held: its buffer first, then its
// token, so that a worker always finds a buffer.
func (pl *pipeline) recycle(job *chunkJob) {
	if job.raw != nil {
		pl.putBuffer(job.raw)
		job.raw = nil
	}
	pl.mu.Lock()
	pl.consumed++
	pl.cond.Broadcast()
	pl.mu.Unlock()
	<-pl.tokens
}

// chunkReader reads one archive as the concatenation of its chunks, taking
// them from the pipeline in order.
type chunkReader struct {
	ctx     context.Context
	pl      *pipeline
	archive int
	left    int // chunks of the archive not yet taken
	cur     *chunkJob
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
		var job *chunkJob
		select {
		case j, ok := <-r.pl.queue:
			if !ok {
				// The producer stops early only when the restore
				// is being cancelled.
				if err := context.Cause(r.ctx); err != nil {
					return 0, err
				}
				return 0, errors.New("internal error: chunk pipeline ended early")
			}
			job = j
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
		select {
		case <-job.done:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
		if job.err != nil {
			return 0, job.err
		}
		if job.archive != r.archive {
			return 0, fmt.Errorf("internal error: chunk of archive %d read as archive %d", job.archive, r.archive)
		}
		r.cur, r.rest = job, job.raw.Bytes()
		r.left--
		r.pl.onChunk(job.ref.RawSize)
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

func (r *chunkReader) release() {
	if r.cur != nil {
		r.pl.recycle(r.cur)
		r.cur, r.rest = nil, nil
	}
}
