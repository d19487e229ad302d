package repository

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"runtime"
	"sync"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
)

// StreamOptions shape a chunk stream (StreamChunks).
type StreamOptions struct {
	// Concurrency is how many chunks are downloaded at once, and so how
	// far the stream runs ahead of its consumer (default 4). Each
	// download holds one buffer of stored bytes; a remote store wants
	// many in flight.
	Concurrency int
	// RawBuffers is how many decompressed chunks exist at once, the one
	// the consumer holds included (default the smaller of Concurrency
	// and GOMAXPROCS+2): downloads, which want to be many, do not each
	// cost a decompressed chunk, and decompression, which wants a core,
	// does not run further ahead than the cores allow.
	RawBuffers int
	// CheckFrames checks each LZ4 frame's content checksum besides the
	// chunk's id. The id proves the content, so a restore leaves it out
	// (it costs about 5% of the CPU); a verification of the repository
	// wants it, as a damaged checksum field is damage.
	CheckFrames bool
	// CheckStoredCRC compares each chunk's stored bytes with the CRC32C
	// its reference records (CheckStoredCRC). A mismatch over content
	// that decodes right is passed on with the content and an error
	// matching ErrStoredCRC.
	CheckStoredCRC bool
}

// DefaultStreamConcurrency is StreamOptions.Concurrency when not set.
const DefaultStreamConcurrency = 4

// presizeLimit bounds the buffers a stream allocates before the first
// download, sized for the largest chunk the references name: a manifest
// that claims a larger chunk gets buffers grown as its bytes arrive, not
// an allocation on its word alone.
const presizeLimit = 64 << 20

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultStreamConcurrency
	}
	if o.RawBuffers <= 0 {
		o.RawBuffers = min(o.Concurrency, runtime.GOMAXPROCS(0)+2)
	}
	o.RawBuffers = min(o.RawBuffers, o.Concurrency)
	return o
}

// MemoryBudget is the most memory a stream's buffers take, given the
// largest raw and stored chunk sizes: one stored buffer per download and
// RawBuffers decompressed ones.
func (o StreamOptions) MemoryBudget(maxRawSize, maxStoredSize int64) int64 {
	o = o.withDefaults()
	return int64(o.Concurrency)*maxStoredSize + int64(o.RawBuffers)*maxRawSize
}

// StreamChunks downloads, decompresses and checks the chunks refs names
// (size, content against the id, and as o asks the frame checksum and
// the stored CRC32C), several at once, and calls fn with each in the
// order of refs, on the caller's goroutine: i is the chunk's position.
// It serves restore, which stops at the first bad chunk, and verify,
// which notes each and goes on.
//
// err is the chunk's own failure: the store's (providers.ErrNotExist for
// a missing chunk, or a failed download), ErrCorrupt, or with
// CheckStoredCRC an ErrStoredCRC mismatch. raw is the chunk's content
// when err is nil or matches ErrStoredCRC, and nil otherwise. raw is a
// pooled buffer, reused once fn returns: fn must not keep it.
//
// fn returning an error stops the stream, and StreamChunks returns that
// error once every download has stopped; otherwise it returns nil after
// the last chunk, or the context's error if ctx ends first.
//
// refs is ranged over twice, first to size the buffers for the largest
// chunk, so that a restore's buffers are allocated once and never grown;
// being an iterator, it can walk every archive of a backup without a
// copy of their references.
//
// Memory is StreamOptions.MemoryBudget: chunk i is decompressed only once
// fn has returned for chunk i−RawBuffers, and is downloaded only once it
// has for chunk i−Concurrency. Neither wait can deadlock, as a chunk only
// ever waits for earlier ones.
func (r *Repository) StreamChunks(ctx context.Context, refs iter.Seq[manifest.ChunkRef], o StreamOptions, fn func(i int, raw []byte, err error) error) error {
	o = o.withDefaults()
	var maxRaw, maxStored int64
	n := 0
	for ref := range refs {
		maxRaw, maxStored = max(maxRaw, ref.RawSize), max(maxStored, ref.StoredSize)
		n++
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &stream{
		repo:      r,
		o:         o,
		maxRaw:    min(maxRaw, presizeLimit),
		maxStored: min(maxStored, presizeLimit),
		slots:     make([]streamSlot, o.Concurrency),
		jobs:      make(chan int, o.Concurrency),
		tokens:    make(chan struct{}, o.Concurrency),
		pool:      make(chan *bytes.Buffer, o.RawBuffers),
		ended:     make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	for i := range s.slots {
		s.slots[i].done = make(chan struct{}, 1)
	}
	for range o.RawBuffers {
		s.pool <- nil // allocated on first use
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.produce(ctx, refs, n) })
	for range o.Concurrency {
		wg.Go(func() { s.work(ctx) })
	}
	err := s.consume(ctx, n, fn)
	cancel()
	wg.Wait()
	return err
}

// stream is one StreamChunks call. Chunk i travels in slot i mod
// Concurrency: the producer hands chunk i out only once it holds a token,
// and the consumer gives chunk i−Concurrency's token back only once done
// with it, so a slot carries one chunk at a time and nothing is allocated
// per chunk.
type stream struct {
	repo              *Repository
	o                 StreamOptions
	maxRaw, maxStored int64
	slots             []streamSlot
	jobs              chan int           // chunk positions, to the workers
	tokens            chan struct{}      // one per chunk handed out and not yet consumed
	pool              chan *bytes.Buffer // raw buffers, nil until first used
	// ended is closed when the producer stops, produced set before: how
	// many chunks it handed out.
	ended    chan struct{}
	produced int

	mu       sync.Mutex
	cond     *sync.Cond
	consumed int // chunks fn is done with
}

// streamSlot carries one chunk from the producer through a worker to the
// consumer.
type streamSlot struct {
	ref  manifest.ChunkRef // set by the producer
	raw  *bytes.Buffer     // set by the worker, with err
	err  error
	done chan struct{} // a worker's signal that raw and err are set
}

// produce hands out the first n chunks in order, each once a token is
// free.
func (s *stream) produce(ctx context.Context, refs iter.Seq[manifest.ChunkRef], n int) {
	i := 0
	defer func() {
		s.produced = i
		close(s.ended)
		close(s.jobs)
	}()
	for ref := range refs {
		if i == n {
			return
		}
		select {
		case s.tokens <- struct{}{}:
		case <-ctx.Done():
			return
		}
		s.slots[i%len(s.slots)].ref = ref
		s.jobs <- i // never waits: it holds as many positions as there are tokens
		i++
	}
}

// work downloads and checks chunks until the positions run out.
func (s *stream) work(ctx context.Context) {
	dec := &chunker.Decompressor{TrustID: !s.o.CheckFrames}
	// Sized once for the largest chunk, with the byte DownloadChunk
	// wants spare to see the end, so no download grows it again.
	stored := make([]byte, 0, s.maxStored+1)
	for i := range s.jobs {
		slot := &s.slots[i%len(s.slots)]
		slot.raw, slot.err = s.fetch(ctx, dec, &stored, i, slot.ref)
		slot.done <- struct{}{} // never waits: one chunk per slot
	}
}

// fetch downloads chunk i into stored and decompresses it into a pooled
// buffer once the window lets it.
func (s *stream) fetch(ctx context.Context, dec *chunker.Decompressor, stored *[]byte, i int, ref manifest.ChunkRef) (*bytes.Buffer, error) {
	data, err := s.repo.DownloadChunk(ctx, ref, stored)
	if err != nil {
		return nil, err
	}
	if err := s.awaitWindow(ctx, i); err != nil {
		return nil, err
	}
	var raw *bytes.Buffer
	select {
	case raw = <-s.pool:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if raw == nil {
		// Sized once for the largest chunk: decoding into it never
		// grows it, and the decoder has room to decode in place.
		raw = bytes.NewBuffer(make([]byte, 0, s.maxRaw))
	}
	if err := s.repo.DecodeChunk(dec, ref, data, raw); err != nil {
		s.putBuffer(raw)
		return nil, err
	}
	if s.o.CheckStoredCRC {
		if err := CheckStoredCRC(ref, data); err != nil {
			return raw, err // the content is right: the caller judges
		}
	}
	return raw, nil
}

// awaitWindow blocks until chunk i may be decompressed.
func (s *stream) awaitWindow(ctx context.Context, i int) error {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i-s.consumed >= s.o.RawBuffers {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.cond.Wait()
	}
	return nil
}

// consume calls fn for each chunk in order as its worker finishes it.
func (s *stream) consume(ctx context.Context, n int, fn func(i int, raw []byte, err error) error) error {
	for i := range n {
		slot := &s.slots[i%len(s.slots)]
		if err := s.await(ctx, i, slot); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			// A chunk that failed because the stream is being
			// cancelled says nothing about the chunk.
			return err
		}
		var raw []byte
		if slot.raw != nil {
			raw = slot.raw.Bytes()
		}
		err := fn(i, raw, slot.err)
		s.recycle(slot)
		if err != nil {
			return err
		}
	}
	return nil
}

// await waits for chunk i's worker to finish it.
func (s *stream) await(ctx context.Context, i int, slot *streamSlot) error {
	select {
	case <-slot.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ended:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if i >= s.produced {
		return errors.New("internal error: the chunk references changed while streamed")
	}
	select { // chunk i is on its way
	case <-slot.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// putBuffer returns a raw buffer to the pool; it never blocks.
func (s *stream) putBuffer(b *bytes.Buffer) {
	b.Reset()
	select {
	case s.pool <- b:
	default:
	}
}

// recycle gives back what a consumed chunk held: its buffer first, then
// its token, so that a worker always finds a buffer.
func (s *stream) recycle(slot *streamSlot) {
	if slot.raw != nil {
		s.putBuffer(slot.raw)
		slot.raw = nil
	}
	slot.err = nil
	s.mu.Lock()
	s.consumed++
	s.cond.Broadcast()
	s.mu.Unlock()
	<-s.tokens
}
