// Package backup runs one backup end to end: it binds the repository to
// the cluster, reserves WAL with a temporary slot, streams BASE_BACKUP
// through the uploader while a second connection stores the WAL, checks
// every file against PostgreSQL's own manifest, and commits pgstow's
// manifest last, so a backup is visible only when it is complete.
package backup

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/incremental"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/replication"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/spool"
	"github.com/pgstow/pgstow/uploader"
)

// WALMode says how a backup makes sure its WAL is in the repository.
type WALMode string

const (
	// WALStream streams the WAL over a second replication connection.
	WALStream WALMode = "stream"
	// WALNone expects another archiver to store the WAL and only checks.
	WALNone WALMode = "none"
)

// Options configure one backup.
type Options struct {
	// DSN names the server; empty uses the libpq environment.
	DSN      string
	Label    string
	WAL      WALMode
	Uploader uploader.Config
	// Server-side options.
	FastCheckpoint           bool
	MaxRate                  uint64
	SkipChecksumVerification bool
	Compression              string
	// WALTimeout bounds the wait for the last WAL segment after the base
	// backup ended (stream), or for the segments to appear (none).
	WALTimeout time.Duration
	// IOTimeout fails the backup when either connection to the server,
	// once streaming, brings nothing for this long (0: never).
	IOTimeout   time.Duration
	ToolVersion string
	Log         *slog.Logger
	// Progress, if set, receives a snapshot about every ProgressInterval
	// (default 1 s) and at each change of phase, from one goroutine at a
	// time. Rendering it is the caller's business.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// EstimateSize asks the server to total the data directory before
	// streaming (BASE_BACKUP PROGRESS), so progress has a percentage, when
	// the repository holds no earlier backup of the same server (whose
	// raw size is the estimate, whenever Progress is set). It costs the
	// server one pass of stat calls over the directory.
	EstimateSize bool
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
	// LeaseTTL is the backup lease's TTL (repository.DefaultLeaseTTL).
	LeaseTTL time.Duration
	// CleanupTimeout bounds the removal of what a failed backup stored
	// (DefaultCleanupTimeout).
	CleanupTimeout time.Duration
	// Type is auto (default), full or incremental (see Type).
	Type Type
	// FullEvery is how old the full backup an incremental descends from
	// may be before auto takes a full one (DefaultFullEvery).
	FullEvery time.Duration
}

// Run takes one backup into repo and returns its committed manifest. A
// backup that fails after it began storing removes what it stored that
// nothing else uses, even when ctx was cancelled, and its error ends with
// one clause saying what it removed and what it left (removeLeftovers).
func Run(ctx context.Context, repo *repository.Repository, o Options) (*manifest.Backup, error) {
	return run(ctx, repo, o, replicationDialer{})
}

// run is Run against the server d connects to; tests give a fake one.
// It reads as the backup's phases: session (connect, identify, bind,
// lease, slot), stream the archives while collecting the WAL, cross-check
// with PostgreSQL's backup_manifest, build pgstow's manifest, commit.
func run(ctx context.Context, repo *repository.Repository, o Options, d dialer) (_ *manifest.Backup, err error) {
	if o, err = o.withDefaults(); err != nil {
		return nil, err
	}
	r := &backupRun{repo: repo, o: o, log: o.Log, dial: d, started: o.Now().UTC(),
		prog: newProgressReporter(o), walSeg: map[string]manifest.WALSegment{}}
	defer r.prog.stop()
	r.prog.phase(PhaseConnecting)
	defer r.disconnect(ctx)
	if err := r.connect(ctx); err != nil {
		return nil, err
	}
	if err := r.takeLease(ctx); err != nil {
		return nil, err
	}
	defer func() { err = r.release(ctx, err) }()
	r.loadLatest(ctx)
	if err := r.choose(ctx); err != nil {
		return nil, err
	}
	r.log.Info("backup starting", "server", r.conn.Target(), "pg_version", r.sys.ServerVersion, "standby", r.sys.Standby,
		"system_id", r.sys.SystemID, "repo", repo.String(), "wal", string(r.o.WAL))
	defer r.closeWALSender(ctx)
	if err := r.openWALSender(ctx); err != nil {
		return nil, err
	}
	if err := r.startBaseBackup(ctx); err != nil {
		return nil, err
	}
	defer r.bb.Close()
	// PostgreSQL's backup_manifest is staged on disk: with a hundred
	// thousand files it is tens of MB, read once to check and once to
	// store.
	if r.pgm, err = spool.Create(repo.SpoolDir(), "pgstow-backup_manifest-*"); err != nil {
		return nil, fmt.Errorf("stage backup_manifest: %w", err)
	}
	defer func() { r.pgm.Close() }() // synthesize replaces it
	if err := r.transfer(ctx); err != nil {
		return nil, err
	}
	r.bb.Close()
	r.log.Info("base backup ended", "end_lsn", r.end.LSN.String(), "timeline", r.end.Timeline)
	if err := r.crossCheck(); err != nil {
		return nil, err
	}
	if err := r.synthesize(ctx); err != nil {
		return nil, err
	}
	wal, err := r.collectWAL(ctx)
	if err != nil {
		return nil, err
	}
	b := r.buildManifest(wal)
	if err := r.commit(ctx, b); err != nil {
		return nil, err
	}
	return b, nil
}

// withDefaults fills in the defaults and checks the WAL mode.
func (o Options) withDefaults() (Options, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.WAL == "" {
		o.WAL = WALStream
	}
	if o.WAL != WALStream && o.WAL != WALNone {
		return o, fmt.Errorf("WAL mode %q: use stream or none", o.WAL)
	}
	if o.WALTimeout <= 0 {
		o.WALTimeout = 5 * time.Minute
	}
	if o.Type == "" {
		o.Type = TypeAuto
	}
	if o.Type != TypeAuto && o.Type != TypeFull && o.Type != TypeIncremental {
		return o, fmt.Errorf("backup type %q: use auto, full or incremental", o.Type)
	}
	if o.FullEvery <= 0 {
		o.FullEvery = DefaultFullEvery
	}
	return o, nil
}

// backupRun is one backup's state, handed from phase to phase. Fields
// set by the streaming goroutines are read only after they finished.
type backupRun struct {
	repo *repository.Repository
	o    Options
	log  *slog.Logger
	dial dialer
	prog *progressReporter
	// latest is the newest backup's manifest without files, when
	// loadLatest read it: findParent starts from it rather than read it
	// again, and progress takes its size (sizeHint).
	latest  *manifest.Backup
	started time.Time

	// The session.
	conn    server
	sys     replication.System
	lease   *repository.Lease
	walConn walSender // nil with --wal=none
	slot    string
	bb      archiveSource
	start   replication.Start

	// What was stored.
	up       *uploader.Uploader
	archives []manifest.Archive
	files    []manifest.File
	pgm      *spool.File // PostgreSQL's backup_manifest
	pgmSize  int64
	end      replication.End
	walMu    sync.Mutex
	walSeg   map[string]manifest.WALSegment
	// uncommitted is the id of a commit that failed, which may have
	// stored PostgreSQL's backup_manifest.
	uncommitted string
	// commitUnknown is set when that commit's manifest may still land
	// (repository.ErrCommitUnknown).
	commitUnknown bool

	// Incremental backups: what choose decided, where the new bytes of
	// the assembled files go, and what the server sent.
	plan      incrementalPlan
	sink      *chunkSink
	sentBytes int64
	synth     *incremental.Result
}

// connect opens the session's connection and identifies the cluster.
func (r *backupRun) connect(ctx context.Context) error {
	conn, err := r.dial.server(ctx, r.o.DSN)
	if err != nil {
		return err
	}
	r.conn = conn
	r.sys, err = conn.IdentifySystem(ctx)
	return err
}

// disconnect closes the session's connection, if it was opened.
func (r *backupRun) disconnect(ctx context.Context) {
	if r.conn != nil {
		r.conn.Close(context.WithoutCancel(ctx))
	}
}

// takeLease binds the repository to the cluster and takes the backup
// lease. The lease is held from before the first chunk is deduplicated
// against the store until after the commit, so delete and gc leave alone
// every chunk this backup may reference (docs/catalog.md).
func (r *backupRun) takeLease(ctx context.Context) error {
	if err := r.repo.Bind(ctx, r.sys.SystemID, r.sys.WALSegmentSize); err != nil {
		return err
	}
	lease, err := r.repo.TakeLease(ctx, repository.LockBackup, repository.LeaseOptions{Command: "backup", TTL: r.o.LeaseTTL, Log: r.log})
	if err != nil {
		return err
	}
	r.lease = lease
	return nil
}

// release gives the lease back and, when the backup failed, removes what
// it stored that nothing else uses, saying so at the end of err.
func (r *backupRun) release(ctx context.Context, err error) error {
	r.lease.Release(ctx)
	if err == nil {
		return nil
	}
	left := leftovers{pgManifestOf: r.uncommitted, commitUnknown: r.commitUnknown, ownLease: r.lease.Key()}
	if r.up != nil {
		left.chunks = r.up.Written()
	}
	if r.sink != nil {
		left.chunks = append(left.chunks, r.sink.written...)
	}
	r.walMu.Lock()
	left.walSegments = len(r.walSeg)
	r.walMu.Unlock()
	if msg := removeLeftovers(ctx, r.repo, left, r.o); msg != "" {
		err = fmt.Errorf("%w; %s", err, msg)
	}
	return err
}

// loadLatest reads the newest backup's manifest once, for two things.
// Its chunks' CRC32C of their stored bytes: deduplicated chunks carry the
// record forward, for a full verify to compare (without it the backup
// still works: those chunks are recorded without one). Read under the
// lease, so that no delete or gc changes the chunks between this read and
// the deduplication. And, for progress, its raw size as the estimate of
// this one when it is of the same server, which spares the server
// BASE_BACKUP's PROGRESS pass: a stat of every file before the first byte
// is sent (0.4 s of a 3 s backup of a cluster with 65,000 files).
func (r *backupRun) loadLatest(ctx context.Context) {
	if r.o.Uploader.KnownCRC32C != nil && r.o.Progress == nil {
		return
	}
	b, err := r.repo.BackupWithoutFiles(ctx, "latest")
	switch {
	case errors.Is(err, repository.ErrNoBackup):
		return
	case err != nil:
		r.log.Warn("cannot read the newest backup's manifest; deduplicated chunks are recorded without their stored CRC32C, and progress asks the server for the size", "error", err)
		return
	}
	r.latest = b
	if r.o.Uploader.KnownCRC32C == nil {
		r.o.Uploader.KnownCRC32C = repository.ChunkCRCs(b)
	}
}

// sizeHint is the newest backup's raw size when it is of the same
// server, else 0: progress's estimate in place of the server's.
func (r *backupRun) sizeHint() int64 {
	if b := r.latest; b != nil && b.SystemID == r.sys.SystemID {
		return b.Totals.RawBytes
	}
	return 0
}

// openWALSender opens the WAL connection and reserves the WAL from now
// on with a temporary slot (--wal=stream only).
func (r *backupRun) openWALSender(ctx context.Context) error {
	if r.o.WAL != WALStream {
		return nil
	}
	walConn, err := r.dial.walSender(ctx, r.o.DSN)
	if err != nil {
		return err
	}
	r.walConn = walConn
	r.slot = slotName()
	return walConn.CreateTemporarySlot(ctx, r.slot)
}

// closeWALSender closes the WAL connection, which drops the slot.
func (r *backupRun) closeWALSender(ctx context.Context) {
	if r.walConn != nil {
		r.walConn.Close(context.WithoutCancel(ctx))
	}
}

// startBaseBackup asks for the base backup, which begins with the
// server's checkpoint.
func (r *backupRun) startBaseBackup(ctx context.Context) error {
	r.prog.phase(PhaseCheckpoint)
	o, log := r.o, r.log
	opts := replication.BackupOptions{
		Label:                    o.Label,
		Progress:                 o.EstimateSize && r.sizeHint() <= 0,
		FastCheckpoint:           o.FastCheckpoint,
		MaxRate:                  o.MaxRate,
		SkipChecksumVerification: o.SkipChecksumVerification,
		Compression:              o.Compression,
		IdleTimeout:              o.IOTimeout,
		OnNotice: func(n *pgconn.PgError) {
			log.Warn("server notice", "severity", n.Severity, "message", n.Message)
		},
	}
	var bb archiveSource
	var err error
	if r.plan.parent != nil {
		bb, err = r.startIncremental(ctx, opts)
	} else {
		bb, err = r.conn.BaseBackup(ctx, opts)
	}
	if err != nil {
		return err
	}
	r.bb = bb
	r.start = bb.Start()
	log.Info("base backup started", "start_lsn", r.start.LSN.String(), "timeline", r.start.Timeline,
		"tablespaces", len(r.start.Tablespaces))
	switch {
	case r.start.TotalKB >= 0:
		r.prog.estimate.Store(r.start.TotalKB * 1024)
	case o.Progress != nil && r.sizeHint() > 0:
		r.prog.estimate.Store(r.sizeHint())
	}
	return nil
}

// transfer streams the archives through the uploader and, with
// --wal=stream, the WAL into the repository at the same time; the first
// failure stops both.
func (r *backupRun) transfer(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	endCh := make(chan manifest.LSN, 1)
	if r.o.WAL == WALStream {
		ws := r.walStream()
		g.Go(func() error { return r.streamWAL(gctx, ws, endCh) })
	}
	r.up = r.newUploader()
	r.up.OnChunk = r.prog.chunk
	r.up.Observe = r.observer()
	r.sink = &chunkSink{repo: r.repo, comp: chunker.NewCompressor(), known: r.o.Uploader.KnownCRC32C}
	r.prog.attach(r.bb.Streamed, r.up.InFlight)
	r.prog.phase(PhaseStreaming)
	g.Go(func() error { return r.streamArchives(gctx, endCh) })
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("backup interrupted (%w); nothing was committed", context.Cause(ctx))
		}
		return err
	}
	return nil
}

// newUploader makes the uploader that cuts the archives into chunks.
func (r *backupRun) newUploader() *uploader.Uploader {
	return uploader.New(r.repo, r.o.Uploader, r.log)
}

// streamArchives stores every archive, then receives PostgreSQL's
// backup_manifest and the end position, which it sends on endCh.
func (r *backupRun) streamArchives(ctx context.Context, endCh chan<- manifest.LSN) error {
	// The stream reader cannot see ctx, so a WAL failure must abort it
	// by closing the connection.
	stop := context.AfterFunc(ctx, r.bb.Abort)
	defer stop()
	for {
		a, err := r.bb.NextArchive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := r.storeArchive(ctx, a); err != nil {
			return err
		}
	}
	// The chunk buffers are done with: give their memory to the
	// manifests (large with many files) instead of adding to it.
	r.up.Release()
	runtime.GC()
	r.prog.phase(PhaseWAL)
	t0 := time.Now()
	var err error
	if r.pgmSize, err = r.bb.ManifestTo(r.pgm); err != nil {
		return fmt.Errorf("receive backup_manifest: %w", err)
	}
	if r.end, err = r.bb.Finish(); err != nil {
		return err
	}
	r.log.Debug("backup_manifest received", "bytes", r.pgmSize, "seconds", time.Since(t0).Seconds())
	endCh <- r.end.LSN
	return nil
}

// storeArchive cuts one archive into chunks and keeps its file records.
func (r *backupRun) storeArchive(ctx context.Context, a *replication.Archive) error {
	oid, location, err := tablespaceOf(a, r.start.Tablespaces)
	if err != nil {
		return err
	}
	t0 := time.Now()
	arch, fs, err := r.up.Archive(ctx, a, len(r.archives), a.Name, oid)
	if err != nil {
		return err
	}
	r.log.Info("archive stored", "archive", a.Name, "location", location, "raw_bytes", arch.RawSize,
		"stored_bytes", arch.StoredSize, "chunks", len(arch.Chunks), "seconds", time.Since(t0).Seconds())
	r.archives = append(r.archives, arch)
	if r.files == nil {
		// Most clusters have one archive: take its records rather than
		// copy them (tens of MB with many files).
		r.files = fs
	} else {
		r.files = append(r.files, fs...)
	}
	return nil
}

// walStream configures the WAL stream to store each segment as it
// completes.
func (r *backupRun) walStream() *replication.WALStream {
	log := r.log
	comp := chunker.NewCompressor()
	ws := &replication.WALStream{
		Slot:        r.slot,
		Timeline:    r.start.Timeline,
		SegmentSize: r.sys.WALSegmentSize,
		IdleTimeout: r.o.IOTimeout,
		SpoolDir:    r.repo.SpoolDir(),
		Waiting: func(w replication.WALWait) {
			log.Info("waiting for the last WAL segment the backup needs", "segment", w.Segment,
				"received_up_to", w.Received.String(), "needed_up_to", w.End.String(), "server_wal_end", w.ServerEnd.String(),
				"waited", w.Waited.Round(time.Second).String(), "timeout", w.Timeout.String())
		},
		Sink: func(ctx context.Context, name string, data *io.SectionReader) error {
			seg, err := r.storeWAL(ctx, comp, name, name, data)
			if err == nil {
				log.Debug("WAL segment stored", "segment", name, "stored", seg.StoredSize)
			}
			return err
		},
	}
	if r.sys.Standby {
		// A standby cannot switch segments: store the last one up to
		// the end LSN rather than wait for it to fill.
		ws.EndPartial = func(ctx context.Context, name string, data *io.SectionReader) error {
			partial := manifest.PartialSegmentName(name, uint64(data.Size()))
			seg, err := r.storeWAL(ctx, comp, name, partial, data)
			if err == nil {
				log.Info("last WAL segment stored up to the backup's end, as a standby cannot complete it", "segment", partial, "stored", seg.StoredSize)
			}
			return err
		}
	}
	return ws
}

// storeWAL stores segment segName's bytes as object, which is the
// segment's own name or, at a standby's end, its partial name.
func (r *backupRun) storeWAL(ctx context.Context, comp *chunker.Compressor, segName, object string, data *io.SectionReader) (manifest.WALSegment, error) {
	seg, err := r.repo.PutWALFrom(ctx, comp, object, data, data.Size())
	if err != nil {
		return seg, err
	}
	r.walMu.Lock()
	r.walSeg[segName] = seg
	r.walMu.Unlock()
	r.prog.walSegments.Add(1)
	return seg, nil
}

// streamWAL runs the WAL stream until the segment holding the end LSN
// is stored.
func (r *backupRun) streamWAL(ctx context.Context, ws *replication.WALStream, endCh <-chan manifest.LSN) error {
	if err := r.walConn.StreamWAL(ctx, ws, r.start.LSN, endCh, r.o.WALTimeout); err != nil {
		if r.sys.Standby && errors.Is(err, replication.ErrStreamEnded) {
			return fmt.Errorf("the standby was promoted, or shut down, during the backup; nothing was committed; take the backup again (from the new primary or another standby): %w", err)
		}
		return fmt.Errorf("stream WAL: %w", err)
	}
	return nil
}

// crossCheck checks every file the stream brought against PostgreSQL's
// own backup_manifest.
func (r *backupRun) crossCheck() error {
	if r.end.Timeline != r.start.Timeline {
		return fmt.Errorf("the server's timeline changed during the backup (%d to %d), which pgstow does not support yet; take the backup again", r.start.Timeline, r.end.Timeline)
	}
	pg, err := manifest.ParsePGManifestFrom(bufio.NewReaderSize(io.NewSectionReader(r.pgm, 0, r.pgmSize), 64<<10))
	if err != nil {
		return fmt.Errorf("PostgreSQL's backup_manifest: %w", err)
	}
	if err := manifest.CrossCheck(pg, r.files, r.archives); err != nil {
		return fmt.Errorf("the stream does not match PostgreSQL's backup_manifest: %w", err)
	}
	return nil
}

// collectWAL lists the segments from the backup's start to its end: the
// stream stored them (stream), or another archiver must (none).
func (r *backupRun) collectWAL(ctx context.Context) ([]manifest.WALSegment, error) {
	names, err := manifest.RequiredSegments(r.start.Timeline, r.start.LSN, r.end.LSN, r.sys.WALSegmentSize)
	if err != nil {
		return nil, err
	}
	if r.o.WAL == WALStream {
		var wal []manifest.WALSegment
		for _, n := range names {
			seg, ok := r.walSeg[n]
			if !ok {
				return nil, fmt.Errorf("WAL segment %s was not stored by the stream", n)
			}
			wal = append(wal, seg)
		}
		return wal, nil
	}
	hint := ""
	if r.sys.Standby {
		hint = "; a standby's last segment is archived only once the primary fills it, so back a standby up with --wal=stream (the default), which stores the part of it the backup needs"
	}
	return awaitWAL(ctx, r.repo, names, r.o.WALTimeout, hint, r.log)
}

// buildManifest records the backup in pgstow's manifest.
func (r *backupRun) buildManifest(wal []manifest.WALSegment) *manifest.Backup {
	up, sys, start, end := r.up, r.sys, r.start, r.end
	stats := up.Stats()
	w := up.Waits()
	r.log.Info("pipeline stage times (seconds, summed over each stage's goroutines)", "cutter_reading", w.CutterRead.Seconds(), "cutter_blocked", w.CutterBlocked.Seconds(),
		"sealers_busy", w.SealBusy.Seconds(), "sealers_idle", w.SealIdle.Seconds(), "sealers_blocked", w.SealBlocked.Seconds(),
		"uploads_busy", w.UploadBusy.Seconds(), "uploads_idle", w.UploadIdle.Seconds(),
		"sealers", up.Config().SealWorkers, "uploaders", up.Config().Concurrency)
	b := &manifest.Backup{
		FormatVersion:  manifest.FormatVersion,
		ID:             manifest.NewBackupID(r.started),
		Label:          r.o.Label,
		ToolVersion:    r.o.ToolVersion,
		PGVersion:      sys.ServerVersion,
		SystemID:       sys.SystemID,
		StartTimeline:  start.Timeline,
		EndTimeline:    end.Timeline,
		StartLSN:       start.LSN,
		EndLSN:         end.LSN,
		WALSegmentSize: sys.WALSegmentSize,
		WAL:            wal,
		Archives:       r.archives,
		Files:          r.files,
		Totals: manifest.Totals{
			RawBytes:    stats.RawBytes,
			StoredBytes: stats.StoredBytes,
			NewBytes:    stats.NewBytes,
			Chunks:      stats.Chunks,
			NewChunks:   stats.NewChunks,
			Files:       len(r.files),
		},
		Timings: manifest.Timings{Started: r.started},
	}
	for _, ts := range start.Tablespaces {
		b.Tablespaces = append(b.Tablespaces, manifest.Tablespace{OID: ts.OID, Location: ts.Location})
	}
	for _, w := range wal {
		b.Totals.WALBytes += w.StoredSize
	}
	if r.plan.blockSize > 0 {
		b.BlockSize = r.plan.blockSize
	}
	if r.synth != nil {
		p := r.plan.parent
		b.FormatVersion = manifest.FormatVersionIncremental
		b.Incremental = &manifest.Incremental{
			Parent: p.ID, ParentStartLSN: p.StartLSN, FullStarted: r.plan.fullStarted.UTC(),
			SentBytes: r.sentBytes, IncrementalFiles: r.synth.IncrementalFiles, ChangedBlocks: r.synth.ChangedBlocks,
		}
		b.Totals.RawBytes, b.Totals.StoredBytes, b.Totals.Chunks = incrementalTotals(r.archives)
		b.Totals.NewBytes += r.sink.newBytes
		b.Totals.NewChunks += len(r.sink.written)
	}
	b.Timings.Finished = r.o.Now().UTC()
	return b
}

// commit writes the manifest, the commit point, if the lease held or
// everything b references is still stored.
func (r *backupRun) commit(ctx context.Context, b *manifest.Backup) error {
	r.prog.phase(PhaseCommitting)
	if err := r.lease.Held(); err != nil {
		// A gc may have judged this backup dead: commit only if nothing
		// it references was taken.
		r.log.Warn("backup lease lapsed; checking that every referenced object is still stored", "err", err)
		if err := r.repo.CheckStored(ctx, b); err != nil {
			return fmt.Errorf("%w; %w; take the backup again", err, r.lease.Held())
		}
	} else if b.Incremental != nil {
		// An incremental backup's unchanged blocks are the parent's
		// chunks, which nothing re-read: one that verify --repair has
		// quarantined since, or that was lost, would be referenced again
		// and found missing only by a restore. One listing rules it out.
		if err := r.repo.CheckStored(ctx, b); err != nil {
			return fmt.Errorf("%w; take a full backup (--type full)", err)
		}
	}
	// Ids have one-second resolution; a backup that ends in the same
	// second as another started takes the next free second.
	for attempt := 0; ; attempt++ {
		err := r.repo.Commit(ctx, b, io.NewSectionReader(r.pgm, 0, r.pgmSize))
		if err == nil {
			break
		}
		if !errors.Is(err, repository.ErrIDTaken) {
			r.uncommitted = b.ID
			r.commitUnknown = errors.Is(err, repository.ErrCommitUnknown)
			return err
		}
		if attempt >= 10 {
			return err
		}
		t, _ := time.Parse("20060102T150405Z", b.ID)
		b.ID = manifest.NewBackupID(t.Add(time.Second))
	}
	r.prog.phase(PhaseDone)
	r.log.Info("backup committed", "id", b.ID, "type", typeOf(b), "raw_bytes", b.Totals.RawBytes, "stored_bytes", b.Totals.StoredBytes,
		"new_bytes", b.Totals.NewBytes, "wal_segments", len(b.WAL), "seconds", b.Timings.Finished.Sub(r.started).Seconds())
	return nil
}

// tablespaceOf maps an archive to its tablespace: base.tar is the data
// directory, <oid>.tar a tablespace the server listed.
func tablespaceOf(a *replication.Archive, tss []replication.Tablespace) (uint32, string, error) {
	if a.Name == "base.tar" {
		return 0, "", nil
	}
	oid, err := strconv.ParseUint(strings.TrimSuffix(a.Name, ".tar"), 10, 32)
	if err != nil {
		return 0, "", fmt.Errorf("server sent unexpected archive %q", a.Name)
	}
	for _, ts := range tss {
		if ts.OID == uint32(oid) {
			return ts.OID, ts.Location, nil
		}
	}
	return 0, "", fmt.Errorf("server sent archive %q for a tablespace it did not list", a.Name)
}

// awaitWAL waits, up to timeout, for another archiver to store every
// segment, then reads each through to record its checksum (and to prove
// it is readable), holding none of it in memory.
// It says what it waits for when it starts waiting and every
// waitReportInterval after, not at every poll.
func awaitWAL(ctx context.Context, repo *repository.Repository, names []string, timeout time.Duration, hint string, log *slog.Logger) ([]manifest.WALSegment, error) {
	began := time.Now()
	deadline := began.Add(timeout)
	var nextReport time.Time
	var missing []string
	for {
		missing = missing[:0]
		for _, n := range names {
			ok, err := repo.HasWAL(ctx, n)
			if err != nil {
				return nil, fmt.Errorf("check WAL %s: %w", n, err)
			}
			if !ok {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("with --wal=none the WAL must be archived into %s by another process, but after %s these segments are still missing: %s%s",
				repo, timeout, strings.Join(missing, ", "), hint)
		}
		if now := time.Now(); !now.Before(nextReport) {
			log.Info("waiting for another process (archive_command, wal-receive) to archive the WAL the backup needs into the repository",
				"missing", len(missing), "first_missing", missing[0], "last_missing", missing[len(missing)-1],
				"waited", now.Sub(began).Round(time.Second).String(), "timeout", timeout.String())
			nextReport = now.Add(waitReportInterval)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	// Read through as a restore will read them, and recorded as read.
	cfg, err := repo.Config(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the configuration of %s: %w", repo, err)
	}
	out := make([]manifest.WALSegment, 0, len(names))
	dec := chunker.NewDecompressor()
	for _, n := range names {
		sum, err := repo.ReadWAL(ctx, dec, n, repository.WALWant{SegmentSize: cfg.WALSegmentSize}, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, manifest.WALSegment{Name: n, SHA256: sum.Hex(), StoredSize: sum.StoredSize})
	}
	return out, nil
}

// waitReportInterval is how often a backup waiting for WAL says so: it
// may wait minutes, with nothing else to show when progress is off.
const waitReportInterval = 30 * time.Second

func slotName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "pgstow_" + hex.EncodeToString(b[:])
}
