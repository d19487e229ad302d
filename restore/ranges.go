package restore

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
	"github.com/pgstow/pgstow/repository"
)

// The range engine restores file by file rather than archive by archive:
// for each file of the backup it decides what the destination already
// has right (kept), what must come from the chunks (fetched ranges), and
// what is written as a placeholder; it then downloads only the chunks a
// fetched range needs, each once, in archive order, and writes their
// bytes in place. A delta restore runs it over an existing directory, a
// restore of chosen databases over an empty one. A full restore into an
// empty directory keeps the tar extraction, which streams every chunk
// anyway and writes each file in one sequential pass.

// localKind is what the destination holds where a manifest entry goes.
type localKind uint8

const (
	localNone localKind = iota
	localFile
	localDir
)

// localEntry is the destination's entry for one manifest entry, as the
// walk found it.
type localEntry struct {
	kind  localKind
	mode  fs.FileMode
	size  int64
	mtime time.Time
}

// fileAction is what the engine does with one regular file.
type fileAction uint8

const (
	actNone        fileAction = iota // not a regular file, or left out
	actKeep                          // the local file is right
	actWrite                         // (re)written, some ranges fetched
	actPlaceholder                   // sparse file of the recorded size
	actHeld                          // read into memory (pg_control)
	actMapCheck                      // tablespace_map read, checked, not written
)

// span is a range of one file's content to fetch, in archive offsets.
type span struct {
	file       int32 // index into b.Files
	start, end int64
}

// filePlan is the decision for one regular file.
type filePlan struct {
	action fileAction
	spans  []span
	kept   int64 // local bytes found right
	// held is the content of an actHeld file found right locally (the
	// pg_control a delta restore moved aside), so nothing is fetched.
	held []byte
}

// ranger runs the range engine for one restore.
type ranger struct {
	r     *restorer
	local []localEntry // by index into b.Files
	plans []filePlan   // by index into b.Files
	// placeholder, for a restore of chosen databases, says which
	// databases' relation files are placeholders.
	placeholder func(tablespace bool, path string) bool

	removed int
	held    heldFiles
	open    map[int32]*rangeFile
	kept    int
	written int
	holders int
	bytesOK int64
}

// rangeFile is a file being written by the chunk stream: its ranges
// arrive in archive order, so a file written whole gets its CRC32C
// checked as in a tar extraction.
type rangeFile struct {
	fd   int
	crc  uint32
	next int64 // archive offset the next write must start at, for the CRC
	full bool  // every byte is fetched: the CRC is checked
}

// restoreRanges is the range engine's part of a restore: everything
// before the tail (links, WAL, settings, durability, pg_control).
func (r *restorer) restoreRanges(ctx context.Context) error {
	g := &ranger{
		r:     r,
		local: make([]localEntry, len(r.p.b.Files)),
		plans: make([]filePlan, len(r.p.b.Files)),
		held:  make(heldFiles),
		open:  make(map[int32]*rangeFile),
	}
	if r.keepDB != nil {
		g.placeholder = func(ts bool, p string) bool {
			db, ok := placeholderDB(ts, p)
			return ok && !r.keepDB[db]
		}
	}
	defer g.closeAll()
	r.prog.startRanged()
	if r.p.delta {
		for ai := range r.p.b.Archives {
			if err := g.walk(ai); err != nil {
				return err
			}
		}
	}
	if err := g.plan(ctx); err != nil {
		return err
	}
	if err := g.apply(); err != nil {
		return err
	}
	if err := r.writePGManifest(); err != nil {
		return err
	}
	if err := g.fetch(ctx); err != nil {
		return err
	}
	r.files, r.bytes = g.kept+g.written, 0
	for i, pl := range g.plans {
		if pl.action == actKeep || pl.action == actWrite || pl.action == actHeld {
			r.bytes += r.p.b.Files[i].Size
		}
	}
	r.filesKept, r.filesRewritten, r.entriesRemoved, r.placeholders = g.kept, g.written, g.removed, g.holders
	r.bytesKept = g.bytesOK
	return nil
}

// walk looks at everything in archive ai's destination: entries of the
// type the backup has are noted for planning, every other one is
// removed (the backup's pg_tblspc links are made anew by the tail).
func (g *ranger) walk(ai int) error {
	r := g.r
	d := r.dests[r.p.b.Archives[ai].TablespaceOID]
	isBase := r.p.b.Archives[ai].TablespaceOID == 0
	var (
		remove   []string
		removing string // a directory being removed: its entries are counted
	)
	err := fs.WalkDir(d.root.FS(), ".", func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read %s: %w", d.full(p), err)
		}
		if p == "." {
			return nil
		}
		if removing != "" && strings.HasPrefix(p, removing+"/") {
			g.removed++
			return nil
		}
		if isBase && p == deltaControlPath {
			return nil // removed once the new pg_control is in place
		}
		idx, ok := r.p.find(ai, p)
		if ok && isBase && p == tablespaceMapPath && r.dropMap {
			ok = false
		}
		var want manifest.FileType
		if ok {
			want = r.p.b.Files[idx].Type
		}
		switch t := de.Type(); {
		case ok && t.IsDir() && want == manifest.TypeDir:
			fi, err := de.Info()
			if err != nil {
				return fmt.Errorf("stat %s: %w", d.full(p), err)
			}
			g.local[idx] = localEntry{kind: localDir, mode: fi.Mode()}
			return nil
		case ok && t.IsRegular() && want == manifest.TypeFile:
			fi, err := de.Info()
			if err != nil {
				return fmt.Errorf("stat %s: %w", d.full(p), err)
			}
			g.local[idx] = localEntry{kind: localFile, mode: fi.Mode(), size: fi.Size(), mtime: fi.ModTime()}
			return nil
		}
		remove = append(remove, p)
		g.removed++
		if de.IsDir() {
			removing = p
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range remove {
		if err := d.root.RemoveAll(p); err != nil {
			return fmt.Errorf("remove %s: %w", d.full(p), err)
		}
		r.o.Log.Debug("removed", "path", d.full(p))
	}
	return nil
}

// plan decides, for every regular file, what to keep and what to fetch.
// It only reads, several files at once.
func (g *ranger) plan(ctx context.Context) error {
	r := g.r
	b := r.p.b
	eg, ectx := errgroup.WithContext(ctx)
	work := make(chan int32)
	eg.Go(func() error {
		defer close(work)
		for i := range b.Files {
			select {
			case work <- int32(i):
			case <-ectx.Done():
				return ectx.Err()
			}
		}
		return nil
	})
	for range max(1, runtime.GOMAXPROCS(0)) {
		eg.Go(func() error {
			var chunkBuf []byte
			copyBuf := make([]byte, 256<<10)
			for i := range work {
				if err := ectx.Err(); err != nil {
					return err
				}
				pl, err := g.planFile(i, copyBuf, &chunkBuf)
				if err != nil {
					return err
				}
				g.plans[i] = pl
				if pl.action == actPlaceholder {
					r.prog.planned(pl.kept, b.Files[i].Size)
				} else {
					r.prog.planned(pl.kept, 0)
				}
			}
			return nil
		})
	}
	return eg.Wait()
}

// planFile decides for file i: kept when the local copy checks out,
// else the ranges whose whole chunks the local copy has are kept and the
// rest fetched.
func (g *ranger) planFile(i int32, copyBuf []byte, chunkBuf *[]byte) (filePlan, error) {
	r := g.r
	b := r.p.b
	f := &b.Files[i]
	if f.Type != manifest.TypeFile {
		return filePlan{}, nil
	}
	a := &b.Archives[f.Archive]
	d := r.dests[a.TablespaceOID]
	p := memberKey(f)
	isBase := a.TablespaceOID == 0
	all := filePlan{action: actWrite, spans: g.spans(i, nil)}
	switch {
	case isBase && p == pgControlPath:
		// The backup's, held, as it is written last: the copy the delta
		// restore moved aside is used when it hashes to the SHA-256 the
		// backup recorded (format 1.2 on), otherwise it is fetched.
		all.action = actHeld
		if data := g.movedControl(d, f); data != nil {
			return filePlan{action: actHeld, kept: f.Size, held: data}, nil
		}
		return all, nil
	case isBase && p == tablespaceMapPath && r.dropMap:
		all.action = actMapCheck
		return all, nil
	case g.placeholder != nil && g.placeholder(!isBase, p):
		return filePlan{action: actPlaceholder}, nil
	}
	loc := g.local[i]
	if loc.kind != localFile {
		return all, nil
	}
	if pgdata.SealedByCRC(!isBase, p) {
		// Every valid version of such a file has the same CRC32C, and a
		// copy keeps size and mtime: only the SHA-256 the backup
		// recorded (format 1.2 on) can tell the backup's version, in
		// either check mode. Without it the file is fetched.
		if f.SHA256 == "" || loc.size != f.Size {
			return all, nil
		}
		sum, err := fileSHA256(d, p, copyBuf)
		if err != nil {
			return filePlan{}, err
		}
		if sum == f.SHA256 {
			return filePlan{action: actKeep, kept: f.Size}, nil
		}
		return all, nil
	}
	if loc.size == f.Size {
		switch r.o.DeltaCheck {
		case DeltaSizeMTime:
			if loc.mtime.Equal(time.Unix(f.MTime, 0)) {
				return filePlan{action: actKeep, kept: f.Size}, nil
			}
		default:
			crc, err := fileCRC(d, p, copyBuf)
			if err != nil {
				return filePlan{}, err
			}
			if crc == f.CRC32C {
				return filePlan{action: actKeep, kept: f.Size}, nil
			}
		}
	}
	if f.Size == 0 {
		return filePlan{action: actWrite}, nil
	}
	// The chunks lying whole inside the file's content (not slices of
	// them): the local bytes there are kept when they hash to the
	// chunk's id.
	fh, err := d.open(p)
	if err != nil {
		return filePlan{}, fmt.Errorf("read %s: %w", d.full(p), err)
	}
	defer fh.Close()
	offs := r.p.chunkOffsets[f.Archive]
	start, end := f.Offset, f.Offset+f.Size
	pl := filePlan{action: actWrite}
	for ci := firstChunk(offs, a.Chunks, start); ci < len(a.Chunks) && offs[ci] < end; ci++ {
		cs, ce := offs[ci], offs[ci]+a.Chunks[ci].Len()
		// A slice's bytes have no id of their own to check local bytes
		// against: they are fetched.
		if !a.Chunks[ci].Sliced() && cs >= start && ce <= end && ce-start <= loc.size {
			n := int(ce - cs)
			if cap(*chunkBuf) < n {
				*chunkBuf = make([]byte, n)
			}
			buf := (*chunkBuf)[:n]
			if _, err := fh.ReadAt(buf, cs-start); err != nil && !errors.Is(err, io.EOF) {
				return filePlan{}, fmt.Errorf("read %s: %w", d.full(p), err)
			} else if err == nil && r.repo.ChunkID(buf) == a.Chunks[ci].ID {
				pl.kept += ce - cs
				continue
			}
		}
		pl.spans = addSpan(pl.spans, span{file: i, start: max(cs, start), end: min(ce, end)})
	}
	return pl, nil
}

// spans returns the whole content of file i as one span (none when
// empty), appended to s.
func (g *ranger) spans(i int32, s []span) []span {
	f := &g.r.p.b.Files[i]
	if f.Size == 0 {
		return s
	}
	return append(s, span{file: i, start: f.Offset, end: f.Offset + f.Size})
}

// addSpan appends sp, merged with the last span when they touch.
func addSpan(s []span, sp span) []span {
	if n := len(s); n > 0 && s[n-1].end == sp.start && s[n-1].file == sp.file {
		s[n-1].end = sp.end
		return s
	}
	return append(s, sp)
}

// firstChunk returns the index of the chunk reference holding archive
// offset off.
func firstChunk(offs []int64, chunks []manifest.ChunkRef, off int64) int {
	return sort.Search(len(offs), func(k int) bool { return offs[k]+chunks[k].Len() > off })
}

// movedControl returns the pg_control a delta restore moved aside, when
// it is byte for byte the backup's file f (its recorded SHA-256 says so);
// nil otherwise, and for restores that moved nothing aside.
func (g *ranger) movedControl(d *dest, f *manifest.File) []byte {
	if !g.r.p.delta || f.SHA256 == "" || f.Size > maxHeldFileBytes {
		return nil
	}
	fh, err := d.open(deltaControlPath)
	if err != nil {
		return nil
	}
	defer fh.Close()
	data := make([]byte, f.Size+1)
	n, err := io.ReadFull(fh, data)
	if int64(n) != f.Size || !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	data = data[:n]
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != f.SHA256 {
		return nil
	}
	return data
}

// fileSHA256 returns the SHA-256 of p in hex, as manifest.File.SHA256
// records it.
func fileSHA256(d *dest, p string, buf []byte) (string, error) {
	h := sha256.New()
	if err := hashFile(d, p, h, buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileCRC returns the CRC32C of p.
func fileCRC(d *dest, p string, buf []byte) (uint32, error) {
	h := crc32.New(manifest.Castagnoli)
	if err := hashFile(d, p, h, buf); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}

// hashFile reads p through its destination's root into h, through buf.
func hashFile(d *dest, p string, h hash.Hash, buf []byte) error {
	f, err := d.open(p)
	if err != nil {
		return fmt.Errorf("read %s: %w", d.full(p), err)
	}
	defer f.Close()
	if _, err := io.CopyBuffer(h, f, buf); err != nil {
		return fmt.Errorf("read %s: %w", d.full(p), err)
	}
	return nil
}

// apply makes the directories, fixes what is kept, creates placeholders
// and the files that have nothing to fetch, in manifest order per
// archive (parents before children), before any chunk is downloaded.
func (g *ranger) apply() error {
	r := g.r
	b := r.p.b
	for ai, idx := range r.p.members {
		d := r.dests[b.Archives[ai].TablespaceOID]
		for _, i := range idx {
			f := &b.Files[i]
			p := memberKey(f)
			mtime := time.Unix(f.MTime, 0)
			switch f.Type {
			case manifest.TypeDir:
				if g.local[i].kind == localDir {
					if g.local[i].mode.Perm() != dirMode {
						if err := d.root.Chmod(p, dirMode); err != nil {
							return fmt.Errorf("set the mode of %s: %w", d.full(p), err)
						}
					}
					for q := p; q != "." && !d.dirs[q]; q = path.Dir(q) {
						d.dirs[q] = true
					}
				} else if err := d.ensureDir(p); err != nil {
					return err
				}
				r.dirTimes = append(r.dirTimes, dirTime{d: d, path: p, mtime: mtime})
				continue
			case manifest.TypeSymlink:
				if _, ok := r.tablespaceLink(ai, p); !ok {
					return fmt.Errorf("refusing %s: it is a symlink (to %q), and only the pg_tblspc/<oid> links of the backup's tablespaces are allowed", d.full(p), f.LinkTarget)
				}
				continue
			}
			pl := &g.plans[i]
			switch pl.action {
			case actKeep:
				g.kept++
				g.bytesOK += pl.kept
				if g.local[i].mode.Perm() != fileMode {
					if err := d.root.Chmod(p, fileMode); err != nil {
						return fmt.Errorf("set the mode of %s: %w", d.full(p), err)
					}
				}
				if !g.local[i].mtime.Equal(mtime) {
					if err := d.setMTime(p, mtime); err != nil {
						return fmt.Errorf("set the mtime of %s: %w", d.full(p), err)
					}
				}
				// Synced like a written file: whatever wrote it before
				// (a server run with fsync off, a copy) may have left
				// it in the page cache only.
				r.addSync(syncEntry{d: d, path: p})
			case actHeld:
				if pl.held == nil {
					g.written++
					break
				}
				g.kept++
				g.bytesOK += pl.kept
				g.held[i] = pl.held
				if err := g.finish(i); err != nil {
					return err
				}
			case actPlaceholder:
				g.holders++
				if err := g.createSized(d, p, f.Size); err != nil {
					return err
				}
				if err := d.setMTime(p, mtime); err != nil {
					return fmt.Errorf("set the mtime of %s: %w", d.full(p), err)
				}
				r.addSync(syncEntry{d: d, path: p})
			case actWrite:
				g.written++
				g.bytesOK += pl.kept
				if len(pl.spans) > 0 {
					if err := d.ensureParent(p); err != nil {
						return err
					}
					continue // created or truncated as its first range arrives
				}
				// Every byte is kept, or there are none: only the
				// size and times may need fixing.
				if err := g.createSized(d, p, f.Size); err != nil {
					return err
				}
				if err := d.setMTime(p, mtime); err != nil {
					return fmt.Errorf("set the mtime of %s: %w", d.full(p), err)
				}
				r.addSync(syncEntry{d: d, path: p})
			}
		}
	}
	return nil
}

// openSized opens p for writing (creating it 0600 if absent, never
// following a symlink) and sets its size, so that ranges can be written
// anywhere in it and nothing past the size remains.
func (g *ranger) openSized(d *dest, p string, size int64) (int, error) {
	if err := d.ensureParent(p); err != nil {
		return -1, err
	}
	dirfd, name, err := d.at(p)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, fileMode)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: d.full(p), Err: err}
	}
	if err := unix.Fchmod(fd, fileMode); err != nil {
		_ = unix.Close(fd)
		return -1, &os.PathError{Op: "chmod", Path: d.full(p), Err: err}
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		_ = unix.Close(fd)
		return -1, &os.PathError{Op: "truncate", Path: d.full(p), Err: err}
	}
	return fd, nil
}

// createSized makes p a file of size bytes, keeping what it holds below
// that size (a placeholder, created empty, is all holes).
func (g *ranger) createSized(d *dest, p string, size int64) error {
	fd, err := g.openSized(d, p, size)
	if err != nil {
		return fmt.Errorf("write %s: %w", d.full(p), err)
	}
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("write %s: %w", d.full(p), err)
	}
	return nil
}

// fetch downloads the chunks the planned spans need and writes them.
func (g *ranger) fetch(ctx context.Context) error {
	r := g.r
	spans := make([][]span, len(r.p.b.Archives))
	for i, pl := range g.plans {
		if len(pl.spans) > 0 {
			ai := r.p.b.Files[i].Archive
			spans[ai] = append(spans[ai], pl.spans...)
		}
	}
	for ai := range spans {
		slices.SortFunc(spans[ai], func(x, y span) int { return cmp.Compare(x.start, y.start) })
	}
	fetched, err := streamSpans(ctx, r.repo, r.p, r.o.Concurrency, spans, r.prog, g.write, g.finish)
	r.bytesFetched += fetched
	return err
}

// write puts data, the part of a chunk at archive offset off that falls
// in span s, where it belongs.
func (g *ranger) write(s span, off int64, data []byte) error {
	r := g.r
	f := &r.p.b.Files[s.file]
	switch g.plans[s.file].action {
	case actHeld, actMapCheck:
		g.held.write(f, s, off, data)
		return nil
	}
	d := r.dests[r.p.b.Archives[f.Archive].TablespaceOID]
	p := memberKey(f)
	rf := g.open[s.file]
	if rf == nil {
		var (
			fd  int
			err error
		)
		if g.local[s.file].kind == localFile {
			fd, err = g.openSized(d, p, f.Size)
		} else {
			// A new file: its ranges arrive in order and make it
			// whole, as a tar extraction writes it.
			var nf *newFile
			if nf, err = d.create(p); err == nil {
				fd = nf.fd
			}
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", d.full(p), err)
		}
		rf = &rangeFile{fd: fd, next: f.Offset, full: g.plans[s.file].kept == 0}
		g.open[s.file] = rf
	}
	if rf.full {
		if off != rf.next {
			rf.full = false
		} else {
			rf.crc = crc32.Update(rf.crc, manifest.Castagnoli, data)
			rf.next += int64(len(data))
		}
	}
	pos := off - f.Offset
	for len(data) > 0 {
		n, err := unix.Pwrite(rf.fd, data, pos)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", d.full(p), err)
		}
		if n == 0 {
			return fmt.Errorf("write %s: %w", d.full(p), io.ErrShortWrite)
		}
		data, pos = data[n:], pos+int64(n)
	}
	return nil
}

// heldFiles are small files assembled in memory from the chunk stream
// (pg_control, tablespace_map, pg_database and pg_xact), by index into
// b.Files.
type heldFiles map[int32][]byte

// write puts data, the part of a chunk at archive offset off that falls
// in span s of file f, in place.
func (h heldFiles) write(f *manifest.File, s span, off int64, data []byte) {
	buf := h[s.file]
	if buf == nil {
		buf = make([]byte, f.Size)
		h[s.file] = buf
	}
	copy(buf[off-f.Offset:], data)
}

// checked returns file i's content once whole, checked against f's
// CRC32C; name is for the error.
func (h heldFiles) checked(f *manifest.File, i int32, name string) ([]byte, error) {
	data := h[i]
	if crc := crc32.Checksum(data, manifest.Castagnoli); crc != f.CRC32C {
		return nil, fmt.Errorf("file %s: CRC32C %08x, the manifest says %08x", name, crc, f.CRC32C)
	}
	return data, nil
}

// finish is called once every span of file i is written.
func (g *ranger) finish(i int32) error {
	r := g.r
	f := &r.p.b.Files[i]
	d := r.dests[r.p.b.Archives[f.Archive].TablespaceOID]
	p := memberKey(f)
	mtime := time.Unix(f.MTime, 0)
	switch g.plans[i].action {
	case actHeld, actMapCheck:
		data, err := g.held.checked(f, i, d.full(p))
		if err != nil {
			return err
		}
		if g.plans[i].action == actHeld {
			r.pgControl, r.pgControlMTime = data, mtime
			return nil
		}
		if err := checkTablespaceMap(data, r.p.tsDirs); err != nil {
			return fmt.Errorf("file %s: %w", d.full(p), err)
		}
		r.o.Log.Info("tablespace_map left out: a tablespace was remapped, and the pg_tblspc links point at each tablespace's directory", "tablespaces", r.p.tablespaceList())
		return nil
	}
	rf := g.open[i]
	delete(g.open, i)
	if rf == nil {
		return fmt.Errorf("internal error: %s finished without a write", d.full(p))
	}
	if err := unix.Close(rf.fd); err != nil {
		return fmt.Errorf("write %s: %w", d.full(p), err)
	}
	if rf.full && rf.next == f.Offset+f.Size && rf.crc != f.CRC32C {
		return fmt.Errorf("file %s: CRC32C %08x, the manifest says %08x", d.full(p), rf.crc, f.CRC32C)
	}
	if err := d.setMTime(p, mtime); err != nil {
		return fmt.Errorf("set the mtime of %s: %w", d.full(p), err)
	}
	r.addSync(syncEntry{d: d, path: p})
	return nil
}

func (g *ranger) closeAll() {
	for _, rf := range g.open {
		_ = unix.Close(rf.fd)
	}
}

// chunkPos is one chunk of the stream: archive and index there.
type chunkPos struct{ archive, index int }

// streamSpans downloads, through repository.StreamChunks, every chunk
// that some span of spans (per archive, sorted and disjoint) needs, once
// each and in archive order, and calls write with the part of each chunk
// in each span, and finish once a file's last span is written. It
// returns the archive bytes of the chunk references it needed. A chunk
// that several references slice is downloaded once while its uses are
// close (the stream's cache).
func streamSpans(ctx context.Context, repo *repository.Repository, p *plan, concurrency int, spans [][]span, prog *progress,
	write func(s span, off int64, data []byte) error, finish func(file int32) error) (int64, error) {
	var need []chunkPos
	var total int64
	for ai, ss := range spans {
		offs := p.chunkOffsets[ai]
		chunks := p.b.Archives[ai].Chunks
		last := -1
		for _, s := range ss {
			for ci := max(firstChunk(offs, chunks, s.start), last+1); ci < len(chunks) && offs[ci] < s.end; ci++ {
				need = append(need, chunkPos{ai, ci})
				total += chunks[ci].Len()
				last = ci
			}
		}
	}
	if prog != nil {
		prog.setTotal(total, len(need))
	}
	if len(need) == 0 {
		return 0, nil
	}
	refs := func(yield func(manifest.ChunkRef) bool) {
		for _, c := range need {
			if !yield(p.b.Archives[c.archive].Chunks[c.index]) {
				return
			}
		}
	}
	next := make([]int, len(spans)) // per archive: first span not yet done
	names := &pipeline{p: p}
	var fetched int64
	err := repo.StreamChunks(ctx, refs, streamOptions(concurrency), func(i int, raw []byte, err error) error {
		c := need[i]
		if err == nil {
			raw, err = sliceOf(p.b.Archives[c.archive].Chunks[c.index], raw)
		}
		if err != nil {
			return names.chunkError(c.archive, c.index, err)
		}
		fetched += int64(len(raw))
		if prog != nil {
			prog.chunk(int64(len(raw)))
		}
		cs := p.chunkOffsets[c.archive][c.index]
		ce := cs + int64(len(raw))
		ss := spans[c.archive]
		for k := next[c.archive]; k < len(ss) && ss[k].start < ce; k++ {
			s := ss[k]
			lo, hi := max(s.start, cs), min(s.end, ce)
			if lo < hi {
				if err := write(s, lo, raw[lo-cs:hi-cs]); err != nil {
					return err
				}
			}
			if s.end <= ce {
				next[c.archive] = k + 1
				if k+1 == len(ss) || ss[k+1].file != s.file {
					if err := finish(s.file); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	return fetched, err
}
