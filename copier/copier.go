// Package copier copies committed backups, and the WAL they need, from one
// repository to another: any store to any store, plain or encrypted at
// either end. It is the second copy of a disaster-recovery setup, so it
// trusts nothing it has not checked: every source chunk is decompressed
// and checked against its id before it is sent, every WAL file against
// its recorded SHA-256, and each backup is committed at the destination
// (its manifest written, repository.Commit) only after everything it
// references is stored there. What arrived before an interruption is
// found by one listing of the destination and not sent again.
package copier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/spool"
)

// ErrSelection is returned for a selection of backups that names none, or
// names one the source does not hold.
var ErrSelection = errors.New("no backup selected")

// ErrPlainDestination is returned for a copy from an encrypted source
// that would create a plain destination, unless Options.ToPlain says so:
// forgetting the destination's key must not leave a decrypted copy.
var ErrPlainDestination = errors.New("the source is encrypted and the new destination would be plain")

// Options say what Copy copies and how.
type Options struct {
	// IDs are backup ids, or "latest" for the newest.
	IDs []string
	// All copies every backup and every WAL file of the source, not only
	// the WAL the backups need (so point-in-time recovery works at the
	// destination as at the source).
	All bool
	// RetainLast and RetainWithin select backups as delete's retention
	// policy keeps them: the newest N, those that finished within the
	// duration, the union of both when both are given.
	RetainLast   int
	RetainWithin time.Duration
	// DryRun reads both repositories and writes nothing. With different
	// keying at the two ends, which chunks are missing is only known by
	// reading them, so it counts the chunks to check instead.
	DryRun bool
	// ToPlain allows creating a plain destination from an encrypted
	// source (an existing plain destination needs no leave).
	ToPlain bool
	// Parallel is how many chunks are copied at once (4 when zero); each
	// holds its stored frame and raw content, up to twice the chunk size.
	Parallel int
	// LeaseTTL is the TTL of the backup lease at the destination and of
	// the restore lease at the source (repository.DefaultLeaseTTL when
	// zero).
	LeaseTTL time.Duration
	Log      *slog.Logger
	// Progress, when set, is called after each chunk and WAL file, from
	// one goroutine at a time.
	Progress func(Progress)
	// Now is the clock for RetainWithin (time.Now when nil).
	Now func() time.Time
}

// Progress is what Copy has done so far.
type Progress struct {
	Phase        string // "chunks", "wal", "commit", "done"
	Backup       string // the backup being copied; "" while copying the rest of the WAL
	Index, Count int    // 1-based index of the backup among those to copy
	// ChunksDone of ChunksTotal distinct chunks of the backup are stored
	// at the destination, BytesDone of BytesTotal stored bytes.
	ChunksDone, ChunksTotal int
	BytesDone, BytesTotal   int64
	// SentBytes counts every byte this run uploaded, chunks and WAL.
	SentBytes int64
	WALFiles  int // WAL files stored at the destination by this run
	Elapsed   time.Duration
}

// Result is what Copy did, or with DryRun would do.
type Result struct {
	From    string `json:"from"`
	To      string `json:"to"`
	DryRun  bool   `json:"dry_run,omitempty"`
	Rekeyed bool   `json:"rekeyed"` // the ends name chunks differently
	// Backups are the selected backups, oldest first.
	Backups []BackupResult `json:"backups"`
	// ChunksSent were uploaded; ChunksPresent were found at the
	// destination already (from an earlier run, or another backup).
	ChunksSent    int   `json:"chunks_sent"`
	ChunkBytes    int64 `json:"chunk_bytes_sent"`
	ChunksPresent int   `json:"chunks_present"`
	// ChunksToCheck is, in a dry run between differently keyed
	// repositories, the chunks that must be read to tell.
	ChunksToCheck int     `json:"chunks_to_check,omitempty"`
	WALSent       int     `json:"wal_sent"`
	WALBytes      int64   `json:"wal_bytes_sent"`
	WALPresent    int     `json:"wal_present"`
	Seconds       float64 `json:"seconds"`
}

// BackupResult says what happened to one backup.
type BackupResult struct {
	ID string `json:"id"`
	// Status is "copied", "present" (committed at the destination
	// already), "failed" (not committed; the copy stopped there), or in a
	// dry run "would copy".
	Status      string `json:"status"`
	Chunks      int    `json:"chunks"`       // distinct chunks referenced
	ChunksSent  int    `json:"chunks_sent"`  // of which this run uploaded
	BytesSent   int64  `json:"bytes_sent"`   // chunk and WAL bytes uploaded for it
	WALSegments int    `json:"wal_segments"` // WAL files it needs
}

// Copy copies the backups o selects, oldest first, and their WAL from src
// to dst. dst is bound to src's cluster first (a destination holding
// another cluster is refused). It stops at the first failure: a backup
// whose copy failed is not committed at dst, and what was stored for it
// stays there for the next run (or dst's gc) to use. It returns the
// result so far with the error.
func Copy(ctx context.Context, src, dst *repository.Repository, o Options) (*Result, error) {
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &run{src: src, dst: dst, o: o, started: time.Now(), planned: make(map[string]bool),
		res: &Result{From: src.String(), To: dst.String(), DryRun: o.DryRun, Rekeyed: !src.SameChunkIDs(dst)}}
	err := c.run(ctx)
	c.res.Seconds = time.Since(c.started).Seconds()
	return c.res, err
}

// run is one Copy.
type run struct {
	src, dst *repository.Repository
	o        Options
	res      *Result
	started  time.Time
	cfg      *manifest.Repo
	lease    *repository.Lease

	mu sync.Mutex
	// dstChunks are the chunks stored at dst with their stored sizes;
	// dstCRC the CRC of their frames where a manifest of dst recorded it
	// or this run sent it; ids maps a source id to the destination's
	// when they differ.
	dstChunks map[repository.ChunkID]int64
	dstCRC    map[repository.ChunkID]uint32
	ids       map[repository.ChunkID]repository.ChunkID
	dstWAL    map[string]int64
	// dstWALTime are the modification times of dst's <segment>.partial
	// files, which a newer one at the source replaces.
	dstWALTime map[string]time.Time
	// same are the ids of the backups held at both ends that are one
	// backup (sameBackup), the destination's a copy of the source's.
	same map[string]bool
	// srcIDs are the source's committed backups.
	srcIDs []string
	prog   Progress
	// planned are the chunks (source ids) and WAL files a dry run has
	// counted already.
	planned map[string]bool
}

func (c *run) run(ctx context.Context) error {
	cfg, err := c.src.Config(ctx)
	if err != nil {
		return fmt.Errorf("read the configuration of %s: %w", c.src, err)
	}
	c.cfg = cfg
	ids, err := c.selectBackups(ctx)
	if err != nil {
		return err
	}
	if err := c.bind(ctx); err != nil {
		return err
	}
	if !c.o.DryRun {
		// Held from before the destination is listed, as a backup holds
		// its lease from before its first deduplication check: a gc there
		// then leaves every chunk this copy counts on.
		c.lease, err = c.dst.TakeLease(ctx, repository.LockBackup, repository.LeaseOptions{Command: "copy", TTL: c.o.LeaseTTL, Log: c.o.Log})
		if err != nil {
			return err
		}
		defer c.lease.Release(context.WithoutCancel(ctx))
	}
	dstIDs, err := c.dst.BackupIDs(ctx)
	if err != nil {
		return err
	}
	if err := c.loadDestination(ctx, dstIDs, ids); err != nil {
		return err
	}
	var taken []string
	for _, id := range ids {
		if slices.Contains(dstIDs, id) && !c.same[id] {
			taken = append(taken, id)
		}
	}
	if len(taken) > 0 {
		return fmt.Errorf("destination: %w: %s holds a different backup under id %s (another backup_manifest, not a copy of the source's); nothing was copied: delete it there, or copy the other backups by id",
			repository.ErrIDTaken, c.dst, strings.Join(taken, ", "))
	}
	for i, id := range ids {
		c.progress(func(p *Progress) { p.Index, p.Count = i+1, len(ids) })
		if slices.Contains(dstIDs, id) {
			c.res.Backups = append(c.res.Backups, BackupResult{ID: id, Status: "present"})
			c.o.Log.Info("backup already at the destination", "id", id)
			continue
		}
		release, err := c.holdSource(ctx, id)
		if err != nil {
			return err
		}
		err = c.copyBackup(ctx, id)
		release()
		if err != nil {
			return err
		}
	}
	if c.o.All {
		if err := c.copyAllWAL(ctx); err != nil {
			return err
		}
	}
	c.progress(func(p *Progress) { p.Phase, p.Backup = "done", "" })
	return nil
}

// holdSource takes a restore lease at the source naming backup id, so
// that a delete or gc there leaves the backup's manifests, chunks and WAL
// alone while they are copied (docs/catalog.md), and returns its release.
// A dry run takes none, and a source this user cannot write to (a
// read-only bucket or credentials) is copied without one, after a
// warning: everything read is checked, so a delete meanwhile can fail the
// copy but not make it wrong.
func (c *run) holdSource(ctx context.Context, id string) (func(), error) {
	if c.o.DryRun {
		return func() {}, nil
	}
	l, err := c.src.TakeLease(ctx, repository.LockRestore, repository.LeaseOptions{Command: "copy", Backup: id, TTL: c.o.LeaseTTL, Log: c.o.Log})
	switch {
	case err == nil:
	case readOnly(err):
		c.o.Log.Warn("cannot write a lease at the source: it is read-only to this user, so copying without one; a delete or gc run there meanwhile is not held off and can make the copy fail",
			"backup", id, "err", err)
		return func() {}, nil
	default:
		return nil, fmt.Errorf("backup %s: source: %w", id, err)
	}
	release := func() { l.Release(context.WithoutCancel(ctx)) }
	// The backup was selected before the lease existed, so a delete that
	// did not see it may have removed the backup in between; TakeLease
	// waited for any such delete to finish, so one look settles it.
	committed, err := c.src.HasBackup(ctx, id)
	if err != nil || !committed {
		release()
	}
	if err != nil {
		return nil, err
	}
	if !committed {
		return nil, fmt.Errorf("backup %s was deleted from %s as this copy started; run the copy again", id, c.src)
	}
	return release, nil
}

// readOnly reports whether err says that this user may not write to the
// store, as opposed to the store failing.
func readOnly(err error) bool {
	return errors.Is(err, providers.ErrAccessDenied) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}

// bind ties dst to src's cluster, or in a dry run only checks that it
// could. A new destination is not created plain from an encrypted source
// unless o.ToPlain.
func (c *run) bind(ctx context.Context) error {
	if c.src.KeyFingerprint() != "" && c.dst.KeyFingerprint() == "" && !c.o.ToPlain {
		_, err := c.dst.Config(ctx)
		switch {
		case errors.Is(err, providers.ErrNotExist):
			return fmt.Errorf("destination %s: %w: give its key (--to-encryption-key-file or --to-kms-key), or --to-plain for a plain copy", c.dst, ErrPlainDestination)
		case err != nil:
			return fmt.Errorf("read the configuration of %s: %w", c.dst, err)
		}
	}
	if !c.o.DryRun {
		if err := c.dst.Bind(ctx, c.cfg.SystemID, c.cfg.WALSegmentSize); err != nil {
			return fmt.Errorf("destination: %w", err)
		}
		return nil
	}
	d, err := c.dst.Config(ctx)
	switch {
	case err != nil && !errors.Is(err, providers.ErrNotExist):
		return fmt.Errorf("read the configuration of %s: %w", c.dst, err)
	case err != nil:
		return nil // created by the real run
	case d.SystemID != c.cfg.SystemID || d.WALSegmentSize != c.cfg.WALSegmentSize:
		return fmt.Errorf("destination: %w: %s holds cluster %s (segment size %d), %s holds cluster %s (segment size %d)",
			repository.ErrOtherCluster, c.dst, d.SystemID, d.WALSegmentSize, c.src, c.cfg.SystemID, c.cfg.WALSegmentSize)
	}
	return nil
}

// selectBackups returns the ids o selects, oldest first.
func (c *run) selectBackups(ctx context.Context) ([]string, error) {
	all, err := c.src.BackupIDs(ctx)
	if err != nil {
		return nil, err
	}
	c.srcIDs = all
	if len(all) == 0 {
		return nil, fmt.Errorf("%w: %s holds no committed backup", ErrSelection, c.src)
	}
	o := c.o
	switch {
	case o.All:
		return all, nil
	case len(o.IDs) > 0:
		var out []string
		for _, id := range o.IDs {
			if id == "latest" {
				id = all[len(all)-1]
			}
			if !slices.Contains(all, id) {
				return nil, fmt.Errorf("%w: %s has no committed backup %s (see pgstow list)", ErrSelection, c.src, id)
			}
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
		slices.Sort(out)
		return out, nil
	case o.RetainLast > 0 || o.RetainWithin > 0:
		finished := make([]time.Time, len(all))
		if o.RetainWithin > 0 {
			if err := forEachBackup(ctx, c.src, all, func(i int, b *manifest.Backup) error {
				finished[i] = b.Timings.Finished
				return nil
			}); err != nil {
				return nil, err
			}
		}
		since := o.Now().Add(-o.RetainWithin)
		var out []string
		for i, id := range all {
			if (o.RetainLast > 0 && i >= len(all)-o.RetainLast) || (o.RetainWithin > 0 && !finished[i].Before(since)) {
				out = append(out, id)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%w: no backup of %s finished within %s", ErrSelection, c.src, o.RetainWithin)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: name backups (or latest), or give --all, --retain-last or --retain-within", ErrSelection)
}

// loadDestination lists dst's chunks and WAL once, and reads its
// committed manifests for the CRCs they recorded. It records which
// backups held at both ends are one backup (c.same) and, when the ends
// key chunks differently, pairs their chunk references, so that a rerun
// knows the destination's ids of what an earlier run copied without
// reading those chunks again.
func (c *run) loadDestination(ctx context.Context, dstIDs, selected []string) error {
	var err error
	if c.dstChunks, err = c.dst.ChunkSizes(ctx); err != nil {
		return err
	}
	c.dstWAL = make(map[string]int64)
	c.dstWALTime = make(map[string]time.Time)
	for w, err := range c.dst.WALFiles(ctx) {
		if err != nil {
			return err
		}
		c.dstWAL[w.Name] = w.Size
		if snapshotName(w.Name) {
			c.dstWALTime[w.Name] = w.ModTime
		}
	}
	c.dstCRC = make(map[repository.ChunkID]uint32)
	c.ids = make(map[repository.ChunkID]repository.ChunkID)
	dstBackups := make([]*manifest.Backup, len(dstIDs))
	var mu sync.Mutex
	if err := forEachBackup(ctx, c.dst, dstIDs, func(i int, b *manifest.Backup) error {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range b.Archives {
			for _, r := range a.Chunks {
				if id, ok := repository.ParseChunkID(r.ID); ok && r.StoredCRC32C != nil {
					c.dstCRC[id] = *r.StoredCRC32C
				}
			}
		}
		dstBackups[i] = b
		return nil
	}); err != nil {
		return fmt.Errorf("read the manifests of %s: %w", c.dst, err)
	}
	// A backup held at both ends under one id is paired only once its two
	// manifests show it is the same backup: ids are start times to the
	// second, so two backups taken separately into each repository can
	// share one, and pairing those would give later backups destination
	// chunks of other content.
	var common []string
	byID := make(map[string]*manifest.Backup)
	for _, b := range dstBackups {
		if slices.Contains(c.srcIDs, b.ID) && (c.res.Rekeyed || slices.Contains(selected, b.ID)) {
			common = append(common, b.ID)
			byID[b.ID] = b
		}
	}
	c.same = make(map[string]bool)
	return forEachBackup(ctx, c.src, common, func(_ int, s *manifest.Backup) error {
		mu.Lock()
		defer mu.Unlock()
		d := byID[s.ID]
		if !sameBackup(s, d, !c.res.Rekeyed) {
			return nil
		}
		c.same[s.ID] = true
		if c.res.Rekeyed {
			pairRefs(c.ids, s, d)
		}
		return nil
	})
}

// sameBackup reports whether s, a source's manifest, and d, a
// destination's of the same id, are one backup, d a copy of s: a copy
// keeps PostgreSQL's backup_manifest byte for byte, the WAL range, and the
// archives with their references in order, only renaming (when sameIDs is
// false) and resizing the stored chunks.
func sameBackup(s, d *manifest.Backup, sameIDs bool) bool {
	if s.PGManifestSHA256 != d.PGManifestSHA256 || s.SystemID != d.SystemID ||
		s.StartLSN != d.StartLSN || s.EndLSN != d.EndLSN ||
		s.StartTimeline != d.StartTimeline || s.EndTimeline != d.EndTimeline ||
		len(s.Archives) != len(d.Archives) {
		return false
	}
	for ai, sa := range s.Archives {
		da := d.Archives[ai]
		if sa.Name != da.Name || sa.TablespaceOID != da.TablespaceOID || sa.RawSize != da.RawSize || len(sa.Chunks) != len(da.Chunks) {
			return false
		}
		for ci, sr := range sa.Chunks {
			dr := da.Chunks[ci]
			if sr.RawSize != dr.RawSize || sr.Offset != dr.Offset || sr.Length != dr.Length || sr.Codec != dr.Codec ||
				(sameIDs && sr.ID != dr.ID) {
				return false
			}
		}
	}
	return true
}

// pairRefs records the destination id of every chunk of s, the source's
// manifest of backup d, by position: a copy keeps the archives and their
// references in order. s and d are one backup (sameBackup).
func pairRefs(ids map[repository.ChunkID]repository.ChunkID, s, d *manifest.Backup) {
	for ai := range s.Archives {
		for ci, r := range s.Archives[ai].Chunks {
			from, ok1 := repository.ParseChunkID(r.ID)
			to, ok2 := repository.ParseChunkID(d.Archives[ai].Chunks[ci].ID)
			if ok1 && ok2 {
				ids[from] = to
			}
		}
	}
}

// stored is a chunk as the destination holds it.
type stored struct {
	id   string
	size int64
	crc  *uint32
}

// copyBackup copies one backup's chunks and WAL, then commits it at dst.
func (c *run) copyBackup(ctx context.Context, id string) error {
	b, err := c.src.Backup(ctx, id)
	if err != nil {
		return err
	}
	if b.SystemID != "" && b.SystemID != c.cfg.SystemID {
		return fmt.Errorf("backup %s in %s is of cluster %s, not the repository's %s", id, c.src, b.SystemID, c.cfg.SystemID)
	}
	br := BackupResult{ID: id, Status: "copied", WALSegments: len(b.WAL)}
	if c.o.DryRun {
		br.Status = "would copy"
	}
	// The distinct chunks, in archive order.
	var refs []manifest.ChunkRef
	seen := make(map[string]bool)
	var total int64
	for _, a := range b.Archives {
		for _, r := range a.Chunks {
			if !seen[r.ID] {
				seen[r.ID] = true
				refs = append(refs, r)
				total += r.StoredSize
			}
		}
	}
	br.Chunks = len(refs)
	c.progress(func(p *Progress) {
		p.Phase, p.Backup, p.ChunksDone, p.ChunksTotal, p.BytesDone, p.BytesTotal = "chunks", id, 0, len(refs), 0, total
	})
	c.o.Log.Info("copying backup", "id", id, "chunks", len(refs), "stored_bytes", total)

	done := make([]stored, len(refs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.o.Parallel)
	pool := sync.Pool{New: func() any { return &chunkBuffers{dec: chunker.NewDecompressor()} }}
	for i, r := range refs {
		if s, ok := c.present(r.ID); ok {
			done[i] = s
			c.chunkDone(&br, r, false, 0)
			continue
		}
		if c.o.DryRun {
			if c.planned[r.ID] {
				continue // counted with an earlier backup
			}
			c.planned[r.ID] = true
			if c.res.Rekeyed {
				c.res.ChunksToCheck++
			} else {
				br.ChunksSent++
				br.BytesSent += r.StoredSize
				c.res.ChunksSent++
				c.res.ChunkBytes += r.StoredSize
			}
			continue
		}
		g.Go(func() error {
			buf := pool.Get().(*chunkBuffers)
			defer pool.Put(buf)
			s, sent, err := c.copyChunk(gctx, r, buf)
			if err != nil {
				return fmt.Errorf("backup %s: %w", id, err)
			}
			done[i] = s
			c.chunkDone(&br, r, sent, s.size)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return c.failed(br, err)
	}

	c.progress(func(p *Progress) { p.Phase = "wal" })
	var walBytes int64
	for i, w := range b.WAL {
		seg, sent, err := c.copyWAL(ctx, w.Name, w.SHA256, time.Time{})
		if err != nil {
			return c.failed(br, fmt.Errorf("backup %s: %w", id, err))
		}
		if sent {
			br.BytesSent += seg.StoredSize
		}
		b.WAL[i].StoredSize = seg.StoredSize
		walBytes += seg.StoredSize
	}
	// A backup that ends on a later timeline than it started needs the
	// history files to follow the switch; they are not in its WAL list.
	for tli := b.StartTimeline + 1; tli <= b.EndTimeline; tli++ {
		if _, _, err := c.copyWAL(ctx, manifest.HistoryFileName(tli), "", time.Time{}); err != nil && !errors.Is(err, providers.ErrNotExist) {
			return c.failed(br, fmt.Errorf("backup %s: %w", id, err))
		}
	}
	if c.o.DryRun {
		c.res.Backups = append(c.res.Backups, br)
		return nil
	}
	rewrite(b, refs, done)
	b.Totals.WALBytes = walBytes
	if err := c.commit(ctx, b); err != nil {
		return c.failed(br, err)
	}
	c.res.Backups = append(c.res.Backups, br)
	c.o.Log.Info("backup copied", "id", id, "chunks_sent", br.ChunksSent, "bytes_sent", br.BytesSent)
	return nil
}

// failed records a backup whose copy failed, not committed at the
// destination, and returns err.
func (c *run) failed(br BackupResult, err error) error {
	br.Status = "failed"
	c.res.Backups = append(c.res.Backups, br)
	return err
}

// chunkBuffers are one copier's reusable buffers.
type chunkBuffers struct {
	dec   *chunker.Decompressor
	frame []byte
	raw   bytes.Buffer
}

// present reports whether the destination holds the chunk whose source id
// is srcID, and how, without reading it: only when its destination id is
// known.
func (c *run) present(srcID string) (stored, bool) {
	sid, ok := repository.ParseChunkID(srcID)
	if !ok {
		return stored{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	did := sid
	if c.res.Rekeyed {
		if did, ok = c.ids[sid]; !ok {
			return stored{}, false
		}
	}
	return c.lookup(did)
}

// lookup is the destination's chunk did, if stored; c.mu held.
func (c *run) lookup(did repository.ChunkID) (stored, bool) {
	size, ok := c.dstChunks[did]
	if !ok {
		return stored{}, false
	}
	s := stored{id: did.String(), size: size}
	if crc, ok := c.dstCRC[did]; ok {
		s.crc = &crc
	}
	return s, true
}

// copyChunk reads one source chunk, checks it, and stores its frame at
// the destination under the destination's id unless already there. It
// reports whether it uploaded.
func (c *run) copyChunk(ctx context.Context, r manifest.ChunkRef, buf *chunkBuffers) (stored, bool, error) {
	frame, err := c.src.ReadChunk(ctx, buf.dec, r, &buf.frame, &buf.raw)
	if err != nil {
		if errors.Is(err, repository.ErrCorrupt) {
			return stored{}, false, fmt.Errorf("the source chunk is damaged, nothing of this backup is committed at the destination (pgstow verify --repo SOURCE names every damaged chunk): %w", err)
		}
		return stored{}, false, err
	}
	did := r.ID
	if c.res.Rekeyed {
		did = c.dst.ChunkID(buf.raw.Bytes())
	}
	dcid, _ := repository.ParseChunkID(did)
	sid, _ := repository.ParseChunkID(r.ID)
	c.mu.Lock()
	if c.res.Rekeyed {
		c.ids[sid] = dcid
	}
	s, ok := c.lookup(dcid)
	c.mu.Unlock()
	if ok {
		return s, false, nil
	}
	// The frame is sent as it is (a frame decodes to the content whatever
	// the keying), so no recompression; its CRC is checked by the store.
	crc := crc32c(frame)
	put, err := c.dst.PutChunk(ctx, did, frame, crc)
	if err != nil {
		return stored{}, false, fmt.Errorf("store chunk %s in %s: %w", did, c.dst, err)
	}
	s = stored{id: did, size: int64(len(frame)), crc: &crc}
	if !put {
		// Another writer stored it first, maybe another frame: take the
		// size the store has, and no CRC.
		size, found, err := c.dst.HasChunk(ctx, did)
		if err != nil || !found {
			return stored{}, false, fmt.Errorf("chunk %s in %s: stored by another writer, then not found (%w)", did, c.dst, err)
		}
		s = stored{id: did, size: size}
	}
	c.mu.Lock()
	c.dstChunks[dcid] = s.size
	if s.crc != nil {
		c.dstCRC[dcid] = *s.crc
	}
	c.mu.Unlock()
	return s, put, nil
}

// chunkDone counts one chunk of the backup.
func (c *run) chunkDone(br *BackupResult, r manifest.ChunkRef, sent bool, size int64) {
	c.mu.Lock()
	if sent {
		br.ChunksSent++
		br.BytesSent += size
		c.res.ChunksSent++
		c.res.ChunkBytes += size
	} else {
		c.res.ChunksPresent++
	}
	c.mu.Unlock()
	c.progress(func(p *Progress) {
		p.ChunksDone++
		p.BytesDone += r.StoredSize
		if sent {
			p.SentBytes += size
		}
	})
}

// rewrite makes b the destination's manifest: chunk references renamed
// and resized as the destination stores them (slices keep their offsets),
// archive and total sizes to match. refs are b's distinct chunks and done
// what the destination holds of each.
func rewrite(b *manifest.Backup, refs []manifest.ChunkRef, done []stored) {
	at := make(map[string]int, len(refs))
	for i, r := range refs {
		at[r.ID] = i
	}
	for i, r := range refs {
		b.Totals.StoredBytes += done[i].size - r.StoredSize
	}
	for ai := range b.Archives {
		a := &b.Archives[ai]
		a.StoredSize = 0
		for ci := range a.Chunks {
			ref := &a.Chunks[ci]
			s := done[at[ref.ID]]
			ref.ID, ref.StoredSize, ref.StoredCRC32C = s.id, s.size, s.crc
			a.StoredSize += s.size
		}
	}
	b.Totals.StoredBytes = max(b.Totals.StoredBytes, 0)
}

// commit stores PostgreSQL's backup_manifest and then pgstow's manifest,
// the commit point, at the destination.
func (c *run) commit(ctx context.Context, b *manifest.Backup) error {
	c.progress(func(p *Progress) { p.Phase = "commit" })
	f, err := spool.Create(c.dst.SpoolDir(), "pgstow-copy-manifest-*")
	if err != nil {
		return fmt.Errorf("backup %s: stage backup_manifest: %w", b.ID, err)
	}
	defer f.Close()
	n, err := c.src.PGManifestTo(ctx, b, f)
	if err != nil {
		return err // names the backup
	}
	if err := c.lease.Held(); err != nil {
		// A gc at the destination may have judged the copy dead: commit
		// only if nothing it references was removed.
		c.o.Log.Warn("copy lease lapsed; checking that every referenced object is still stored", "err", err)
		if err := c.dst.CheckStored(ctx, b); err != nil {
			return fmt.Errorf("backup %s: %w; run the copy again", b.ID, err)
		}
	}
	if err := c.dst.Commit(ctx, b, io.NewSectionReader(f, 0, n)); err != nil {
		return fmt.Errorf("commit at %s: %w", c.dst, err)
	}
	return nil
}

// copyWAL stores WAL file name at the destination unless it is there,
// reading it from the source checked against sha (when not "") and the
// rules of repository.ReadWAL. It returns the destination's record of it
// and whether it uploaded. The content is staged in a spool file, never
// held in memory, and compressed again by the destination's own WAL path.
//
// A <segment>.partial (snapshotName) is stored by the destination's
// partial-WAL path, and copied again when the source's, modified at
// srcMod, is newer than the destination's: wal-receive replaces its
// snapshot as the segment grows. Its stored size is not known after the
// upload, so its raw size is counted.
func (c *run) copyWAL(ctx context.Context, name, sha string, srcMod time.Time) (manifest.WALSegment, bool, error) {
	seg := manifest.WALSegment{Name: name, SHA256: sha}
	snapshot := snapshotName(name)
	c.mu.Lock()
	size, ok := c.dstWAL[name]
	if ok && snapshot && srcMod.After(c.dstWALTime[name]) {
		ok = false // a newer snapshot at the source
	}
	c.mu.Unlock()
	if ok {
		seg.StoredSize = size
		c.mu.Lock()
		c.res.WALPresent++
		c.mu.Unlock()
		return seg, false, nil
	}
	if c.o.DryRun {
		if c.planned[name] {
			return seg, false, nil
		}
		c.planned[name] = true
		exists, err := c.src.HasWAL(ctx, name)
		if err != nil || !exists {
			return seg, false, errors.Join(err, fmt.Errorf("WAL %s in %s: %w", name, c.src, providers.ErrNotExist))
		}
		c.res.WALSent++
		return seg, false, nil
	}
	f, err := spool.Create(c.dst.SpoolDir(), "pgstow-copy-wal-*")
	if err != nil {
		return seg, false, fmt.Errorf("stage WAL %s: %w", name, err)
	}
	defer f.Close()
	sum, err := c.src.ReadWAL(ctx, chunker.NewDecompressor(), name, repository.WALWant{SegmentSize: c.cfg.WALSegmentSize, SHA256: sha}, f)
	if err != nil {
		if errors.Is(err, repository.ErrCorrupt) {
			return seg, false, fmt.Errorf("the source WAL is damaged, nothing of this backup is committed at the destination: %w", err)
		}
		return seg, false, err
	}
	body := io.NewSectionReader(f, 0, sum.RawSize)
	var got manifest.WALSegment
	if snapshot {
		err := c.dst.PutWALPartialFrom(ctx, chunker.NewCompressor(), strings.TrimSuffix(name, ".partial"), body, sum.RawSize)
		if errors.Is(err, repository.ErrPartialKept) {
			// An immutable destination keeps the one it has.
			c.o.Log.Warn("the immutable destination keeps its earlier partial segment", "name", name)
			c.mu.Lock()
			c.dstWALTime[name] = srcMod
			c.res.WALPresent++
			c.mu.Unlock()
			seg.StoredSize = size
			return seg, false, nil
		}
		if err != nil {
			return seg, false, err
		}
		got = manifest.WALSegment{Name: name, SHA256: sum.Hex(), StoredSize: sum.RawSize}
	} else if got, err = c.dst.PutWALFrom(ctx, chunker.NewCompressor(), name, body, sum.RawSize); err != nil {
		return seg, false, err
	}
	c.mu.Lock()
	c.dstWAL[name] = got.StoredSize
	if snapshot {
		c.dstWALTime[name] = srcMod
	}
	c.res.WALSent++
	c.res.WALBytes += got.StoredSize
	c.mu.Unlock()
	c.progress(func(p *Progress) { p.WALFiles++; p.SentBytes += got.StoredSize })
	return got, true, nil
}

// snapshotName reports whether name is a <segment>.partial: the
// archiver's last segment of a timeline at promotion, or wal-receive's
// snapshot of the segment it is filling. The two cannot be told apart
// by name; both are copied.
func snapshotName(name string) bool {
	return len(name) == 24+len(".partial") && strings.HasSuffix(name, ".partial")
}

// copyAllWAL copies every WAL file of the source the destination lacks,
// and every <segment>.partial the source holds a newer one of.
func (c *run) copyAllWAL(ctx context.Context) error {
	c.progress(func(p *Progress) { p.Phase, p.Backup = "wal", "" })
	var files []repository.WALFile
	for w, err := range c.src.WALFiles(ctx) {
		if err != nil {
			return err
		}
		files = append(files, w)
	}
	for _, w := range files {
		if _, _, err := c.copyWAL(ctx, w.Name, "", w.ModTime); err != nil {
			return err
		}
	}
	return nil
}

// progress updates the progress under the lock and reports it.
func (c *run) progress(change func(*Progress)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	change(&c.prog)
	c.prog.Elapsed = time.Since(c.started)
	if c.o.Progress != nil {
		c.o.Progress(c.prog)
	}
}

// forEachBackup is repository.ForEachBackup without the file records,
// which a copier reads only of the backup it copies.
func forEachBackup(ctx context.Context, r *repository.Repository, ids []string, fn func(i int, b *manifest.Backup) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, id := range ids {
		g.Go(func() error {
			b, err := r.BackupWithoutFiles(gctx, id)
			if err != nil {
				return err
			}
			return fn(i, b)
		})
	}
	return g.Wait()
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, manifest.Castagnoli) }
