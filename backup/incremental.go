package backup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/incremental"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/replication"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/spool"
)

// Type says which kind of backup to take.
type Type string

const (
	// TypeAuto takes an incremental backup when the server and the
	// repository allow it, and a full one otherwise, saying why.
	TypeAuto Type = "auto"
	// TypeFull always takes a full backup.
	TypeFull Type = "full"
	// TypeIncremental takes an incremental backup or fails before
	// streaming (ErrIncrementalUnavailable).
	TypeIncremental Type = "incremental"
)

// DefaultFullEvery is how old the full backup an incremental descends
// from may be before auto takes a full one again.
const DefaultFullEvery = 7 * 24 * time.Hour

// maxFragmentation is the most an incremental's parent may read to
// restore, as the raw bytes of the distinct chunks it references over the
// bytes it describes, for auto to build on it: past that, restores read
// too much that they throw away, and a full backup starts over.
const maxFragmentation = 1.5

// minIncrementalVersion is the first PostgreSQL with incremental
// backups (and the one whose backups record block CRCs).
const minIncrementalVersion = 170000

// ErrIncrementalUnavailable is returned for --type incremental when no
// incremental backup can be taken; nothing was stored.
var ErrIncrementalUnavailable = errors.New("cannot take an incremental backup")

// incrementalPlan is what choose decided.
type incrementalPlan struct {
	// settings are the server's (PostgreSQL 17+, when read), blockSize
	// set when the backup records block CRCs.
	settings  replication.Settings
	blockSize int
	// parent is set for an incremental backup, with its files.
	parent      *manifest.Backup
	fullStarted time.Time
	collector   *incremental.Collector
}

// choose decides between a full and an incremental backup, before
// anything is streamed, and says why when it takes a full one under
// auto; under --type incremental, a reason is an error.
func (r *backupRun) choose(ctx context.Context) error {
	reason, err := r.chooseParent(ctx)
	if err != nil {
		return err
	}
	if r.plan.blockSize > 0 {
		r.plan.collector = incremental.NewCollector(r.plan.blockSize, r.plan.settings.RelsegBlocks())
	}
	switch {
	case reason == "":
		r.log.Info("incremental backup", "parent", r.plan.parent.ID, "parent_start_lsn", r.plan.parent.StartLSN.String(),
			"full_started", r.plan.fullStarted.Format(time.RFC3339))
	case r.o.Type == TypeIncremental:
		return fmt.Errorf("--type incremental: %w: %s", ErrIncrementalUnavailable, reason)
	default:
		r.log.Info("full backup", "reason", reason)
	}
	return nil
}

// chooseParent reads the server's settings and finds the parent; it
// returns why a full backup is taken instead, or "".
func (r *backupRun) chooseParent(ctx context.Context) (string, error) {
	v := r.sys.ServerVersion
	if v < minIncrementalVersion {
		return fmt.Sprintf("the server is PostgreSQL %d, and incremental backups need PostgreSQL 17 or later", v/10000), nil
	}
	s, err := r.conn.Settings(ctx)
	if err != nil {
		if r.o.Type == TypeIncremental {
			return "", err
		}
		r.log.Warn("cannot read the server's settings; the backup records no block checksums, so the next one is full too", "error", err)
		return fmt.Sprintf("cannot read the server's settings (%v)", err), nil
	}
	if s.BlockSize <= 0 || s.BlockSize%512 != 0 || s.RelsegBlocks() <= 0 {
		return fmt.Sprintf("the server reports block_size %d and segment_size %d", s.BlockSize, s.SegmentSize), nil
	}
	r.plan.settings, r.plan.blockSize = s, s.BlockSize
	if r.o.Type == TypeFull {
		return "--type full", nil
	}
	if !s.SummarizeWAL {
		return "summarize_wal is off on the server (set summarize_wal = on for incremental backups)", nil
	}
	parent, reason, err := r.findParent(ctx, v, s.BlockSize)
	if err != nil || reason != "" {
		return reason, err
	}
	full := parent.Timings.Started
	if parent.Incremental != nil {
		full = parent.Incremental.FullStarted
	}
	if age := r.started.Sub(full); age >= r.o.FullEvery {
		return fmt.Sprintf("the full backup that backup %s descends from started %s ago (--full-every %s)", parent.ID, age.Round(time.Minute), r.o.FullEvery), nil
	}
	if f := fragmentation(parent); f > maxFragmentation {
		return fmt.Sprintf("restoring an incremental of backup %s would read %.2f× the bytes it describes (over %.1f×)", parent.ID, f, maxFragmentation), nil
	}
	r.plan.parent, r.plan.fullStarted = parent, full
	return "", nil
}

// findParent returns the newest committed backup of a server of the same
// major with the same block size whose relation files carry block CRCs,
// with its files.
func (r *backupRun) findParent(ctx context.Context, version, blockSize int) (*manifest.Backup, string, error) {
	ids, err := r.repo.BackupIDs(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("list backups for a parent: %w", err)
	}
	for i := len(ids) - 1; i >= 0; i-- {
		b, err := r.latest, error(nil)
		if b == nil || b.ID != ids[i] {
			b, err = r.repo.BackupWithoutFiles(ctx, ids[i])
		}
		if errors.Is(err, providers.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, "", fmt.Errorf("read backup %s for a parent: %w", ids[i], err)
		}
		if b.PGVersion/10000 != version/10000 || b.BlockSize != blockSize || b.SystemID != r.sys.SystemID {
			continue
		}
		full, err := r.repo.Backup(ctx, b.ID)
		if err != nil {
			return nil, "", fmt.Errorf("read backup %s, the parent: %w", b.ID, err)
		}
		return full, "", nil
	}
	return nil, fmt.Sprintf("no earlier backup of this PostgreSQL %d server records block checksums (backups by pgstow before format 1.3, or none yet)", version/10000), nil
}

// fragmentation is what a restore of b reads, the raw bytes of the
// distinct chunks it references, over what it describes.
func fragmentation(b *manifest.Backup) float64 {
	seen := map[string]bool{}
	var read, described int64
	for _, a := range b.Archives {
		described += a.RawSize
		for _, c := range a.Chunks {
			if !seen[c.ID] {
				seen[c.ID] = true
				read += c.RawSize
			}
		}
	}
	if described == 0 {
		return 1
	}
	return float64(read) / float64(described)
}

// startIncremental sends the parent's backup_manifest and starts an
// incremental BASE_BACKUP. A server that refuses it (ErrIncrementalRefused,
// before any archive byte) gets, under auto, a full BASE_BACKUP instead,
// with the one line saying why.
func (r *backupRun) startIncremental(ctx context.Context, opts replication.BackupOptions) (archiveSource, error) {
	f, err := spool.Create(r.repo.SpoolDir(), "pgstow-parent-manifest-*")
	if err != nil {
		return nil, fmt.Errorf("stage the parent's backup_manifest: %w", err)
	}
	defer f.Close()
	n, err := r.repo.PGManifestTo(ctx, r.plan.parent, f)
	if err != nil {
		return nil, fmt.Errorf("read backup %s's backup_manifest, to send to the server: %w", r.plan.parent.ID, err)
	}
	err = r.conn.UploadManifest(ctx, io.NewSectionReader(f, 0, n))
	var bb archiveSource
	if err == nil {
		opts.Incremental = true
		bb, err = r.conn.BaseBackup(ctx, opts)
	}
	if err == nil || !errors.Is(err, replication.ErrIncrementalRefused) {
		return bb, err
	}
	if r.o.Type == TypeIncremental {
		return nil, fmt.Errorf("--type incremental: %w: %w", ErrIncrementalUnavailable, err)
	}
	r.log.Info("full backup", "reason", "the server refused an incremental backup from "+r.plan.parent.ID+": "+err.Error())
	r.plan.parent = nil
	opts.Incremental = false
	return r.conn.BaseBackup(ctx, opts)
}

// observer gives the uploader's splitters the block CRC collector.
func (r *backupRun) observer() func(int, uint32) func(string, int64, int64, int64) chunker.MemberObserver {
	if r.plan.collector == nil {
		return nil
	}
	return func(index int, oid uint32) func(string, int64, int64, int64) chunker.MemberObserver {
		return r.plan.collector.Observer(index, oid != 0)
	}
}

// synthesize turns the incremental stream into a synthetic full backup:
// the virtual archives and whole files, and PostgreSQL's backup_manifest
// rewritten to match them (which restore writes into the data directory,
// and the next incremental sends to the server).
func (r *backupRun) synthesize(ctx context.Context) error {
	if r.plan.parent == nil {
		return nil
	}
	t0 := time.Now()
	r.sentBytes = r.bb.Streamed()
	res, err := incremental.Synthesize(ctx, incremental.Params{
		Parent: r.plan.parent, BlockSize: r.plan.blockSize,
		Archives: r.archives, Files: r.files, Collector: r.plan.collector, Sink: r.sink,
	})
	if err != nil {
		return fmt.Errorf("assemble the incremental backup from %s: %w", r.plan.parent.ID, err)
	}
	out, err := spool.Create(r.repo.SpoolDir(), "pgstow-backup_manifest-*")
	if err != nil {
		return fmt.Errorf("stage the rewritten backup_manifest: %w", err)
	}
	cw := &countWriter{w: out}
	if err := res.RewritePGManifest(io.NewSectionReader(r.pgm, 0, r.pgmSize), cw); err != nil {
		out.Close()
		return fmt.Errorf("rewrite PostgreSQL's backup_manifest for the assembled files: %w", err)
	}
	// The assembled files against the rewritten manifest: what restore
	// writes, and pg_verifybackup then checks.
	pg, err := manifest.ParsePGManifestFrom(bufio.NewReaderSize(io.NewSectionReader(out, 0, cw.n), 64<<10))
	if err == nil {
		err = manifest.CrossCheck(pg, res.Files, res.Archives)
	}
	if err != nil {
		out.Close()
		return fmt.Errorf("the assembled files against the rewritten backup_manifest: %w", err)
	}
	r.pgm.Close()
	r.pgm, r.pgmSize = out, cw.n
	r.archives, r.files, r.synth = res.Archives, res.Files, res
	r.log.Info("incremental backup assembled", "parent", r.plan.parent.ID, "incremental_files", res.IncrementalFiles,
		"changed_blocks", res.ChangedBlocks, "new_chunks", len(res.Stored), "seconds", time.Since(t0).Seconds())
	return nil
}

// countWriter counts the bytes written through it: the size of the
// rewritten backup_manifest, which the spool file does not report. (The
// repository's countingReader is a reader, and unexported.)
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// chunkSink stores the few new bytes of an incremental backup (tar
// headers, backup_label, zeros) as chunks, through the repository as the
// uploader does, and counts them.
type chunkSink struct {
	repo  *repository.Repository
	comp  *chunker.Compressor
	known func(id string) (uint32, bool)
	// written are the chunks it stored, for a failed backup's cleanup.
	written  []manifest.ChunkRef
	newBytes int64
}

func (s *chunkSink) Store(ctx context.Context, data []byte) (manifest.ChunkRef, error) {
	id := s.repo.ChunkID(data)
	ref := manifest.ChunkRef{ID: id, RawSize: int64(len(data)), Codec: "lz4"}
	size, found, err := s.repo.HasChunk(ctx, id)
	if err != nil {
		return ref, fmt.Errorf("check chunk %s: %w", id[:12], err)
	}
	if found {
		ref.StoredSize = size
		if s.known != nil {
			if crc, ok := s.known(id); ok {
				ref.StoredCRC32C = &crc
			}
		}
		return ref, nil
	}
	frame, crc, err := s.comp.Append(nil, data)
	if err != nil {
		return ref, fmt.Errorf("compress chunk %s: %w", id[:12], err)
	}
	ref.StoredSize = int64(len(frame))
	stored, err := s.repo.PutChunk(ctx, id, frame, crc)
	s.written = append(s.written, manifest.ChunkRef{ID: id, StoredSize: ref.StoredSize})
	if err != nil {
		return ref, fmt.Errorf("upload chunk %s: %w", id[:12], err)
	}
	if stored {
		ref.StoredCRC32C = &crc
		s.newBytes += ref.StoredSize
	} else {
		s.written = s.written[:len(s.written)-1]
	}
	return ref, nil
}

// incrementalTotals counts an incremental backup: raw bytes described,
// the distinct chunks referenced and their stored size.
func incrementalTotals(archives []manifest.Archive) (raw, stored int64, chunks int) {
	seen := map[string]bool{}
	for _, a := range archives {
		raw += a.RawSize
		for _, c := range a.Chunks {
			if !seen[c.ID] {
				seen[c.ID] = true
				stored += c.StoredSize
				chunks++
			}
		}
	}
	return raw, stored, chunks
}

// typeOf names a backup's kind for messages.
func typeOf(b *manifest.Backup) string {
	if b.Incremental != nil {
		return string(TypeIncremental)
	}
	return string(TypeFull)
}
