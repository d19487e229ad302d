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
	// streaming (BASE_BACKUP PROGRESS), so progress has a percentage. It
	// costs the server one pass of stat calls over the directory.
	EstimateSize bool
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
	// LeaseTTL is the backup lease's TTL (repository.DefaultLeaseTTL).
	LeaseTTL time.Duration
	// CleanupTimeout bounds the removal of what a failed backup stored
	// (DefaultCleanupTimeout).
	CleanupTimeout time.Duration
}

// Run takes one backup into repo and returns its committed manifest. A
// backup that fails after it began storing removes what it stored that
// nothing else uses, even when ctx was cancelled, and its error ends with
// one clause saying what it removed and what it left (removeLeftovers).
func Run(ctx context.Context, repo *repository.Repository, o Options) (_ *manifest.Backup, err error) {
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
		return nil, fmt.Errorf("WAL mode %q: use stream or none", o.WAL)
	}
	if o.WALTimeout <= 0 {
		o.WALTimeout = 5 * time.Minute
	}
	log := o.Log
	started := o.Now().UTC()
	prog := newProgressReporter(o)
	defer prog.stop()
	prog.phase(PhaseConnecting)

	conn, err := replication.Connect(ctx, o.DSN)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sys, err := conn.IdentifySystem(ctx)
	if err != nil {
		return nil, err
	}
	if err := repo.Bind(ctx, sys.SystemID, sys.WALSegmentSize); err != nil {
		return nil, err
	}
	// The lease is held from before the first chunk is deduplicated
	// against the store until after the commit, so delete and gc leave
	// alone every chunk this backup may reference (docs/catalog.md).
	lease, err := repo.TakeLease(ctx, repository.LockBackup, repository.LeaseOptions{Command: "backup", TTL: o.LeaseTTL, Log: log})
	if err != nil {
		return nil, err
	}
	var (
		up *uploader.Uploader
		// uncommitted is the id of a commit that failed, which may have
		// stored PostgreSQL's backup_manifest.
		uncommitted string
		// commitUnknown is set when that commit's manifest may still
		// land (repository.ErrCommitUnknown).
		commitUnknown bool
		walMu         sync.Mutex
		walSeg        = map[string]manifest.WALSegment{}
	)
	defer func() {
		lease.Release(ctx)
		if err == nil {
			return
		}
		left := leftovers{pgManifestOf: uncommitted, commitUnknown: commitUnknown, ownLease: lease.Key()}
		if up != nil {
			left.chunks = up.Written()
		}
		walMu.Lock()
		left.walSegments = len(walSeg)
		walMu.Unlock()
		if msg := removeLeftovers(ctx, repo, left, o); msg != "" {
			err = fmt.Errorf("%w; %s", err, msg)
		}
	}()
	// Deduplicated chunks carry the newest backup's record of their
	// stored bytes' CRC32C forward, for a full verify to compare. Read
	// under the lease, so that no delete or gc changes the chunks between
	// this read and the deduplication. Without it the backup still works:
	// those chunks are recorded without one.
	if o.Uploader.KnownCRC32C == nil {
		if known, err := repo.LatestChunkCRCs(ctx); err != nil {
			log.Warn("cannot read the newest backup's chunk checksums; deduplicated chunks are recorded without one", "error", err)
		} else {
			o.Uploader.KnownCRC32C = known
		}
	}
	log.Info("backup starting", "server", conn.Target(), "pg_version", sys.ServerVersion, "standby", sys.Standby,
		"system_id", sys.SystemID, "repo", repo.String(), "wal", string(o.WAL))

	var walConn *replication.Conn
	slot := ""
	if o.WAL == WALStream {
		walConn, err = replication.Connect(ctx, o.DSN)
		if err != nil {
			return nil, err
		}
		defer walConn.Close(context.WithoutCancel(ctx))
		slot = slotName()
		if err := walConn.CreateTemporarySlot(ctx, slot); err != nil {
			return nil, err
		}
	}

	prog.phase(PhaseCheckpoint)
	bb, err := conn.BaseBackup(ctx, replication.BackupOptions{
		Label:                    o.Label,
		Progress:                 o.EstimateSize,
		FastCheckpoint:           o.FastCheckpoint,
		MaxRate:                  o.MaxRate,
		SkipChecksumVerification: o.SkipChecksumVerification,
		Compression:              o.Compression,
		IdleTimeout:              o.IOTimeout,
		OnNotice: func(n *pgconn.PgError) {
			log.Warn("server notice", "severity", n.Severity, "message", n.Message)
		},
	})
	if err != nil {
		return nil, err
	}
	defer bb.Close()
	start := bb.Start()
	log.Info("base backup started", "start_lsn", start.LSN.String(), "timeline", start.Timeline,
		"tablespaces", len(start.Tablespaces))
	if start.TotalKB >= 0 {
		prog.estimate.Store(start.TotalKB * 1024)
	}

	g, gctx := errgroup.WithContext(ctx)
	endCh := make(chan manifest.LSN, 1)
	if o.WAL == WALStream {
		comp := chunker.NewCompressor()
		// store stores segment segName's bytes as object, which is the
		// segment's own name or, at a standby's end, its partial name.
		store := func(ctx context.Context, segName, object string, data *io.SectionReader) (manifest.WALSegment, error) {
			seg, err := repo.PutWALFrom(ctx, comp, object, data, data.Size())
			if err != nil {
				return seg, err
			}
			walMu.Lock()
			walSeg[segName] = seg
			walMu.Unlock()
			prog.walSegments.Add(1)
			return seg, nil
		}
		ws := &replication.WALStream{
			Slot:        slot,
			Timeline:    start.Timeline,
			SegmentSize: sys.WALSegmentSize,
			IdleTimeout: o.IOTimeout,
			SpoolDir:    repo.SpoolDir(),
			Waiting: func(w replication.WALWait) {
				log.Info("waiting for the last WAL segment the backup needs", "segment", w.Segment,
					"received_up_to", w.Received.String(), "needed_up_to", w.End.String(), "server_wal_end", w.ServerEnd.String(),
					"waited", w.Waited.Round(time.Second).String(), "timeout", w.Timeout.String())
			},
			Sink: func(ctx context.Context, name string, data *io.SectionReader) error {
				seg, err := store(ctx, name, name, data)
				if err == nil {
					log.Debug("WAL segment stored", "segment", name, "stored", seg.StoredSize)
				}
				return err
			},
		}
		if sys.Standby {
			// A standby cannot switch segments: store the last one up
			// to the end LSN rather than wait for it to fill.
			ws.EndPartial = func(ctx context.Context, name string, data *io.SectionReader) error {
				partial := manifest.PartialSegmentName(name, uint64(data.Size()))
				seg, err := store(ctx, name, partial, data)
				if err == nil {
					log.Info("last WAL segment stored up to the backup's end, as a standby cannot complete it", "segment", partial, "stored", seg.StoredSize)
				}
				return err
			}
		}
		g.Go(func() error {
			if err := ws.Run(gctx, walConn, start.LSN, endCh, o.WALTimeout); err != nil {
				if sys.Standby && errors.Is(err, replication.ErrStreamEnded) {
					return fmt.Errorf("the standby was promoted, or shut down, during the backup; nothing was committed; take the backup again (from the new primary or another standby): %w", err)
				}
				return fmt.Errorf("stream WAL: %w", err)
			}
			return nil
		})
	}

	// PostgreSQL's backup_manifest is staged on disk: with a hundred
	// thousand files it is tens of MB, read once to check and once to
	// store.
	pgmFile, err := spool.Create(repo.SpoolDir(), "pgstow-backup_manifest-*")
	if err != nil {
		return nil, fmt.Errorf("stage backup_manifest: %w", err)
	}
	defer pgmFile.Close()
	var (
		archives []manifest.Archive
		files    []manifest.File
		pgmSize  int64
		end      replication.End
	)
	if o.Uploader.ChunkID == nil {
		o.Uploader.ChunkID = repo.ChunkID
	}
	up = uploader.New(repo.Store(), o.Uploader, log)
	up.OnChunk = prog.chunk
	prog.attach(bb.Streamed, up.InFlight)
	prog.phase(PhaseStreaming)
	g.Go(func() error {
		// The stream reader cannot see gctx, so a WAL failure must abort
		// it by closing the connection.
		stop := context.AfterFunc(gctx, bb.Abort)
		defer stop()
		for {
			a, err := bb.NextArchive()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			oid, location, err := tablespaceOf(a, start.Tablespaces)
			if err != nil {
				return err
			}
			t0 := time.Now()
			arch, fs, err := up.Archive(gctx, a, len(archives), a.Name, oid)
			if err != nil {
				return err
			}
			log.Info("archive stored", "archive", a.Name, "location", location, "raw_bytes", arch.RawSize,
				"stored_bytes", arch.StoredSize, "chunks", len(arch.Chunks), "seconds", time.Since(t0).Seconds())
			archives = append(archives, arch)
			if files == nil {
				// Most clusters have one archive: take its records
				// rather than copy them (tens of MB with many files).
				files = fs
			} else {
				files = append(files, fs...)
			}
		}
		// The chunk buffers are done with: give their memory to the
		// manifests (large with many files) instead of adding to it.
		up.Release()
		runtime.GC()
		prog.phase(PhaseWAL)
		t0 := time.Now()
		if pgmSize, err = bb.ManifestTo(pgmFile); err != nil {
			return fmt.Errorf("receive backup_manifest: %w", err)
		}
		if end, err = bb.Finish(); err != nil {
			return err
		}
		log.Debug("backup_manifest received", "bytes", pgmSize, "seconds", time.Since(t0).Seconds())
		endCh <- end.LSN
		return nil
	})
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("backup interrupted (%w); nothing was committed", context.Cause(ctx))
		}
		return nil, err
	}
	bb.Close()
	log.Info("base backup ended", "end_lsn", end.LSN.String(), "timeline", end.Timeline)

	if end.Timeline != start.Timeline {
		return nil, fmt.Errorf("the server's timeline changed during the backup (%d to %d), which pgstow does not support yet; take the backup again", start.Timeline, end.Timeline)
	}
	pg, err := manifest.ParsePGManifestFrom(bufio.NewReaderSize(io.NewSectionReader(pgmFile, 0, pgmSize), 64<<10))
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL's backup_manifest: %w", err)
	}
	if err := manifest.CrossCheck(pg, files, archives); err != nil {
		return nil, fmt.Errorf("the stream does not match PostgreSQL's backup_manifest: %w", err)
	}
	names, err := manifest.RequiredSegments(start.Timeline, start.LSN, end.LSN, sys.WALSegmentSize)
	if err != nil {
		return nil, err
	}
	var wal []manifest.WALSegment
	if o.WAL == WALStream {
		for _, n := range names {
			seg, ok := walSeg[n]
			if !ok {
				return nil, fmt.Errorf("WAL segment %s was not stored by the stream", n)
			}
			wal = append(wal, seg)
		}
	} else {
		hint := ""
		if sys.Standby {
			hint = "; a standby's last segment is archived only once the primary fills it, so back a standby up with --wal=stream (the default), which stores the part of it the backup needs"
		}
		wal, err = awaitWAL(ctx, repo, names, o.WALTimeout, hint, log)
		if err != nil {
			return nil, err
		}
	}

	stats := up.Stats()
	w := up.Waits()
	log.Info("pipeline stage times (seconds, summed over each stage's goroutines)", "cutter_reading", w.CutterRead.Seconds(), "cutter_blocked", w.CutterBlocked.Seconds(),
		"sealers_busy", w.SealBusy.Seconds(), "sealers_idle", w.SealIdle.Seconds(), "sealers_blocked", w.SealBlocked.Seconds(),
		"uploads_busy", w.UploadBusy.Seconds(), "uploads_idle", w.UploadIdle.Seconds(),
		"sealers", up.Config().SealWorkers, "uploaders", up.Config().Concurrency)
	b := &manifest.Backup{
		FormatVersion:  manifest.FormatVersion,
		ID:             manifest.NewBackupID(started),
		Label:          o.Label,
		ToolVersion:    o.ToolVersion,
		PGVersion:      sys.ServerVersion,
		SystemID:       sys.SystemID,
		StartTimeline:  start.Timeline,
		EndTimeline:    end.Timeline,
		StartLSN:       start.LSN,
		EndLSN:         end.LSN,
		WALSegmentSize: sys.WALSegmentSize,
		WAL:            wal,
		Archives:       archives,
		Files:          files,
		Totals: manifest.Totals{
			RawBytes:    stats.RawBytes,
			StoredBytes: stats.StoredBytes,
			NewBytes:    stats.NewBytes,
			Chunks:      stats.Chunks,
			NewChunks:   stats.NewChunks,
			Files:       len(files),
		},
		Timings: manifest.Timings{Started: started},
	}
	for _, ts := range start.Tablespaces {
		b.Tablespaces = append(b.Tablespaces, manifest.Tablespace{OID: ts.OID, Location: ts.Location})
	}
	for _, w := range wal {
		b.Totals.WALBytes += w.StoredSize
	}
	b.Timings.Finished = o.Now().UTC()
	prog.phase(PhaseCommitting)
	if err := lease.Held(); err != nil {
		// A gc may have judged this backup dead: commit only if nothing
		// it references was taken.
		log.Warn("backup lease lapsed; checking that every referenced object is still stored", "err", err)
		if err := repo.CheckStored(ctx, b); err != nil {
			return nil, fmt.Errorf("%w; %w; take the backup again", err, lease.Held())
		}
	}
	// Ids have one-second resolution; a backup that ends in the same
	// second as another started takes the next free second.
	for attempt := 0; ; attempt++ {
		err := repo.Commit(ctx, b, io.NewSectionReader(pgmFile, 0, pgmSize))
		if err == nil {
			break
		}
		if !errors.Is(err, repository.ErrIDTaken) {
			uncommitted = b.ID
			commitUnknown = errors.Is(err, repository.ErrCommitUnknown)
			return nil, err
		}
		if attempt >= 10 {
			return nil, err
		}
		t, _ := time.Parse("20060102T150405Z", b.ID)
		b.ID = manifest.NewBackupID(t.Add(time.Second))
	}
	prog.phase(PhaseDone)
	log.Info("backup committed", "id", b.ID, "raw_bytes", stats.RawBytes, "stored_bytes", stats.StoredBytes,
		"new_bytes", stats.NewBytes, "wal_segments", len(wal), "seconds", b.Timings.Finished.Sub(started).Seconds())
	return b, nil
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
