// Package restore turns a committed backup back into a PostgreSQL data
// directory: it downloads and verifies every chunk, extracts the archives
// through os.Root so that nothing lands outside the directories chosen
// before the first write, places the WAL the backup needs (or a
// restore_command that fetches it), makes everything durable, and writes
// global/pg_control last, so that an interrupted restore can never pass
// for a complete one.
package restore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/spool"
)

// WALMode says how the restored directory gets the WAL it needs to reach
// consistency.
type WALMode string

const (
	// WALEmbed writes the backup's WAL segments into pg_wal/, so the
	// directory starts on its own (what seeding a CI database wants).
	WALEmbed WALMode = "embed"
	// WALFetch writes recovery.signal and a restore_command instead, so
	// PostgreSQL fetches the WAL itself (and can replay past the backup).
	WALFetch WALMode = "fetch"
)

// DefaultConcurrency is the number of chunks downloaded ahead of the
// writer when Options.Concurrency is not set: on a local store 4 is as
// fast as 8 with 30 MiB less memory (docs/tuning.md); remote stores with
// high latency want more.
const DefaultConcurrency = 4 // docs/tuning.md: as fast as 8 on file://, under 160 MiB

// Options configure one restore.
type Options struct {
	// BackupID is a backup id or "latest".
	BackupID string
	// Target is the data directory to create; it must not exist or be
	// empty.
	Target string
	// Tablespaces remaps tablespaces: oid -> new location. Tablespaces not
	// listed go to the location recorded in the backup.
	Tablespaces map[uint32]string
	// WAL is the WAL mode; empty means WALEmbed.
	WAL WALMode
	// RestoreCommand is the restore_command written with WALFetch, built
	// by the caller (it knows its own path and the repository URL).
	RestoreCommand string
	// Recovery, with WALFetch, sets a point-in-time recovery target; with
	// BackupID empty or "latest" the backup is chosen to reach it.
	Recovery *Recovery
	// Concurrency is the number of chunks downloaded and decompressed
	// ahead of the writer (default DefaultConcurrency). Memory is about
	// Concurrency × (largest chunk raw + stored size).
	Concurrency int
	// SyncMethod says how the files are made durable before pg_control
	// is written (default SyncAuto).
	SyncMethod SyncMethod
	// Standby makes the restored directory a standby: standby.signal is
	// kept (a backup of a standby has it) or written. Without it a
	// backup of a standby is restored as a primary (see asPrimary).
	Standby bool
	// Delta restores into a Target that holds a stopped cluster of the
	// backup's system: files found right are kept, the rest fetched, what
	// the backup lacks removed. An absent or empty Target gets a normal
	// restore. Tablespace directories may hold the old tablespaces.
	Delta bool
	// DeltaCheck says how Delta judges a local file unchanged (default
	// DeltaChecksum).
	DeltaCheck DeltaCheck
	// Databases, when set, restores only these databases' relation
	// files, with template0's, template1's and postgres's; the other
	// databases' are written as sparse placeholders of their recorded
	// size, so the server starts and they can be dropped.
	Databases []string
	// listDatabases reads pg_database (pgdata.Databases when nil); tests
	// set it.
	listDatabases func(pgDatabase []byte, xact pgdata.XactStatusFunc) ([]pgdata.Database, error)
	// editBackup, when set, changes the manifest once read; tests set
	// it to restore layouts a stored manifest cannot (yet) express.
	editBackup func(b *manifest.Backup)
	// LeaseTTL is the restore lease's TTL (repository.DefaultLeaseTTL).
	LeaseTTL time.Duration
	// Log receives progress and summary lines; nil discards them.
	Log *slog.Logger
	// Progress, if set, is called about every second and once at the end,
	// from one goroutine at a time.
	Progress func(Progress)
}

// Progress is a snapshot of a running restore. Bytes are raw archive
// bytes, counted as the writer consumes each verified chunk.
type Progress struct {
	BytesDone, BytesTotal   int64
	ChunksDone, ChunksTotal int
	Elapsed                 time.Duration
	// Ranged is set for a delta restore or one of chosen databases:
	// BytesDone and BytesTotal then count the chunks fetched, BytesTotal
	// staying 0 until every file has been looked at; BytesKept is the
	// local bytes found right so far, BytesPlaceholder the recorded size
	// of the placeholder files.
	Ranged                      bool
	BytesKept, BytesPlaceholder int64
}

// Result describes a finished restore.
type Result struct {
	Backup *manifest.Backup
	// Files is the number of regular files restored from the archives.
	Files int
	// Bytes is the content size of those files.
	Bytes int64
	// WALSegments is the number of WAL files written into pg_wal/.
	WALSegments int
	// FromStandby is true when the backup carried standby.signal (it was
	// taken from a standby) and, without Options.Standby, the restore
	// removed it and cleared primary_conninfo.
	FromStandby bool
	// TablespaceDirs are the directories the tablespaces were restored
	// into, remapped or not, in the manifest's order: what a server
	// started on the result must be allowed to use.
	TablespaceDirs []string
	// FilesKept, FilesRewritten, EntriesRemoved and Placeholders count,
	// for a delta or database restore, the files found right, the files
	// written (whole or in part), the local entries the backup lacks
	// that were removed, and the placeholder files.
	FilesKept, FilesRewritten, EntriesRemoved, Placeholders int
	// BytesKept is the local bytes found right (delta restore);
	// BytesFetched the archive bytes taken from the chunks downloaded
	// (every restore; a chunk an incremental backup slices several
	// times is downloaded once while its uses are close).
	BytesKept, BytesFetched int64
	Elapsed                 time.Duration
}

// maxChunkBytes bounds the raw and stored size of one chunk. pgstow cuts
// 16 MiB chunks by default; a manifest claiming more than this is corrupt
// or hostile, and refusing it keeps the memory budget meaningful.
const maxChunkBytes = 1 << 30

// pgControlPath is written last: PostgreSQL cannot start a directory
// without it, so its absence marks an incomplete restore.
const pgControlPath = "global/pg_control"

// tablespaceMapPath is the file through which PostgreSQL recreates the
// pg_tblspc links when it starts from a backup taken with TABLESPACE_MAP.
const tablespaceMapPath = "tablespace_map"

// Run restores one backup from repo into o.Target. Every destination is
// checked before anything is written; a failure after that leaves a
// directory without global/pg_control, which the error says must be
// removed.
func Run(ctx context.Context, repo *repository.Repository, o Options) (*Result, error) {
	started := time.Now()
	if o.Target == "" {
		return nil, errors.New("restore: no target directory given")
	}
	if err := o.setDefaults(); err != nil {
		return nil, fmt.Errorf("restore into %s: %w", o.Target, err)
	}
	var (
		b   *manifest.Backup
		err error
	)
	if o.Recovery != nil && (o.BackupID == "" || o.BackupID == "latest") {
		b, err = ChooseBackup(ctx, repo, o.Recovery)
	} else {
		b, err = repo.Backup(ctx, o.BackupID)
	}
	if err != nil {
		return nil, fmt.Errorf("restore into %s: %w", o.Target, err)
	}
	if o.editBackup != nil {
		o.editBackup(b)
	}
	// The lease keeps delete and gc off this backup's objects until the
	// restore has read them all.
	lease, err := holdLease(ctx, repo, b.ID, o)
	if err != nil {
		return nil, fmt.Errorf("restore into %s: %w", o.Target, err)
	}
	if lease != nil {
		defer lease.Release(ctx)
	}
	// PostgreSQL's backup_manifest is downloaded once, into a spool file
	// (tens of MB with many files, so not held): checked there against
	// its recorded hash and the backup's files before anything is
	// written, which refuses one edited or damaged since the backup, and
	// copied into the target from there.
	pgm, err := spool.Create(repo.SpoolDir(), "pgstow-backup_manifest-*")
	if err != nil {
		return nil, fmt.Errorf("restore into %s: stage backup_manifest: %w", o.Target, err)
	}
	defer pgm.Close()
	pgmSize, err := repo.PGManifestTo(ctx, b, pgm)
	if err != nil {
		return nil, fmt.Errorf("restore into %s: %w", o.Target, err)
	}
	pg, err := manifest.ParsePGManifestFrom(bufio.NewReaderSize(io.NewSectionReader(pgm, 0, pgmSize), 64<<10))
	if err != nil {
		return nil, fmt.Errorf("restore into %s: backup %s: %w", o.Target, b.ID, err)
	}
	if err := manifest.CrossCheck(pg, b.Files, b.Archives); err != nil {
		return nil, fmt.Errorf("restore into %s: backup %s: %w", o.Target, b.ID, err)
	}
	p, err := newPlan(b, o)
	if err != nil {
		return nil, fmt.Errorf("restore into %s: backup %s: %w", o.Target, b.ID, err)
	}
	if o.Delta {
		if p.delta, err = checkDeltaTarget(p.target, b.SystemID); err != nil {
			return nil, fmt.Errorf("delta restore into %s refused: %w", p.target, err)
		}
		if !p.delta {
			o.Log.Info("delta restore: the target is absent or empty, so this is a normal restore", "target", p.target)
		}
	}
	if !p.delta {
		if err := p.checkDestinations(); err != nil {
			return nil, fmt.Errorf("restore into %s: %w", p.target, err)
		}
	}
	var keepDB map[uint32]bool
	if len(o.Databases) > 0 {
		if keepDB, err = chooseDatabases(ctx, repo, p, o); err != nil {
			return nil, fmt.Errorf("restore into %s: backup %s: %w", p.target, b.ID, err)
		}
	}
	if p.delta {
		// The first change: from here the directory cannot start
		// until pg_control is written last.
		if err := startDelta(p.target); err != nil {
			return nil, p.incomplete(err)
		}
	}
	// Decoding the manifests and the cross-check leave tens of MB of
	// garbage with many files, in small objects whose pages the
	// pipeline's large buffers cannot reuse: collect it and give the
	// pages back now, so that they do not add to the peak.
	debug.FreeOSMemory()

	r := newRestorer(repo, o, p)
	r.keepDB = keepDB
	r.pgManifest = io.NewSectionReader(pgm, 0, pgmSize)
	o.Log.Info("restore starting", "backup", b.ID, "repo", repo.String(), "target", p.target,
		"archives", len(b.Archives), "chunks", p.chunks, "raw_bytes", p.rawBytes,
		"wal", string(o.WAL), "wal_segments", len(b.WAL), "concurrency", o.Concurrency,
		"memory_budget_bytes", int64(o.Concurrency)*(p.maxChunkRaw+p.maxChunkStored))
	res, err := r.run(ctx, started)
	lapsed := leaseLapsed(lease)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.Cause(ctx)) {
			err = fmt.Errorf("interrupted (%w) after: %v", context.Cause(ctx), err)
		}
		if lapsed != nil {
			// A missing object is then likely a delete's doing.
			err = fmt.Errorf("%w; %w, so a delete or gc may have removed what was still to be read", err, lapsed)
		}
		return nil, p.incomplete(err)
	}
	if lapsed != nil {
		// Every chunk, file and WAL segment was read and verified
		// against its hash after all: what a delete had removed would
		// have failed the restore, so the directory is complete.
		msg := "the restore lease lapsed, so a delete or gc may have treated this restore as dead; everything it read was verified, so the restore is complete"
		if o.WAL == WALFetch {
			msg += ", but the WAL that PostgreSQL fetches from now on may have gone with the backup: check that pgstow list still shows it"
		}
		o.Log.Warn(msg, "backup", b.ID, "err", lapsed)
	}
	return res, nil
}

// setDefaults fills in defaults and refuses options that cannot work.
func (o *Options) setDefaults() error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Delta && len(o.Databases) > 0 {
		return ErrDeltaWithDatabases
	}
	var err error
	if o.DeltaCheck, err = ParseDeltaCheck(string(o.DeltaCheck)); err != nil {
		return err
	}
	if o.Recovery != nil && o.WAL != WALFetch {
		return errors.New("a recovery target needs the WAL fetched from the archive (--wal=fetch)")
	}
	switch o.WAL {
	case "":
		o.WAL = WALEmbed
	case WALEmbed:
	case WALFetch:
		if o.Recovery != nil {
			if err := o.Recovery.Validate(); err != nil {
				return err
			}
		}
		if o.RestoreCommand == "" {
			return errors.New("WAL mode fetch needs a restore_command")
		}
		if strings.ContainsAny(o.RestoreCommand, "\n\r\x00") {
			return fmt.Errorf("restore_command %q contains a line break or NUL, which postgresql.auto.conf cannot hold", o.RestoreCommand)
		}
	default:
		return fmt.Errorf("WAL mode %q: use %s or %s", o.WAL, WALEmbed, WALFetch)
	}
	return nil
}

// plan is every decision made before the first write: where each archive
// goes and which members each archive may hold.
type plan struct {
	b      *manifest.Backup
	target string // absolute
	// tsDirs maps every tablespace of the backup to its absolute
	// destination; remapped says which ones the caller moved.
	tsDirs   map[uint32]string
	remapped map[uint32]bool
	tsOrder  []uint32 // b.Tablespaces order, for stable messages
	// base is the index of the data directory's archive.
	base int
	// delta: the target holds the backup's cluster, which a delta
	// restore refreshes (checkDeltaTarget).
	delta bool
	// members lists, for each archive, the indexes into b.Files of its
	// members sorted by memberKey, for lookup by binary search (find):
	// with 121,000 files that is half a megabyte, where maps of path to
	// index took several.
	members [][]int32
	// chunkOffsets[a][i] is where chunk i starts within archive a.
	chunkOffsets [][]int64

	chunks                      int
	rawBytes                    int64
	maxChunkRaw, maxChunkStored int64
}

func newPlan(b *manifest.Backup, o Options) (*plan, error) {
	target, err := filepath.Abs(o.Target)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", o.Target, err)
	}
	p := &plan{
		b:        b,
		target:   target,
		tsDirs:   make(map[uint32]string, len(b.Tablespaces)),
		remapped: make(map[uint32]bool),
	}
	for _, ts := range b.Tablespaces {
		if ts.OID == 0 {
			return nil, errors.New("tablespace with oid 0 in the manifest")
		}
		if _, dup := p.tsDirs[ts.OID]; dup {
			return nil, fmt.Errorf("tablespace %d is listed twice in the manifest", ts.OID)
		}
		dir := ts.Location
		if m, ok := o.Tablespaces[ts.OID]; ok {
			if m == "" {
				return nil, fmt.Errorf("tablespace %d: empty remap location", ts.OID)
			}
			if dir, err = filepath.Abs(m); err != nil {
				return nil, fmt.Errorf("tablespace %d: location %s: %w", ts.OID, m, err)
			}
			p.remapped[ts.OID] = dir != filepath.Clean(ts.Location)
		} else if !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("tablespace %d: recorded location %q is not absolute; remap it", ts.OID, dir)
		}
		p.tsDirs[ts.OID] = filepath.Clean(dir)
		p.tsOrder = append(p.tsOrder, ts.OID)
	}
	for oid := range o.Tablespaces {
		if _, ok := p.tsDirs[oid]; !ok {
			return nil, fmt.Errorf("tablespace %d given to remap, but the backup has no such tablespace (it has %s)", oid, p.tablespaceList())
		}
	}
	if err := p.checkOverlaps(); err != nil {
		return nil, err
	}

	base := -1
	for i, a := range b.Archives {
		switch {
		case a.TablespaceOID == 0 && base >= 0:
			return nil, fmt.Errorf("archives %s and %s both belong to the data directory", b.Archives[base].Name, a.Name)
		case a.TablespaceOID == 0:
			base = i
		default:
			if _, ok := p.tsDirs[a.TablespaceOID]; !ok {
				return nil, fmt.Errorf("archive %s belongs to tablespace %d, which the manifest does not list", a.Name, a.TablespaceOID)
			}
		}
		for _, c := range a.Chunks {
			if c.RawSize > maxChunkBytes || c.StoredSize > maxChunkBytes {
				return nil, fmt.Errorf("archive %s: chunk %s is larger than %d bytes (raw %d, stored %d)", a.Name, c.ID, maxChunkBytes, c.RawSize, c.StoredSize)
			}
			p.maxChunkRaw = max(p.maxChunkRaw, c.RawSize)
			p.maxChunkStored = max(p.maxChunkStored, c.StoredSize)
		}
		p.chunkOffsets = append(p.chunkOffsets, b.ChunkOffsets(i))
		p.chunks += len(a.Chunks)
		p.rawBytes += a.RawSize
	}
	if base < 0 {
		return nil, errors.New("no archive of the data directory (base.tar)")
	}
	p.base = base

	if len(b.Files) > math.MaxInt32 {
		return nil, fmt.Errorf("%d files in the manifest, more than a restore can index", len(b.Files))
	}
	p.members = make([][]int32, len(b.Archives))
	for i, f := range b.Files {
		if _, err := memberPath(f.Path, f.Type == manifest.TypeDir); err != nil {
			return nil, fmt.Errorf("file %d: %w", i, err)
		}
		p.members[f.Archive] = append(p.members[f.Archive], int32(i))
	}
	for ai, idx := range p.members {
		slices.SortFunc(idx, func(x, y int32) int {
			return strings.Compare(memberKey(&b.Files[x]), memberKey(&b.Files[y]))
		})
		for k := 1; k < len(idx); k++ {
			if path := memberKey(&b.Files[idx[k]]); path == memberKey(&b.Files[idx[k-1]]) {
				return nil, fmt.Errorf("%s is listed twice in archive %s", path, b.Archives[ai].Name)
			}
		}
	}
	if i, ok := p.find(base, pgControlPath); !ok || b.Files[i].Type != manifest.TypeFile {
		return nil, fmt.Errorf("%s has no %s: not a PostgreSQL data directory", b.Archives[base].Name, pgControlPath)
	}
	return p, nil
}

// memberKey is the path a manifest entry is looked up by: what memberPath
// returns for it, which newPlan has checked it can.
func memberKey(f *manifest.File) string {
	p := f.Path
	if f.Type == manifest.TypeDir && len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return strings.TrimPrefix(p, "./")
}

// find returns the index into b.Files of member path of archive ai.
func (p *plan) find(ai int, path string) (int, bool) {
	idx := p.members[ai]
	k, ok := slices.BinarySearchFunc(idx, path, func(i int32, path string) int {
		return strings.Compare(memberKey(&p.b.Files[i]), path)
	})
	if !ok {
		return 0, false
	}
	return int(idx[k]), true
}

// checkOverlaps refuses destinations that are the same directory or nest
// inside one another: one archive's files would land in another's tree.
func (p *plan) checkOverlaps() error {
	type dest struct{ name, dir string }
	dests := []dest{{"the target", p.target}}
	for _, oid := range p.tsOrder {
		dests = append(dests, dest{"tablespace " + strconv.FormatUint(uint64(oid), 10), p.tsDirs[oid]})
	}
	for i, a := range dests {
		for _, b := range dests[i+1:] {
			if within(a.dir, b.dir) || within(b.dir, a.dir) {
				return fmt.Errorf("%s (%s) and %s (%s) overlap: each needs its own directory", a.name, a.dir, b.name, b.dir)
			}
		}
	}
	return nil
}

// within reports whether dir is parent or a directory below it; both are
// clean absolute paths.
func within(dir, parent string) bool {
	rel, err := filepath.Rel(parent, dir)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func (p *plan) tablespaceList() string {
	if len(p.tsOrder) == 0 {
		return "none"
	}
	s := make([]string, len(p.tsOrder))
	for i, oid := range p.tsOrder {
		s[i] = strconv.FormatUint(uint64(oid), 10)
	}
	return strings.Join(s, ", ")
}

// checkDestinations makes sure the target and every tablespace directory
// are absent or empty, before anything is written.
func (p *plan) checkDestinations() error {
	if err := checkEmpty(p.target); err != nil {
		return err
	}
	for _, oid := range p.tsOrder {
		if err := checkEmpty(p.tsDirs[oid]); err != nil {
			return fmt.Errorf("tablespace %d: %w", oid, err)
		}
	}
	return nil
}

// checkEmpty accepts a directory that does not exist or has no entries.
func checkEmpty(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("%s is not empty (it holds %s): restore needs a directory that does not exist or is empty", dir, filepath.Join(dir, names[0]))
	}
	return nil
}

// incomplete wraps an error that happened after the first write with what
// the user must do about the directories.
func (p *plan) incomplete(err error) error {
	also := ""
	if dirs := p.tablespaceDirs(); len(dirs) > 0 {
		also = " (and the tablespace directories " + strings.Join(dirs, ", ") + ")"
	}
	if p.delta {
		return fmt.Errorf("delta restore into %s failed: %w; %s is incomplete (it has no %s, so PostgreSQL will not start it) — run the delta restore again to complete it%s",
			p.target, err, p.target, pgControlPath, also)
	}
	return fmt.Errorf("restore into %s failed: %w; %s is incomplete (it has no %s) — remove it%s before trying again",
		p.target, err, p.target, pgControlPath, also)
}

// tablespaceDirs lists the tablespaces' directories in the manifest's
// order; nil when there are none.
func (p *plan) tablespaceDirs() []string {
	if len(p.tsOrder) == 0 {
		return nil
	}
	dirs := make([]string, len(p.tsOrder))
	for i, oid := range p.tsOrder {
		dirs[i] = p.tsDirs[oid]
	}
	return dirs
}

// memberPath checks a member name, from the manifest or from a tar header,
// and returns the path it is recorded under (a leading "./" and a
// directory's trailing "/" removed, as the chunker records them).
// Absolute names, ".." and anything non-canonical are refused: the
// manifest validator refuses them too, but the tar stream is checked on
// its own, and os.Root is the last line behind both.
func memberPath(name string, dir bool) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty member name")
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%q: absolute path", name)
	case strings.ContainsAny(name, "\\\x00"):
		return "", fmt.Errorf("%q: contains a backslash or NUL", name)
	}
	p := name
	if dir && len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	p = strings.TrimPrefix(p, "./")
	for elem := range strings.SplitSeq(p, "/") {
		switch elem {
		case "..":
			return "", fmt.Errorf("%q: climbs out of its directory (a \"..\" element)", name)
		case "", ".":
			return "", fmt.Errorf("%q: not a canonical path (an empty or \".\" element)", name)
		}
	}
	return p, nil
}
