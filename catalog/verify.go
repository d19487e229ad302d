// Package catalog is what a repository offers over its whole life rather
// than one backup at a time: proving backups restorable without restoring
// them (Verify), expiring them by policy (Delete) and reclaiming space
// (GC). Deleting is safe against running backups through the lease
// protocol in repository and docs/catalog.md.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// Problem kinds, stable for --json readers.
const (
	MissingChunk    = "missing-chunk"
	CorruptChunk    = "corrupt-chunk"
	UnreadableChunk = "unreadable-chunk"
	MissingWAL      = "missing-wal"
	CorruptWAL      = "corrupt-wal"
	UnreadableWAL   = "unreadable-wal"
	BadManifest     = "manifest"
	BadPGManifest   = "backup-manifest"
	FileChecksum    = "file-checksum"
)

// Problem is one thing wrong with a backup, named precisely enough to act
// on: the object and, for a chunk, the files it holds.
type Problem struct {
	Kind   string `json:"kind"`
	Object string `json:"object,omitempty"` // store key
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	if p.Object == "" {
		return p.Kind + ": " + p.Detail
	}
	return p.Kind + " " + p.Object + ": " + p.Detail
}

// Verdict is the result of verifying one backup.
type Verdict struct {
	ID          string    `json:"id"`
	OK          bool      `json:"ok"`
	Mode        string    `json:"mode"`          // "quick" or "full"
	Chunks      int       `json:"chunks"`        // distinct chunks checked
	Files       int       `json:"files_checked"` // files whose CRC32C was recomputed (full)
	WALSegments int       `json:"wal_segments"`
	StoredBytes int64     `json:"stored_bytes"` // chunk and WAL bytes checked
	Problems    []Problem `json:"problems"`
	// suspect are the chunks found corrupt or whose stored bytes differ
	// from those recorded, for Repair to check again.
	suspect []manifest.ChunkRef
	// reported are the chunks a full verify found a problem with: an
	// incremental backup slices one chunk from many references, and the
	// problem is said once, at the first.
	reported map[string]bool
}

func (v *Verdict) add(kind, object, format string, args ...any) {
	v.Problems = append(v.Problems, Problem{Kind: kind, Object: object, Detail: fmt.Sprintf(format, args...)})
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// Quick checks that every object exists with its recorded size,
	// from one listing of the repository, without downloading.
	Quick bool
	// Concurrency is how many chunks a full verification downloads at
	// once (8), beside half as many WAL segments; memory is about
	// Concurrency × 2 × (the chunk size + half the segment size), plus
	// verifyCacheChunks chunks for an archive that names a chunk again.
	Concurrency int
	Log         *slog.Logger
	// Progress, if set, is told how a full verification is going about
	// every second and once at the end, from one goroutine at a time.
	Progress func(VerifyProgress)
}

// VerifyProgress is a snapshot of a full verification. Totals grow as
// each backup's manifest is read.
type VerifyProgress struct {
	// Backup is the id being verified, the Index-th (from 1) of Count.
	Backup       string
	Index, Count int
	// BytesDone counts stored chunk and WAL bytes checked (or found
	// wrong); BytesTotal what the backups read so far reference.
	BytesDone, BytesTotal int64
	Elapsed               time.Duration
}

// verifyMeter counts a full verification's progress across goroutines.
type verifyMeter struct {
	done, total atomic.Int64
	index       atomic.Int64
}

// Verify checks the backups ids and returns one verdict each, in order.
// An error means verification itself could not run (the repository could
// not be listed); anything wrong with a backup is a Problem in its
// verdict.
func Verify(ctx context.Context, repo *repository.Repository, ids []string, o VerifyOptions) ([]Verdict, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	out := make([]Verdict, len(ids))
	if o.Quick {
		inv, err := takeInventory(ctx, repo)
		if err != nil {
			return nil, err
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		for i, id := range ids {
			g.Go(func() error {
				out[i] = quickVerify(gctx, repo, inv, id)
				return gctx.Err()
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		return out, nil
	}
	var m verifyMeter
	stop := reportVerify(&m, ids, o.Progress)
	defer stop()
	for i, id := range ids {
		m.index.Store(int64(i))
		out[i] = fullVerify(ctx, repo, id, o, &m)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		o.Log.Info("backup verified", "id", id, "ok", out[i].OK, "problems", len(out[i].Problems),
			"chunks", out[i].Chunks, "files", out[i].Files, "wal_segments", out[i].WALSegments)
	}
	return out, nil
}

// reportVerify calls fn about every second until the returned function
// is called, which makes the last call.
func reportVerify(m *verifyMeter, ids []string, fn func(VerifyProgress)) (stop func()) {
	if fn == nil || len(ids) == 0 {
		return func() {}
	}
	start := time.Now()
	snap := func() VerifyProgress {
		i := int(m.index.Load())
		return VerifyProgress{Backup: ids[i], Index: i + 1, Count: len(ids),
			BytesDone: m.done.Load(), BytesTotal: m.total.Load(), Elapsed: time.Since(start)}
	}
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				fn(snap())
			}
		}
	}()
	return func() {
		close(quit)
		<-exited
		fn(snap())
	}
}

// inventory is one listing pass over the repository: what a quick verify
// compares every manifest against, so that its cost is one listing plus
// one read per backup, whatever the number of chunks.
type inventory struct {
	chunks  map[repository.ChunkID]int64
	wal     map[string]int64
	backups map[string]bool // keys under backups/
}

func takeInventory(ctx context.Context, repo *repository.Repository) (*inventory, error) {
	chunks, err := repo.ChunkSizes(ctx)
	if err != nil {
		return nil, err
	}
	inv := &inventory{chunks: chunks, wal: map[string]int64{}, backups: map[string]bool{}}
	for w, err := range repo.WALFiles(ctx) {
		if err != nil {
			return nil, err
		}
		inv.wal[w.Name] = w.Size
	}
	for obj, err := range repo.BackupObjects(ctx) {
		if err != nil {
			return nil, err
		}
		inv.backups[obj.Key] = true
	}
	return inv, nil
}

func quickVerify(ctx context.Context, repo *repository.Repository, inv *inventory, id string) Verdict {
	v := Verdict{ID: id, Mode: "quick"}
	b, err := repo.Backup(ctx, id)
	if err != nil {
		v.add(BadManifest, repository.BackupManifestKey(id), "%v", err)
		return v
	}
	if !inv.backups[repository.PGManifestKey(id)] {
		v.add(BadPGManifest, repository.PGManifestKey(id), "PostgreSQL's backup_manifest is missing")
	}
	checkSlices(b, &v)
	seen := make(map[repository.ChunkID]bool)
	for ai, a := range b.Archives {
		offs := b.ChunkOffsets(ai)
		for ci, ref := range a.Chunks {
			cid, _ := repository.ParseChunkID(ref.ID) // Validate checked it
			if seen[cid] {
				continue
			}
			seen[cid] = true
			key := repository.ChunkKey(ref.ID)
			size, ok := inv.chunks[cid]
			switch {
			case !ok:
				v.add(MissingChunk, key, "%s chunk %d of %d is missing; it holds %s", a.Name, ci+1, len(a.Chunks), b.FilesIn(ai, offs[ci], ref.Len()))
			case size != ref.StoredSize && !quarantinedCopy(ctx, repo, ref.ID):
				v.suspect = append(v.suspect, ref)
				v.add(CorruptChunk, key, "%s chunk %d of %d has %d bytes, the manifest says %d; it holds %s",
					a.Name, ci+1, len(a.Chunks), size, ref.StoredSize, b.FilesIn(ai, offs[ci], ref.Len()))
			default:
				v.StoredBytes += ref.StoredSize // as a full verify counts
			}
		}
	}
	v.Chunks = len(seen)
	for _, w := range b.WAL {
		key := repository.WALKey(w.Name)
		size, ok := inv.wal[w.Name]
		switch {
		case !ok:
			v.add(MissingWAL, key, "WAL segment %s, which a restore of this backup needs, is missing", w.Name)
		case size != w.StoredSize:
			v.add(CorruptWAL, key, "WAL segment %s has %d bytes, the manifest says %d", w.Name, size, w.StoredSize)
		default:
			v.StoredBytes += size
		}
	}
	v.WALSegments = len(b.WAL)
	v.OK = len(v.Problems) == 0
	return v
}

// fullVerify downloads everything a backup references and checks it the
// way a restore would, but continues past each problem to name them all.
func fullVerify(ctx context.Context, repo *repository.Repository, id string, o VerifyOptions, m *verifyMeter) Verdict {
	v := Verdict{ID: id, Mode: "full"}
	b, err := repo.Backup(ctx, id)
	if err != nil {
		v.add(BadManifest, repository.BackupManifestKey(id), "%v", err)
		return v
	}
	for _, a := range b.Archives {
		m.total.Add(a.StoredSize)
	}
	for _, w := range b.WAL {
		m.total.Add(w.StoredSize)
	}
	// Parsed as it streams in, checked against the recorded hash.
	if pg, err := repo.ParsePGManifest(ctx, b); err != nil {
		v.add(BadPGManifest, repository.PGManifestKey(id), "%v", err)
	} else if err := manifest.CrossCheck(pg, b.Files, b.Archives); err != nil {
		v.add(BadPGManifest, repository.PGManifestKey(id), "does not match pgstow's manifest: %v", err)
	}

	checkSlices(b, &v)
	// The WAL is checked alongside the archives.
	var walV Verdict
	walDone := make(chan struct{})
	go func() {
		defer close(walDone)
		verifyWAL(ctx, repo, b, o.Concurrency, &walV, &m.done)
	}()
	seen := make(map[string]bool)
	for ai := range b.Archives {
		verifyArchive(ctx, repo, b, ai, o.Concurrency, seen, &v, &m.done)
	}
	<-walDone
	v.Problems = append(v.Problems, walV.Problems...)
	v.StoredBytes += walV.StoredBytes
	v.Chunks = len(seen)
	v.WALSegments = len(b.WAL)
	if err := ctx.Err(); err != nil {
		v.add(BadManifest, "", "verification interrupted: %v", err)
	}
	v.OK = len(v.Problems) == 0
	return v
}

// verifyWAL downloads each WAL segment the backup needs and checks it by
// repository.ReadWAL's rule, as a restore would, against the manifest's
// SHA-256, and its stored size against the manifest's. Segments are streamed through the
// hash, so memory is the decompressors' buffers (about 8 MB each, n/2 of
// them), whatever the segment size.
func verifyWAL(ctx context.Context, repo *repository.Repository, b *manifest.Backup, n int, v *Verdict, done *atomic.Int64) {
	var mu sync.Mutex
	add := func(kind, object, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		v.add(kind, object, format, args...)
	}
	g, gctx := errgroup.WithContext(ctx)
	workers := max(n/2, 1)
	g.SetLimit(workers)
	decs := make(chan *chunker.Decompressor, workers)
	for range workers {
		decs <- chunker.NewDecompressor()
	}
	for _, w := range b.WAL {
		g.Go(func() error {
			key := repository.WALKey(w.Name)
			defer done.Add(w.StoredSize)
			dec := <-decs
			sum, err := repo.ReadWAL(gctx, dec, w.Name, repository.WALWant{SegmentSize: b.WALSegmentSize, SHA256: w.SHA256}, nil)
			decs <- dec
			switch {
			case errors.Is(err, providers.ErrNotExist):
				add(MissingWAL, key, "WAL segment %s, which a restore of this backup needs, is missing", w.Name)
			case errors.Is(err, repository.ErrCorrupt):
				add(CorruptWAL, key, "%v", err)
			case err != nil:
				add(UnreadableWAL, key, "%v", err)
			case sum.StoredSize != w.StoredSize:
				add(CorruptWAL, key, "stored object has %d bytes, the manifest says %d", sum.StoredSize, w.StoredSize)
			default:
				stored := sum.StoredSize
				mu.Lock()
				v.StoredBytes += stored
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
}

// verifyCacheChunks is how many decompressed chunks a full verify keeps
// for references that name them again soon, so that a chunk an
// incremental backup slices several times is downloaded once while its
// uses are close (repository.StreamOptions.CacheChunks).
const verifyCacheChunks = 4

// verifyArchive downloads an archive's chunks, n at a time and in order
// (repository.StreamChunks), checks each chunk (size, LZ4 checksum,
// SHA-256, stored CRC32C) and recomputes every file's CRC32C from the
// bytes at its recorded offset (a reference's slice of its chunk). A bad
// chunk is reported with the files it holds, and those files are not
// checked further; the rest of the archive still is. Memory is n stored
// buffers and n decompressed ones, and verifyCacheChunks kept when the
// archive names a chunk again.
func verifyArchive(ctx context.Context, repo *repository.Repository, b *manifest.Backup, ai, n int, seen map[string]bool, v *Verdict, done *atomic.Int64) {
	a := &b.Archives[ai]
	offs := b.ChunkOffsets(ai)
	files := archiveFiles(b, ai)
	fc := fileChecker{b: b, ai: ai, files: files, v: v}
	// As many decompressed chunks as downloads: the memory VerifyOptions
	// and --help state, and every download can decode at once.
	o := repository.StreamOptions{Concurrency: n, RawBuffers: n, CheckFrames: true, CheckStoredCRC: true, CacheChunks: verifyCacheChunks}
	if v.reported == nil {
		v.reported = make(map[string]bool)
	}
	err := repo.StreamChunks(ctx, slices.Values(a.Chunks), o, func(ci int, raw []byte, err error) error {
		ref := a.Chunks[ci]
		done.Add(ref.StoredSize)
		key := repository.ChunkKey(ref.ID)
		holds := func() string { return b.FilesIn(ai, offs[ci], ref.Len()) }
		// A chunk named again comes with the same content or problem:
		// the problem was reported at its first reference.
		report := !v.reported[ref.ID]
		add := func(kind, format string, args ...any) {
			if report {
				v.reported[ref.ID] = true
				v.add(kind, key, format, args...)
			}
		}
		// The content is right, and its stored bytes are not those
		// recorded: judged below, and its files can be checked.
		var crcErr error
		if errors.Is(err, repository.ErrStoredCRC) {
			crcErr, err = err, nil
		}
		switch {
		case err == nil:
			if !seen[ref.ID] {
				v.StoredBytes += ref.StoredSize
			}
			if crcErr != nil && report {
				checkCRC(ctx, repo, ref, crcErr, v, func(detail string) {
					add(CorruptChunk, "%s chunk %d of %d: %s; it holds %s", a.Name, ci+1, len(a.Chunks), detail, holds())
				})
			}
			if data, ok := sliceOf(ref, raw); ok {
				fc.feed(offs[ci], data)
			} else {
				fc.skip(offs[ci], ref.Len()) // checkSlices reported it
			}
		case errors.Is(err, providers.ErrNotExist):
			add(MissingChunk, "%s chunk %d of %d is missing; it holds %s", a.Name, ci+1, len(a.Chunks), holds())
			fc.skip(offs[ci], ref.Len())
		case errors.Is(err, repository.ErrCorrupt):
			if report {
				v.suspect = append(v.suspect, ref)
			}
			add(CorruptChunk, "%s chunk %d of %d is corrupt (%v); it holds %s", a.Name, ci+1, len(a.Chunks), err, holds())
			fc.skip(offs[ci], ref.Len())
		default:
			add(UnreadableChunk, "%s chunk %d of %d could not be read (%v); it holds %s", a.Name, ci+1, len(a.Chunks), err, holds())
			fc.skip(offs[ci], ref.Len())
		}
		seen[ref.ID] = true
		return nil
	})
	if err != nil {
		return // interrupted: fullVerify says so
	}
	fc.finish()
}

// checkCRC judges a chunk that decodes to the right content but whose
// stored bytes do not have the CRC32C the manifest records: damage, unless
// a copy of the chunk was quarantined since, in which case the stored
// object is a later upload whose frame may legitimately differ (another
// encoder) from the one this backup recorded.
func checkCRC(ctx context.Context, repo *repository.Repository, ref manifest.ChunkRef, crcErr error, v *Verdict, report func(detail string)) {
	replaced, err := repo.Quarantined(ctx, ref.ID)
	switch {
	case err != nil:
		v.add(UnreadableChunk, repository.ChunkKey(ref.ID), "%v (needed to judge its %v)", err, crcErr)
	case !replaced:
		v.suspect = append(v.suspect, ref)
		report(fmt.Sprintf("%v (it still decodes to the right content)", crcErr))
	}
}

// sliceOf returns the bytes of chunk content raw that ref contributes to
// its archive, and false for a slice that does not lie inside raw.
func sliceOf(ref manifest.ChunkRef, raw []byte) ([]byte, bool) {
	if !ref.Sliced() {
		return raw, true
	}
	if ref.Offset < 0 || ref.Offset > int64(len(raw)) || ref.Length > int64(len(raw))-ref.Offset {
		return nil, false
	}
	return raw[ref.Offset : ref.Offset+ref.Length], true
}

// checkSlices reports the chunk references of b whose slice does not lie
// inside the chunk they name (a manifest that a reader would take bytes
// from outside the chunk for).
func checkSlices(b *manifest.Backup, v *Verdict) {
	for _, a := range b.Archives {
		for ci, ref := range a.Chunks {
			if ref.Offset < 0 || ref.Length < 0 || (ref.Offset != 0 && ref.Length == 0) || ref.Length > ref.RawSize-ref.Offset {
				v.add(BadManifest, repository.BackupManifestKey(b.ID), "%s chunk %d of %d (%s) takes bytes [%d, %d) of a chunk of %d bytes",
					a.Name, ci+1, len(a.Chunks), ref.ID, ref.Offset, ref.Offset+ref.Length, ref.RawSize)
			}
		}
	}
}

// quarantinedCopy tells a quick verify whether a chunk whose stored size
// differs from the recorded one had a copy quarantined: the object is then
// a later upload, possibly framed by another encoder, and only a full
// verify can judge its content. A failed listing counts as no copy, so
// the size is reported.
func quarantinedCopy(ctx context.Context, repo *repository.Repository, id string) bool {
	q, err := repo.Quarantined(ctx, id)
	return err == nil && q
}

// archiveFiles returns the indexes of the regular files with content in
// archive ai, by offset.
func archiveFiles(b *manifest.Backup, ai int) []int {
	var out []int
	for i, f := range b.Files {
		if f.Archive == ai && f.Type == manifest.TypeFile && f.Size > 0 {
			out = append(out, i)
		}
	}
	slices.SortFunc(out, func(x, y int) int { return int(b.Files[x].Offset - b.Files[y].Offset) })
	return out
}

// fileChecker recomputes file checksums from an archive's bytes as they
// arrive in order. Tar members do not overlap, so one file is open at a
// time.
type fileChecker struct {
	b      *manifest.Backup
	ai     int
	files  []int
	next   int
	crc    uint32
	broken bool // part of the open file was in a bad chunk
	v      *Verdict
}

// feed takes the bytes of the archive starting at off.
func (c *fileChecker) feed(off int64, data []byte) { c.advance(off, int64(len(data)), data) }

// skip passes over size bytes at off that could not be read.
func (c *fileChecker) skip(off, size int64) { c.advance(off, size, nil) }

func (c *fileChecker) advance(off, size int64, data []byte) {
	end := off + size
	for c.next < len(c.files) {
		f := &c.b.Files[c.files[c.next]]
		if f.Offset >= end {
			return
		}
		from, to := max(f.Offset, off), min(f.Offset+f.Size, end)
		if to > from {
			if data == nil {
				c.broken = true
			} else {
				c.crc = crc32.Update(c.crc, manifest.Castagnoli, data[from-off:to-off])
			}
		}
		if f.Offset+f.Size > end {
			return // continues in the next chunk
		}
		c.close(f)
	}
}

func (c *fileChecker) close(f *manifest.File) {
	if !c.broken {
		c.v.Files++
		if c.crc != f.CRC32C {
			c.v.add(FileChecksum, "", "%s: CRC32C of the restored content is %08x, the manifest says %08x",
				c.b.DisplayPath(c.ai, f.Path), c.crc, f.CRC32C)
		}
	}
	c.crc, c.broken = 0, false
	c.next++
}

// finish reports files the archive's chunks did not cover.
func (c *fileChecker) finish() {
	for ; c.next < len(c.files); c.next++ {
		f := &c.b.Files[c.files[c.next]]
		c.v.add(FileChecksum, "", "%s: its content at offset %d runs past the end of %s", c.b.DisplayPath(c.ai, f.Path), f.Offset, c.b.Archives[c.ai].Name)
	}
}
