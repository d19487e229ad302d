package repository

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"runtime"
	"slices"
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
	// CacheChunks is how many decompressed chunks the stream keeps for
	// references that name a chunk again soon (an incremental backup's
	// archives slice one chunk from several references): a chunk is then
	// downloaded once as long as its uses are close. 0 downloads every
	// reference. Buffers are allocated only when a chunk is used again,
	// so references that never repeat cost nothing.
	CacheChunks int
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
// RawBuffers decompressed ones, plus CacheChunks kept for reuse.
func (o StreamOptions) MemoryBudget(maxRawSize, maxStoredSize int64) int64 {
	o = o.withDefaults()
	return int64(o.Concurrency)*maxStoredSize + int64(o.RawBuffers+max(o.CacheChunks, 0))*maxRawSize
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
//
// With CacheChunks, a reference that names a chunk again may be served
// from a copy kept when it was last downloaded, as planFetches decides
// before the first download: fn sees it exactly as a download (content,
// or the download's error), and the windows above count downloads only.
func (r *Repository) StreamChunks(ctx context.Context, refs iter.Seq[manifest.ChunkRef], o StreamOptions, fn func(i int, raw []byte, err error) error) error {
	o = o.withDefaults()
	var maxRaw, maxStored int64
	n := 0
	var ids []string // only to plan a cache
	for ref := range refs {
		maxRaw, maxStored = max(maxRaw, ref.RawSize), max(maxStored, ref.StoredSize)
		if o.CacheChunks > 0 {
			ids = append(ids, ref.ID)
		}
		n++
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &stream{
		steps:     planFetches(ids, o.CacheChunks),
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
	if s.steps != nil {
		s.cache = make([]cachedChunk, o.CacheChunks)
	}
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
	// steps is the fetch plan by position (planFetches), nil when every
	// reference is downloaded; cache holds the copies it keeps.
	steps             []fetchStep
	cache             []cachedChunk
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

// produce hands out the downloads among the first n references in
// order, each once a token is free. Downloads are numbered apart from
// positions: the slots and windows count downloads.
func (s *stream) produce(ctx context.Context, refs iter.Seq[manifest.ChunkRef], n int) {
	i, pos := 0, 0
	defer func() {
		s.produced = i
		close(s.ended)
		close(s.jobs)
	}()
	for ref := range refs {
		if pos == n {
			return
		}
		pos++
		if s.steps != nil && s.steps[pos-1].hit {
			continue
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

// consume calls fn for each position in order: a download as its
// worker finishes it, a cache hit from the copy the plan kept.
func (s *stream) consume(ctx context.Context, n int, fn func(i int, raw []byte, err error) error) error {
	i := 0 // downloads consumed
	for pos := range n {
		if s.steps != nil && s.steps[pos].hit {
			if err := ctx.Err(); err != nil {
				return err
			}
			c := &s.cache[s.steps[pos].slot]
			if err := fn(pos, c.raw, c.err); err != nil {
				return err
			}
			continue
		}
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
		if s.steps != nil && s.steps[pos].slot >= 0 {
			s.keep(s.steps[pos].slot, raw, slot.err)
		}
		err := fn(pos, raw, slot.err)
		s.recycle(slot)
		i++
		if err != nil {
			return err
		}
	}
	return nil
}

// keep copies a downloaded chunk (or its failure) into cache slot k,
// replacing what the plan evicts there. The slot's buffer is allocated
// on its first use, for the largest chunk, and reused after.
func (s *stream) keep(k int32, raw []byte, err error) {
	c := &s.cache[k]
	if c.buf == nil {
		c.buf = make([]byte, 0, max(s.maxRaw, int64(len(raw))))
	}
	c.buf = append(c.buf[:0], raw...)
	c.raw, c.err = nil, err
	if raw != nil {
		c.raw = c.buf
	}
}

// cachedChunk is one chunk the fetch plan keeps for a later reference.
type cachedChunk struct {
	buf []byte // owned, reused by later chunks
	raw []byte // the chunk's content (buf), nil when its download failed
	err error  // the download's error, passed on to every use
}

// fetchStep is what the stream does at one position of its references.
type fetchStep struct {
	// hit serves the position from cache slot slot; otherwise the
	// chunk is downloaded and, when slot >= 0, kept in that slot.
	hit  bool
	slot int32
}

// planFetches decides, for a sequence of chunk ids, which positions are
// downloaded and which served from a cache of capacity chunks, so that a
// chunk named again soon is downloaded once. It returns nil when no id
// repeats (or capacity is 0): every position is downloaded and nothing
// is copied.
//
// The plan is Belady's: a downloaded chunk is kept only if it is used
// again; when the cache is full it replaces the kept chunk whose next use
// is farthest, if that is farther than its own; a chunk leaves the cache
// at its last use. This needs the whole sequence, which the stream has
// before its first download, and makes the consumer's work a lookup.
func planFetches(ids []string, capacity int) []fetchStep {
	n := len(ids)
	if capacity <= 0 || n < 2 {
		return nil
	}
	// next[p] is the next position naming ids[p], n when none.
	next := make([]int, n)
	last := make(map[string]int, n)
	for p := n - 1; p >= 0; p-- {
		next[p] = n
		if q, ok := last[ids[p]]; ok {
			next[p] = q
		}
		last[ids[p]] = p
	}
	if len(last) == n {
		return nil
	}
	steps := make([]fetchStep, n)
	held := make([]string, capacity)  // id in each slot
	heldNext := make([]int, capacity) // its next use; -1: the slot is free
	for k := range heldNext {
		heldNext[k] = -1
	}
	find := func(id string) int {
		for k := range held {
			if heldNext[k] >= 0 && held[k] == id {
				return k
			}
		}
		return -1
	}
	for p, id := range ids {
		if k := find(id); k >= 0 {
			steps[p] = fetchStep{hit: true, slot: int32(k)}
			heldNext[k] = next[p]
			if next[p] == n {
				heldNext[k] = -1 // its last use: the slot is free
			}
			continue
		}
		steps[p] = fetchStep{slot: -1}
		if next[p] == n {
			continue
		}
		k := slices.Index(heldNext, -1)
		if k < 0 {
			far := 0
			for j := range heldNext {
				if heldNext[j] > heldNext[far] {
					far = j
				}
			}
			if heldNext[far] < next[p] {
				continue // everything held is needed sooner
			}
			k = far
		}
		held[k], heldNext[k] = id, next[p]
		steps[p].slot = int32(k)
	}
	return steps
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
