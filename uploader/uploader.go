// Package uploader moves a tar stream into a repository as content-addressed
// chunks through a bounded pipeline: the caller's goroutine cuts chunks,
// sealing workers hash and compress them, and upload workers put them in
// parallel. Every stage draws from fixed pools, so memory is set by the
// configuration, never by the size of the database, and a slow store slows
// the reader (and through TCP, the server) instead of filling a queue.
package uploader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
)

// Repository is what the uploader needs of a repository: to name a chunk,
// to know whether it is stored, and to store it. *repository.Repository
// implements it; how chunks are keyed and stored is its business.
type Repository interface {
	// ChunkID names a chunk by its content.
	ChunkID(raw []byte) string
	// HasChunk reports whether chunk id is stored, with its stored size.
	HasChunk(ctx context.Context, id string) (storedSize int64, found bool, err error)
	// PutChunk stores a chunk's frame unless the chunk is already
	// stored, and reports false if it was. frame must not be kept after
	// it returns: the uploader reuses it.
	PutChunk(ctx context.Context, id string, frame []byte, crc32c uint32) (stored bool, err error)
}

// Config sets the pipeline's shape.
type Config struct {
	// ChunkSize is the target size of a chunk in bytes (default 8 MiB).
	ChunkSize int
	// Concurrency is the number of uploads in flight (default
	// DefaultConcurrency). Each
	// upload holds one compressed buffer, so it also sets how many
	// compressed chunks can wait for the store.
	Concurrency int
	// SealWorkers is the number of hashing/compressing workers (default
	// GOMAXPROCS).
	SealWorkers int
	// KnownCRC32C, if set, returns the stored-bytes CRC32C recorded for a
	// chunk the store already holds, so a deduplicated chunk's record
	// carries it (manifest.ChunkRef.StoredCRC32C). It cannot be
	// recomputed: the frame our encoder would write need not be the one
	// stored. Called from several goroutines.
	KnownCRC32C func(id string) (uint32, bool)
}

// DefaultChunkSize is the default target chunk size.
const DefaultChunkSize = 8 << 20

// DefaultConcurrency is the default number of uploads in flight: on a
// local store 4 is as fast as 8 and keeps about 25 MiB less resident
// (docs/tuning.md); stores with high latency want more.
const DefaultConcurrency = 4

func (c Config) withDefaults() Config {
	if c.ChunkSize <= 0 {
		c.ChunkSize = DefaultChunkSize
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.SealWorkers <= 0 {
		c.SealWorkers = runtime.GOMAXPROCS(0)
	}
	return c
}

// MemoryBudget is the most memory the pipeline's buffers can take: raw
// buffers (one being filled and one per sealing worker) of ChunkSize each,
// and one compressed buffer of the LZ4 worst-case size per upload in
// flight. Buffers are allocated on first use and then reused for the
// Uploader's life, and a compressed buffer's pages are touched only as far
// as its largest frame, so the resident memory is usually well below this.
func (c Config) MemoryBudget() int64 {
	c = c.withDefaults()
	raw := int64(c.SealWorkers+1) * int64(c.ChunkSize)
	compressed := int64(c.Concurrency) * int64(chunker.CompressBound(c.ChunkSize))
	return raw + compressed
}

// Stats counts what an upload did.
type Stats struct {
	RawBytes    int64
	StoredBytes int64 // compressed size of every chunk referenced
	NewBytes    int64 // compressed bytes actually uploaded
	Chunks      int
	NewChunks   int
}

func (s *Stats) add(o Stats) {
	s.RawBytes += o.RawBytes
	s.StoredBytes += o.StoredBytes
	s.NewBytes += o.NewBytes
	s.Chunks += o.Chunks
	s.NewChunks += o.NewChunks
}

// Uploader stores archives into one repository. Its buffer pools live as long
// as it does and are reused by every archive: a chunk's raw bytes and its
// compressed frame each go into a pooled buffer and are never copied
// again, so the per-chunk path allocates nothing in proportion to the
// chunk size and gives the garbage collector nothing to do.
type Uploader struct {
	repo Repository
	cfg  Config
	log  *slog.Logger
	// raw holds the raw chunk buffers (ChunkSize), packed the compressed
	// ones (CompressBound(ChunkSize)); a nil entry is a buffer not yet
	// allocated. A sealer holds a raw buffer from the cut until its chunk
	// is compressed, and a packed one from then until the upload ends.
	raw    chan []byte
	packed chan []byte
	total  Stats
	mu     sync.Mutex
	// written are the chunks this Uploader stored, or tried to store and
	// may have (a failed write can land), by id, with their stored size:
	// what a failed backup may leave behind (see Written).
	written map[string]int64
	// OnChunk, if set, is called after each chunk is stored or found
	// (uploaded false: the store had it), from several goroutines.
	OnChunk func(ref manifest.ChunkRef, uploaded bool)
	// Observe, if set, gives archive index's splitter (oid: its
	// tablespace, 0 for the data directory) a member observer
	// (chunker.Splitter.Observe), or nil for none; called on the cutting
	// goroutine, one archive at a time.
	Observe func(index int, oid uint32) func(path string, headerOff, contentOff, size int64) chunker.MemberObserver
	// queued counts chunks sealed for upload and not yet stored, for
	// progress reports.
	queued atomic.Int64
	waits  waitCounters
}

// Waits says where the pipeline's goroutines spent their time, summed
// over the goroutines of each stage and over every archive: which stage
// works, which waits, and so which one holds the others up. A stage that
// is never idle while the others are is the bottleneck.
type Waits struct {
	// CutterRead is the cutter's time reading the archive stream and
	// cutting it: with a fast pipeline, mostly waiting for the server.
	CutterRead time.Duration
	// CutterBlocked is the cutter waiting for a free raw buffer or for a
	// sealer to take its chunk: the sealers are behind.
	CutterBlocked time.Duration
	// SealBusy is the sealers hashing, checking the store and compressing
	// (including waits for a compressed buffer: the uploads are behind).
	SealBusy time.Duration
	// SealIdle is the sealers waiting for a chunk: the reader is behind.
	SealIdle time.Duration
	// SealBlocked is the sealers waiting for an uploader to take a chunk.
	SealBlocked time.Duration
	// UploadBusy is the uploaders storing chunks.
	UploadBusy time.Duration
	// UploadIdle is the uploaders waiting for a chunk.
	UploadIdle time.Duration
}

type waitCounters struct {
	cutterRead, cutterBlocked, sealBusy, sealIdle, sealBlocked, uploadBusy, uploadIdle atomic.Int64
}

// receive takes the next item from ch for a stage's worker, adding the
// wait to the stage's idle time, and returns it with when it came.
func receive[T any](ch <-chan T, idle *atomic.Int64) (T, bool, time.Time) {
	t0 := time.Now()
	v, ok := <-ch
	t1 := time.Now()
	idle.Add(int64(t1.Sub(t0)))
	return v, ok, t1
}

// Config returns the configuration in force, defaults filled in.
func (u *Uploader) Config() Config { return u.cfg }

// Waits returns the stage times over every archive so far.
func (u *Uploader) Waits() Waits {
	w := &u.waits
	return Waits{
		CutterRead:    time.Duration(w.cutterRead.Load()),
		CutterBlocked: time.Duration(w.cutterBlocked.Load()),
		SealBusy:      time.Duration(w.sealBusy.Load()),
		SealIdle:      time.Duration(w.sealIdle.Load()),
		SealBlocked:   time.Duration(w.sealBlocked.Load()),
		UploadBusy:    time.Duration(w.uploadBusy.Load()),
		UploadIdle:    time.Duration(w.uploadIdle.Load()),
	}
}

// New returns an Uploader that stores chunks in repo. Buffers are
// allocated lazily up to the budget.
func New(repo Repository, cfg Config, log *slog.Logger) *Uploader {
	cfg = cfg.withDefaults()
	u := &Uploader{
		repo:   repo,
		cfg:    cfg,
		log:    log,
		raw:    make(chan []byte, cfg.SealWorkers+1),
		packed: make(chan []byte, cfg.Concurrency),
	}
	for range cap(u.raw) {
		u.raw <- nil // allocated on first use
	}
	for range cap(u.packed) {
		u.packed <- nil
	}
	return u
}

// putRaw returns a raw buffer to the pool. It never blocks: a buffer made
// outside the pool while cancelling has no slot and is dropped.
func (u *Uploader) putRaw(b []byte) {
	select {
	case u.raw <- b[:0]:
	default:
	}
}

// getPacked takes a compressed buffer from the pool, waiting while every
// one is in upload: that wait is what makes a slow store slow the sealers,
// and through them the reader and the server.
func (u *Uploader) getPacked(ctx context.Context) ([]byte, error) {
	select {
	case b := <-u.packed:
		if b == nil {
			b = make([]byte, 0, chunker.CompressBound(u.cfg.ChunkSize))
		}
		return b[:0], nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// putPacked returns a compressed buffer to the pool; it never blocks.
func (u *Uploader) putPacked(b []byte) {
	select {
	case u.packed <- b[:0]:
	default:
	}
}

// Release drops the pooled buffers once the last archive is stored, so
// that what follows — the manifests, large with many files — can reuse
// their memory instead of adding to the peak. The Uploader stays usable:
// a later archive allocates its buffers again.
func (u *Uploader) Release() {
	for _, pool := range []chan []byte{u.raw, u.packed} {
		n := 0
	drain:
		for n < cap(pool) {
			select {
			case <-pool:
				n++
			default:
				break drain // a buffer still in use; it stays out
			}
		}
		for range n {
			pool <- nil
		}
	}
}

// InFlight is the number of chunks compressed and waiting for, or in,
// their upload.
func (u *Uploader) InFlight() int { return int(u.queued.Load()) }

// Stats returns the totals over every archive uploaded so far.
func (u *Uploader) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.total
}

// noteWritten records a chunk this Uploader stored or may have stored.
func (u *Uploader) noteWritten(id string, stored int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.written == nil {
		u.written = make(map[string]int64)
	}
	u.written[id] = stored
}

// Written returns, ordered by id, the chunks this Uploader stored itself
// over every archive, failed ones included, and those whose write failed
// (which may have landed all the same), each with the size of the frame
// it wrote. A chunk the store already held, or that another writer stored
// first, is not among them. A failed backup removes these, where nothing
// else references them, so a full disk does not stay full.
func (u *Uploader) Written() []manifest.ChunkRef {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]manifest.ChunkRef, 0, len(u.written))
	for id, size := range u.written {
		out = append(out, manifest.ChunkRef{ID: id, StoredSize: size})
	}
	slices.SortFunc(out, func(a, b manifest.ChunkRef) int { return strings.Compare(a.ID, b.ID) })
	return out
}

type sealed struct {
	seq   int
	id    string
	raw   int64
	data  []byte // the compressed frame in a pooled buffer, nil when the store has the chunk
	crc   uint32
	found int64 // stored size when the chunk already existed
}

// Archive reads one tar archive from r to its end, stores its chunks and
// returns the archive's manifest entry and its files, with the SHA-256 of
// those PostgreSQL seals with a CRC32C (pgdata.SealedByCRC; oid is 0 for
// the data directory). index is the archive's position in the backup
// (File.Archive).
func (u *Uploader) Archive(ctx context.Context, r io.Reader, index int, name string, oid uint32) (manifest.Archive, []manifest.File, error) {
	arch := manifest.Archive{Name: name, TablespaceOID: oid}
	g, gctx := errgroup.WithContext(ctx)
	toSeal := make(chan chunker.Chunk)
	toPut := make(chan sealed)
	var (
		mu    sync.Mutex
		refs  []manifest.ChunkRef
		stats Stats
	)
	record := func(seq int, ref manifest.ChunkRef, uploaded bool) {
		mu.Lock()
		defer mu.Unlock()
		for len(refs) <= seq {
			refs = append(refs, manifest.ChunkRef{})
		}
		refs[seq] = ref
		stats.Chunks++
		stats.RawBytes += ref.RawSize
		stats.StoredBytes += ref.StoredSize
		if uploaded {
			stats.NewChunks++
			stats.NewBytes += ref.StoredSize
		}
	}

	// Sealing: hash, skip what the store has, compress the rest.
	var sealers sync.WaitGroup
	for range u.cfg.SealWorkers {
		sealers.Add(1)
		g.Go(func() error {
			defer sealers.Done()
			comp := chunker.NewCompressor()
			for {
				c, ok, t1 := receive(toSeal, &u.waits.sealIdle)
				if !ok {
					break
				}
				s, err := u.seal(gctx, comp, c)
				u.waits.sealBusy.Add(int64(time.Since(t1)))
				if err != nil {
					return err
				}
				if s.data == nil {
					ref := manifest.ChunkRef{ID: s.id, RawSize: s.raw, StoredSize: s.found, Codec: "lz4"}
					if u.cfg.KnownCRC32C != nil {
						if crc, ok := u.cfg.KnownCRC32C(s.id); ok {
							ref.StoredCRC32C = &crc
						}
					}
					record(c.Seq, ref, false)
					if u.OnChunk != nil {
						u.OnChunk(ref, false)
					}
					continue
				}
				u.queued.Add(1)
				t2 := time.Now()
				select {
				case toPut <- s:
					u.waits.sealBlocked.Add(int64(time.Since(t2)))
				case <-gctx.Done():
					u.queued.Add(-1)
					u.putPacked(s.data)
					return gctx.Err()
				}
			}
			return nil
		})
	}
	go func() { sealers.Wait(); close(toPut) }()

	// Uploading.
	for range u.cfg.Concurrency {
		g.Go(func() error {
			for {
				s, ok, t1 := receive(toPut, &u.waits.uploadIdle)
				if !ok {
					break
				}
				stored := int64(len(s.data))
				uploaded, err := u.put(gctx, s)
				u.waits.uploadBusy.Add(int64(time.Since(t1)))
				u.queued.Add(-1)
				u.putPacked(s.data)
				if uploaded || err != nil {
					u.noteWritten(s.id, stored)
				}
				if err != nil {
					return err
				}
				ref := manifest.ChunkRef{ID: s.id, RawSize: s.raw, StoredSize: stored, Codec: "lz4"}
				if uploaded {
					// Another writer's frame, when it stored the chunk
					// first, may differ from ours: only our own is known.
					crc := s.crc
					ref.StoredCRC32C = &crc
				}
				record(s.seq, ref, uploaded)
				if u.OnChunk != nil {
					u.OnChunk(ref, uploaded)
				}
			}
			return nil
		})
	}

	// Cutting, on the caller's goroutine.
	var files []manifest.File
	var size int64
	g.Go(func() error {
		defer close(toSeal)
		var bufWait time.Duration
		sp := chunker.NewSplitter(r, u.cfg.ChunkSize, index, func() []byte {
			var b []byte
			t0 := time.Now()
			select {
			case b = <-u.raw:
			case <-gctx.Done():
				// The splitter needs a buffer to fail cleanly on its
				// next read; the reader is failing too.
			}
			bufWait += time.Since(t0)
			if b == nil {
				b = make([]byte, 0, u.cfg.ChunkSize)
			}
			return b[:0]
		})
		sp.HashSHA256(func(p string) bool { return pgdata.SealedByCRC(oid != 0, p) })
		if u.Observe != nil {
			if obs := u.Observe(index, oid); obs != nil {
				sp.Observe(obs)
			}
		}
		for {
			t0, w0 := time.Now(), bufWait
			c, err := sp.Next()
			// Next's time less its waits for a buffer: reading the
			// stream (the server, the network) and cutting it.
			waited := bufWait - w0
			u.waits.cutterRead.Add(int64(time.Since(t0) - waited))
			u.waits.cutterBlocked.Add(int64(waited))
			if errors.Is(err, io.EOF) {
				files = sp.Files()
				size = sp.Size()
				return nil
			}
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				return fmt.Errorf("archive %s: %w", name, err)
			}
			t1 := time.Now()
			select {
			case toSeal <- c:
				u.waits.cutterBlocked.Add(int64(time.Since(t1)))
			case <-gctx.Done():
				u.putRaw(c.Data)
				return gctx.Err()
			}
		}
	})
	if err := g.Wait(); err != nil {
		return arch, nil, err
	}
	arch.Chunks = refs
	arch.RawSize = stats.RawBytes
	arch.StoredSize = stats.StoredBytes
	if arch.RawSize != size {
		return arch, nil, fmt.Errorf("archive %s: %d bytes read but chunks cover %d", name, size, arch.RawSize)
	}
	u.mu.Lock()
	u.total.add(stats)
	u.mu.Unlock()
	return arch, files, nil
}

// seal hashes a chunk and, unless the store already holds it, compresses
// it. Checking before compressing makes a repeat backup of unchanged data
// cost a hash and a stat per chunk. The frame is compressed straight into
// a pooled buffer of the LZ4 worst-case size, which the upload holds and
// gives back; the raw buffer goes back to its pool as soon as the frame is
// written.
func (u *Uploader) seal(ctx context.Context, comp *chunker.Compressor, c chunker.Chunk) (sealed, error) {
	defer u.putRaw(c.Data)
	s := sealed{seq: c.Seq, id: u.repo.ChunkID(c.Data), raw: int64(len(c.Data))}
	size, found, err := u.repo.HasChunk(ctx, s.id)
	switch {
	case err != nil:
		return s, fmt.Errorf("check chunk %s: %w", s.id[:12], err)
	case found:
		s.found = size
		return s, nil
	}
	buf, err := u.getPacked(ctx)
	if err != nil {
		return s, err
	}
	s.data, s.crc, err = comp.Append(buf, c.Data)
	if err != nil {
		u.putPacked(buf)
		return s, fmt.Errorf("compress chunk %s: %w", s.id[:12], err)
	}
	return s, nil
}

// put stores a sealed chunk; it reports false when another writer (a
// concurrent backup, or an identical chunk earlier in this one) stored it
// first.
func (u *Uploader) put(ctx context.Context, s sealed) (bool, error) {
	stored, err := u.repo.PutChunk(ctx, s.id, s.data, s.crc)
	if err != nil {
		return false, fmt.Errorf("upload chunk %s: %w", s.id[:12], err)
	}
	return stored, nil
}
