package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// Modes of everything restored, whatever the tar says: PostgreSQL refuses
// to start a data directory that others can read, and files it creates
// itself are 0600.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// copyBufferBytes is the size of the buffer file contents pass through on
// their way from the chunks to disk; the writer owns one.
const copyBufferBytes = 1 << 20

// maxHeldFileBytes bounds the files held in memory rather than streamed:
// pg_control (8 KiB) and tablespace_map (a line per tablespace).
const maxHeldFileBytes = 1 << 20

// dest is one destination directory: the target, or a tablespace's. Every
// write goes through its os.Root, so no member name, link or race can put
// a file outside it.
type dest struct {
	root *os.Root
	dir  string // absolute, for messages and for the parent's fsync
	// dirs holds the directories made or known to exist below root, so
	// each is made once and each is fsynced at the end.
	dirs map[string]bool
	// self is the destination directory itself, open from before the
	// first write: syncfs on it reports write-back errors since then.
	self *os.File
	// syncfs: the destination is made durable with one syncfs, not an
	// fsync per file (chooseSync).
	syncfs bool

	mu sync.Mutex
	// handles are open directories below root, by path, opened through
	// root once each: files are then created, stamped and reopened by a
	// single name relative to their directory (one system call each)
	// instead of a walk through the root per call, which is what costs
	// with tens of thousands of small files.
	handles map[string]*os.File
}

// handle returns the open directory dir of d, opened through its root.
func (d *dest) handle(dir string) (*os.File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.handles[dir]; h != nil {
		return h, nil
	}
	h, err := d.root.Open(dir)
	if err != nil {
		return nil, err
	}
	d.handles[dir] = h
	return h, nil
}

// at returns the directory handle and the last name of p, which must
// name something below the root (not the root itself).
func (d *dest) at(p string) (int, string, error) {
	h, err := d.handle(path.Dir(p))
	if err != nil {
		return -1, "", err
	}
	return int(h.Fd()), path.Base(p), nil
}

// create makes the new file p (0600); it fails if anything is there,
// a symlink included.
func (d *dest) create(p string) (*newFile, error) {
	dirfd, name, err := d.at(p)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, fileMode)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.full(p), Err: err}
	}
	return &newFile{fd: fd, name: d.full(p)}, nil
}

// newFile is a file create made, written and closed through its
// descriptor alone: an os.File would cost a system call per file to
// decide whether the poller can take it, and a finalizer, which count
// with tens of thousands of small files.
type newFile struct {
	fd   int
	name string
}

func (f *newFile) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := unix.Write(f.fd, p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, &os.PathError{Op: "write", Path: f.name, Err: err}
		}
		if k == 0 {
			return n, io.ErrShortWrite
		}
		n += k
	}
	return n, nil
}

func (f *newFile) Close() error {
	if err := unix.Close(f.fd); err != nil {
		return &os.PathError{Op: "close", Path: f.name, Err: err}
	}
	return nil
}

// open opens p read-only, for an fsync, without following a symlink.
func (d *dest) open(p string) (*os.File, error) {
	if p == "." {
		return d.root.Open(p)
	}
	dirfd, name, err := d.at(p)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.full(p), Err: err}
	}
	return os.NewFile(uintptr(fd), d.full(p)), nil
}

// setMTime sets the access and modification times of p, not following a
// symlink.
func (d *dest) setMTime(p string, t time.Time) error {
	dirfd, name, err := d.at(p)
	if err != nil {
		return err
	}
	ts, err := unix.TimeToTimespec(t)
	if err != nil {
		return err
	}
	if err := unix.UtimesNanoAt(dirfd, name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: d.full(p), Err: err}
	}
	return nil
}

func (d *dest) close() {
	for _, h := range d.handles {
		_ = h.Close()
	}
	if d.self != nil {
		_ = d.self.Close()
	}
	_ = d.root.Close()
}

func (d *dest) full(p string) string { return filepath.Join(d.dir, filepath.FromSlash(p)) }

// ensureDir makes dir and its parents, 0700.
func (d *dest) ensureDir(dir string) error {
	if dir == "." || d.dirs[dir] {
		return nil
	}
	if err := d.root.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create directory %s: %w", d.full(dir), err)
	}
	for p := dir; p != "." && !d.dirs[p]; p = path.Dir(p) {
		d.dirs[p] = true
	}
	return nil
}

func (d *dest) ensureParent(p string) error { return d.ensureDir(path.Dir(p)) }

// syncEntry is a file or directory to fsync before pg_control is written.
type syncEntry struct {
	d    *dest // nil: path is absolute, outside every root
	path string
	dir  bool
}

type dirTime struct {
	d     *dest
	path  string
	mtime time.Time
}

// restorer carries one restore after the plan has been accepted.
type restorer struct {
	repo *repository.Repository
	o    Options
	p    *plan
	prog *progress

	base  *dest
	dests map[uint32]*dest // by tablespace oid; 0 is the target

	seen     []bool // by index into b.Files: member extracted
	linked   map[uint32]bool
	dirTimes []dirTime
	copyBuf  []byte

	// pgManifest is PostgreSQL's backup_manifest, checked by Run.
	pgManifest *io.SectionReader
	// dropMap: a tablespace moves and the backup has a tablespace_map,
	// which this restore leaves out (leavesOutTablespaceMap).
	dropMap bool

	pgControl      []byte
	pgControlMTime time.Time

	mu          sync.Mutex // guards what the WAL workers add below
	toSync      []syncEntry
	files       int
	bytes       int64
	walSegments int
	fromStandby bool // set by setRole

	// keepDB, for a restore of chosen databases, are the databases whose
	// relation files are written; the others' are placeholders.
	keepDB map[uint32]bool
	// What the range engine did (restoreRanges).
	filesKept, filesRewritten, entriesRemoved, placeholders int
	bytesKept, bytesFetched                                 int64
}

func newRestorer(repo *repository.Repository, o Options, p *plan) *restorer {
	return &restorer{
		repo:    repo,
		o:       o,
		p:       p,
		prog:    &progress{bytesTotal: p.rawBytes, chunksTotal: p.chunks},
		dests:   make(map[uint32]*dest),
		seen:    make([]bool, len(p.b.Files)),
		linked:  make(map[uint32]bool),
		dropMap: p.leavesOutTablespaceMap(),
	}
}

// leavesOutTablespaceMap reports whether the restore moves a tablespace of
// a backup that has a tablespace_map. It then writes no tablespace_map,
// as pg_basebackup does in plain format with --tablespace-mapping: the
// pg_tblspc links, which point at where this restore put each tablespace,
// are then all PostgreSQL goes by, and backup_manifest loses the file's
// entry, so that pg_verifybackup accepts the directory. Rewriting the map
// instead would need a manifest entry with a checksum of our making, and
// would leave two places saying where a tablespace is, the map winning at
// the first start over a link a DBA has corrected.
func (p *plan) leavesOutTablespaceMap() bool {
	moved := false
	for _, m := range p.remapped {
		moved = moved || m
	}
	if !moved {
		return false
	}
	for ai, a := range p.b.Archives {
		if a.TablespaceOID == 0 {
			i, ok := p.find(ai, tablespaceMapPath)
			return ok && p.b.Files[i].Type == manifest.TypeFile
		}
	}
	return false
}

func (r *restorer) run(ctx context.Context, started time.Time) (*Result, error) {
	r.prog.start = started
	if err := r.openDestinations(); err != nil {
		return nil, err
	}
	defer r.closeDestinations()
	if err := r.chooseSync(); err != nil {
		return nil, err
	}
	stop := r.prog.run(r.o)
	err := r.restore(ctx)
	stop()
	if err != nil {
		return nil, err
	}
	s := r.prog.snapshot()
	res := &Result{
		Backup:         r.p.b,
		Files:          r.files,
		Bytes:          r.bytes,
		WALSegments:    r.walSegments,
		FromStandby:    r.fromStandby,
		TablespaceDirs: r.p.tablespaceDirs(),
		FilesKept:      r.filesKept,
		FilesRewritten: r.filesRewritten,
		EntriesRemoved: r.entriesRemoved,
		Placeholders:   r.placeholders,
		BytesKept:      r.bytesKept,
		BytesFetched:   r.bytesFetched,
		Elapsed:        time.Since(started),
	}
	attrs := []any{"backup", r.p.b.ID, "target", r.p.target,
		"files", res.Files, "bytes", res.Bytes, "chunks", s.ChunksDone, "raw_bytes", s.BytesDone,
		"wal_segments", res.WALSegments, "seconds", res.Elapsed.Seconds(), "mib_per_s", rate(s.BytesDone, res.Elapsed)}
	if r.ranged() {
		attrs = append(attrs, "delta", r.p.delta, "files_kept", res.FilesKept, "files_rewritten", res.FilesRewritten,
			"entries_removed", res.EntriesRemoved, "placeholders", res.Placeholders,
			"bytes_kept", res.BytesKept, "bytes_fetched", res.BytesFetched)
	}
	r.o.Log.Info("restore complete", attrs...)
	return res, nil
}

// ranged says whether the range engine restores the files (a delta
// restore, or one of chosen databases) rather than the tar extraction.
func (r *restorer) ranged() bool { return r.p.delta || r.keepDB != nil }

// restore writes everything, pg_control last.
func (r *restorer) restore(ctx context.Context) error {
	if r.ranged() {
		if err := r.restoreRanges(ctx); err != nil {
			return err
		}
	} else {
		if err := r.writePGManifest(); err != nil {
			return err
		}
		if err := r.extractArchives(ctx); err != nil {
			return err
		}
		r.bytesFetched = r.prog.bytesDone.Load()
	}
	return r.finish(ctx)
}

// finish is the tail every restore shares once the files are in place:
// tablespace links, WAL, recovery settings, role, directory times,
// durability, and pg_control last.
func (r *restorer) finish(ctx context.Context) error {
	for _, oid := range r.p.tsOrder {
		if !r.linked[oid] {
			if err := r.linkTablespace(oid); err != nil {
				return err
			}
		}
	}
	// PostgreSQL does not start without them; the archive normally has
	// them, but nothing requires it to.
	if err := r.base.ensureDir("pg_wal/archive_status"); err != nil {
		return err
	}
	switch r.o.WAL {
	case WALEmbed:
		if err := r.embedWAL(ctx); err != nil {
			return err
		}
	case WALFetch:
		if err := r.embedPartialWAL(ctx); err != nil {
			return err
		}
		if err := r.writeRecoveryConfig(); err != nil {
			return err
		}
	}
	if err := r.setRole(); err != nil {
		return err
	}
	// Last, since writing into a directory changes its mtime.
	for i := len(r.dirTimes) - 1; i >= 0; i-- {
		t := r.dirTimes[i]
		if err := t.d.root.Chtimes(t.path, t.mtime, t.mtime); err != nil {
			return fmt.Errorf("set the mtime of %s: %w", t.d.full(t.path), err)
		}
	}
	if err := r.syncAll(ctx); err != nil {
		return err
	}
	return r.writePGControl()
}

// pgManifestPath is where PostgreSQL's backup_manifest goes, and where
// pg_verifybackup looks for it.
const pgManifestPath = "backup_manifest"

// writePGManifest copies PostgreSQL's backup_manifest, which Run checked
// before anything was written, into the target: as the server wrote it,
// or without the entry of the tablespace_map the restore leaves out.
func (r *restorer) writePGManifest() error {
	d := r.base
	out, err := d.root.OpenFile(pgManifestPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return fmt.Errorf("create %s: %w", d.full(pgManifestPath), err)
	}
	defer out.Close()
	if r.dropMap {
		_, err = manifest.CopyPGManifestWithout(out, r.pgManifest, r.pgManifest.Size(), tablespaceMapPath)
	} else {
		_, err = io.Copy(out, r.pgManifest)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", d.full(pgManifestPath), err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("write %s: %w", d.full(pgManifestPath), err)
	}
	r.addSync(syncEntry{d: d, path: pgManifestPath})
	return nil
}

// openDestinations creates the target and the tablespace directories
// (0700, as PostgreSQL's own CREATE TABLESPACE leaves them) and opens a
// root on each.
func (r *restorer) openDestinations() error {
	open := func(oid uint32, dir string) error {
		if err := os.MkdirAll(dir, dirMode); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		if err := os.Chmod(dir, dirMode); err != nil {
			return fmt.Errorf("set the mode of %s: %w", dir, err)
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			return fmt.Errorf("open %s: %w", dir, err)
		}
		self, err := root.Open(".")
		if err != nil {
			_ = root.Close()
			return fmt.Errorf("open %s: %w", dir, err)
		}
		r.dests[oid] = &dest{root: root, dir: dir, dirs: make(map[string]bool), self: self, handles: make(map[string]*os.File)}
		return nil
	}
	if err := open(0, r.p.target); err != nil {
		return err
	}
	r.base = r.dests[0]
	for _, oid := range r.p.tsOrder {
		if err := open(oid, r.p.tsDirs[oid]); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) closeDestinations() {
	for _, d := range r.dests {
		d.close()
	}
}

// extractArchives runs the chunk pipeline and the writer, which extracts
// the archives one after the other.
func (r *restorer) extractArchives(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	pl := newPipeline(r.repo, r.p, r.o.Concurrency, r.prog.chunk)
	pl.start(gctx, g)
	r.copyBuf = make([]byte, copyBufferBytes)
	g.Go(func() error {
		for ai := range r.p.b.Archives {
			if err := r.extractArchive(gctx, ai, pl.reader(gctx, ai)); err != nil {
				return err
			}
		}
		return nil
	})
	err := g.Wait()
	r.copyBuf = nil
	return err
}

// extractArchive extracts one archive into its destination and checks that
// every member the manifest lists was there.
func (r *restorer) extractArchive(ctx context.Context, ai int, cr *chunkReader) error {
	a := &r.p.b.Archives[ai]
	d := r.dests[a.TablespaceOID]
	tr := tar.NewReader(cr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		// An insecure name comes with its header; memberPath refuses it
		// with a message that names it.
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return fmt.Errorf("archive %s: %w", a.Name, err)
		}
		if err := r.extractMember(ctx, ai, d, tr, hdr); err != nil {
			return fmt.Errorf("archive %s: %w", a.Name, err)
		}
	}
	if err := cr.finish(); err != nil {
		return fmt.Errorf("archive %s: %w", a.Name, err)
	}
	var missing []string
	n := 0
	for i, f := range r.p.b.Files {
		if f.Archive == ai && !r.seen[i] {
			n++
			if len(missing) < 5 {
				missing = append(missing, f.Path)
			}
		}
	}
	if n > 0 {
		return fmt.Errorf("archive %s: %d member(s) listed in the manifest are not in the archive: %s", a.Name, n, strings.Join(missing, ", "))
	}
	return nil
}

// extractMember checks one tar member against the manifest before
// anything is written for it, then writes it.
func (r *restorer) extractMember(ctx context.Context, ai int, d *dest, tr *tar.Reader, hdr *tar.Header) error {
	var typ manifest.FileType
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		// Applies to the whole archive and names no file.
		return nil
	case tar.TypeDir:
		typ = manifest.TypeDir
	case tar.TypeReg:
		typ = manifest.TypeFile
	case tar.TypeSymlink:
		typ = manifest.TypeSymlink
	default:
		return fmt.Errorf("refusing tar member %q: type %q is not one a PostgreSQL backup holds", hdr.Name, hdr.Typeflag)
	}
	p, err := memberPath(hdr.Name, typ == manifest.TypeDir)
	if err != nil {
		return fmt.Errorf("refusing tar member %w", err)
	}
	idx, ok := r.p.find(ai, p)
	if !ok {
		return fmt.Errorf("refusing tar member %q: it is not in the backup's manifest", hdr.Name)
	}
	if r.seen[idx] {
		return fmt.Errorf("refusing tar member %q: it appears twice", hdr.Name)
	}
	r.seen[idx] = true
	f := &r.p.b.Files[idx]
	if f.Type != typ {
		return fmt.Errorf("refusing tar member %q: it is a %s, the manifest says %s", hdr.Name, typ, f.Type)
	}
	mtime := time.Unix(f.MTime, 0)
	switch typ {
	case manifest.TypeDir:
		if err := d.ensureDir(p); err != nil {
			return err
		}
		r.dirTimes = append(r.dirTimes, dirTime{d: d, path: p, mtime: mtime})
		return nil
	case manifest.TypeSymlink:
		oid, ok := r.tablespaceLink(ai, p)
		if !ok {
			return fmt.Errorf("refusing tar member %q: it is a symlink (to %q), and only the pg_tblspc/<oid> links of the backup's tablespaces are allowed", hdr.Name, hdr.Linkname)
		}
		// The link goes where this restore puts the tablespace,
		// whatever the archive says.
		return r.linkTablespace(oid)
	}

	if hdr.Size != f.Size {
		return fmt.Errorf("file %s: %d bytes in the archive, the manifest says %d", d.full(p), hdr.Size, f.Size)
	}
	isBase := r.p.b.Archives[ai].TablespaceOID == 0
	switch {
	case isBase && p == pgControlPath:
		data, err := r.readHeld(ctx, d, p, tr, f)
		if err != nil {
			return err
		}
		r.pgControl, r.pgControlMTime = data, mtime
		r.counted(f.Size)
		return nil
	case isBase && p == tablespaceMapPath && r.dropMap:
		// Read and checked like any member, but not written: the
		// pg_tblspc links stand in for it (leavesOutTablespaceMap).
		data, err := r.readHeld(ctx, d, p, tr, f)
		if err != nil {
			return err
		}
		if err := checkTablespaceMap(data, r.p.tsDirs); err != nil {
			return fmt.Errorf("file %s: %w", d.full(p), err)
		}
		r.o.Log.Info("tablespace_map left out: a tablespace was remapped, and the pg_tblspc links point at each tablespace's directory", "tablespaces", r.p.tablespaceList())
		return nil
	}

	if err := d.ensureParent(p); err != nil {
		return fmt.Errorf("write %s: %w", d.full(p), err)
	}
	out, err := d.create(p)
	if err != nil {
		return fmt.Errorf("create %s: %w", d.full(p), err)
	}
	crc, err := r.copyContent(ctx, out, tr)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", d.full(p), err)
	}
	if crc != f.CRC32C {
		return fmt.Errorf("file %s: CRC32C %08x, the manifest says %08x", d.full(p), crc, f.CRC32C)
	}
	if err := d.setMTime(p, mtime); err != nil {
		return fmt.Errorf("set the mtime of %s: %w", d.full(p), err)
	}
	r.addSync(syncEntry{d: d, path: p})
	r.counted(f.Size)
	return nil
}

// tablespaceLink reports whether member p of archive ai is the pg_tblspc
// link of one of the backup's tablespaces.
func (r *restorer) tablespaceLink(ai int, p string) (uint32, bool) {
	if r.p.b.Archives[ai].TablespaceOID != 0 {
		return 0, false
	}
	rest, ok := strings.CutPrefix(p, "pg_tblspc/")
	if !ok {
		return 0, false
	}
	oid, err := strconv.ParseUint(rest, 10, 32)
	if err != nil || strconv.FormatUint(oid, 10) != rest {
		return 0, false
	}
	_, ok = r.p.tsDirs[uint32(oid)]
	return uint32(oid), ok
}

// linkTablespace creates pg_tblspc/<oid> pointing at the tablespace's
// directory in this restore. When the restore keeps tablespace_map,
// PostgreSQL recreates the same links from it when it starts, but
// pg_verifybackup needs them before; when it leaves the map out, the
// links are all PostgreSQL goes by.
func (r *restorer) linkTablespace(oid uint32) error {
	if r.linked[oid] {
		return fmt.Errorf("pg_tblspc/%d: linked twice", oid)
	}
	if err := r.base.ensureDir("pg_tblspc"); err != nil {
		return err
	}
	link := "pg_tblspc/" + strconv.FormatUint(uint64(oid), 10)
	if err := r.base.root.Symlink(r.p.tsDirs[oid], link); err != nil {
		return fmt.Errorf("link %s to %s: %w", r.base.full(link), r.p.tsDirs[oid], err)
	}
	r.linked[oid] = true
	return nil
}

// copyContent copies a member's content to out and returns its CRC32C.
func (r *restorer) copyContent(ctx context.Context, out io.Writer, in io.Reader) (uint32, error) {
	var crc uint32
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, err := in.Read(r.copyBuf)
		if n > 0 {
			crc = crc32.Update(crc, manifest.Castagnoli, r.copyBuf[:n])
			if _, werr := out.Write(r.copyBuf[:n]); werr != nil {
				return 0, werr
			}
		}
		if errors.Is(err, io.EOF) {
			return crc, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// readHeld reads a small member into memory and checks its CRC32C.
func (r *restorer) readHeld(ctx context.Context, d *dest, p string, tr io.Reader, f *manifest.File) ([]byte, error) {
	if f.Size > maxHeldFileBytes {
		return nil, fmt.Errorf("file %s: %d bytes, more than the %d such a file can have", d.full(p), f.Size, maxHeldFileBytes)
	}
	var buf bytes.Buffer
	buf.Grow(int(f.Size))
	crc, err := r.copyContent(ctx, &buf, tr)
	if err != nil {
		return nil, fmt.Errorf("read %s from the archive: %w", d.full(p), err)
	}
	if crc != f.CRC32C {
		return nil, fmt.Errorf("file %s: CRC32C %08x, the manifest says %08x", d.full(p), crc, f.CRC32C)
	}
	return buf.Bytes(), nil
}

func (r *restorer) addSync(e syncEntry) {
	if e.d != nil && e.d.syncfs {
		return // one syncfs covers it
	}
	r.mu.Lock()
	r.toSync = append(r.toSync, e)
	r.mu.Unlock()
}

func (r *restorer) counted(size int64) {
	r.mu.Lock()
	r.files++
	r.bytes += size
	r.mu.Unlock()
}

// writePGControl writes global/pg_control once everything else is durable:
// to a temporary name, fsynced, then renamed, so the file is either absent
// or whole.
func (r *restorer) writePGControl() error {
	d := r.base
	tmp := pgControlPath + ".pgstow-tmp"
	if err := d.ensureParent(pgControlPath); err != nil {
		return err
	}
	out, err := d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return fmt.Errorf("create %s: %w", d.full(tmp), err)
	}
	_, err = out.Write(r.pgControl)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err == nil {
		err = d.root.Chtimes(tmp, r.pgControlMTime, r.pgControlMTime)
	}
	if err == nil {
		err = d.root.Rename(tmp, pgControlPath)
	}
	if err != nil {
		_ = d.root.Remove(tmp)
		return fmt.Errorf("write %s: %w", d.full(pgControlPath), err)
	}
	if r.p.delta {
		// The old cluster's pg_control, moved aside by startDelta, is
		// not needed once the new one is in place.
		if err := d.root.Remove(deltaControlPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", d.full(deltaControlPath), err)
		}
	}
	// The rename changed global/'s mtime; put back the recorded one.
	for _, t := range r.dirTimes {
		if t.d == d && t.path == path.Dir(pgControlPath) {
			if err := d.root.Chtimes(t.path, t.mtime, t.mtime); err != nil {
				return fmt.Errorf("set the mtime of %s: %w", d.full(t.path), err)
			}
		}
	}
	return syncEntry{d: d, path: path.Dir(pgControlPath), dir: true}.sync()
}
