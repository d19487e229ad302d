// Package incremental turns what an incremental BASE_BACKUP sent into a
// backup that restores like a full one. The server sends changed relation
// files as INCREMENTAL.<name> (a header, then only the changed blocks)
// and the rest whole; Synthesize describes every archive as a "virtual
// tar": a list of chunk references, some of them slices, whose bytes
// concatenated are a complete tar of the cluster, with each relation file
// whole, its unchanged blocks taken from the parent backup's chunks and
// its changed ones from the new stream's. Nothing of the parent is read:
// its manifest says where each block lies and its CRC32C.
//
// The package is pure: the only I/O is through the Sink the caller gives
// it to store the few new bytes (tar headers, the rewritten backup_label,
// chunks of zeros).
package incremental

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
)

// Sink stores new bytes as one chunk and returns its reference (a whole
// chunk, RawSize = len(data)). It must not keep data.
type Sink interface {
	Store(ctx context.Context, data []byte) (manifest.ChunkRef, error)
}

// Params is what Synthesize needs.
type Params struct {
	// Parent is the manifest of the backup whose backup_manifest the
	// server was given; its relation files must carry BlockCRC32C.
	Parent *manifest.Backup
	// BlockSize is the server's BLCKSZ (and the parent's).
	BlockSize int
	// Archives and Files are the stream's, as the uploader stored them:
	// whole chunks, and the members in archive order.
	Archives []manifest.Archive
	Files    []manifest.File
	// Collector observed the stream.
	Collector *Collector
	Sink      Sink
	// NewChunkSize bounds the chunks of new bytes (default 1 MiB).
	NewChunkSize int
}

// Result is the synthetic full backup.
type Result struct {
	Archives []manifest.Archive
	Files    []manifest.File
	// IncrementalFiles counts the INCREMENTAL members assembled and
	// ChangedBlocks the block images they held.
	IncrementalFiles int
	ChangedBlocks    int64
	// Edits are how PostgreSQL's backup_manifest changes, by its paths
	// (pg_tblspc/<oid>/… for a tablespace's files): the entry of an
	// INCREMENTAL file becomes the whole file's, backup_label's gets the
	// rewritten file's size and checksum. RewritePGManifest applies them.
	Edits map[string]manifest.PGFileEdit
	// Stored are the chunks stored through the Sink, each once.
	Stored []manifest.ChunkRef
}

// Memory: the parent's file index (one map entry per parent file), the
// new file records, the assembled files' block CRCs (4 bytes a block,
// which the manifest holds anyway), one piece per extent, and at most
// NewChunkSize of new bytes.

// piece is a slice [off, off+n) of the chunk table[src].
type piece struct {
	src int
	off int64
	n   int64
}

// builder accumulates one virtual archive.
type builder struct {
	pieces []piece
	size   int64
}

// add appends p, merged into the last piece when it continues it.
func (b *builder) add(p piece) {
	if p.n == 0 {
		return
	}
	b.size += p.n
	if k := len(b.pieces) - 1; k >= 0 && b.pieces[k].src == p.src && b.pieces[k].off+b.pieces[k].n == p.off {
		b.pieces[k].n += p.n
		return
	}
	b.pieces = append(b.pieces, p)
}

// source is an archive, the stream's or the parent's, as pieces with
// their start offsets, to copy ranges of.
type source struct {
	pieces []piece
	starts []int64
	size   int64
}

// copyTo appends the source's bytes [off, off+n) to b.
func (s *source) copyTo(b *builder, off, n int64) error {
	if off < 0 || n < 0 || off+n > s.size {
		return fmt.Errorf("range [%d, %d) is outside an archive of %d bytes", off, off+n, s.size)
	}
	i := sort.Search(len(s.starts), func(i int) bool { return s.starts[i] > off }) - 1
	for n > 0 {
		p := s.pieces[i]
		in := off - s.starts[i]
		k := min(p.n-in, n)
		b.add(piece{src: p.src, off: p.off + in, n: k})
		off += k
		n -= k
		i++
	}
	return nil
}

type synth struct {
	p       Params
	bs      int64
	comb    *manifest.CRC32CFolder
	zeroCRC uint32
	table   []manifest.ChunkRef // whole chunks; pieces index it
	byID    map[string]int
	// New bytes not yet stored, the table entry they will fill.
	nb    []byte
	nbIdx int
	// The chunks of zeros stored, by size.
	zeroIdx map[int64]int

	parentFiles map[string]int // tablespace OID "/" path -> index in Parent.Files
	// heapSent says, per relation (fileKey of dir/<relfilenode>), which
	// main-fork blocks the server sent: see keepsVMBlock.
	heapSent  map[string]*heapBlocks
	parentSrc map[int]*source
	res       Result
}

// Synthesize builds the virtual archives and the final file records.
func Synthesize(ctx context.Context, p Params) (*Result, error) {
	if p.Parent == nil || p.Collector == nil || p.Sink == nil {
		return nil, fmt.Errorf("synthesize: parent, collector and sink are required")
	}
	if p.BlockSize <= 0 || p.BlockSize%512 != 0 {
		return nil, fmt.Errorf("synthesize: block size %d is not a positive multiple of 512", p.BlockSize)
	}
	if p.Parent.BlockSize != p.BlockSize {
		return nil, fmt.Errorf("synthesize: the parent backup %s has block size %d, the server %d", p.Parent.ID, p.Parent.BlockSize, p.BlockSize)
	}
	if p.NewChunkSize <= 0 {
		p.NewChunkSize = 1 << 20
	}
	s := &synth{
		p: p, bs: int64(p.BlockSize), comb: manifest.NewCRC32CFolder(p.BlockSize),
		zeroCRC: crc32.Checksum(make([]byte, p.BlockSize), manifest.Castagnoli),
		byID:    map[string]int{}, nbIdx: -1, zeroIdx: map[int64]int{},
		parentFiles: make(map[string]int, len(p.Parent.Files)), parentSrc: map[int]*source{},
		res: Result{Edits: map[string]manifest.PGFileEdit{}},
	}
	for i, f := range p.Parent.Files {
		if f.Type != manifest.TypeFile {
			continue
		}
		if f.Archive < 0 || f.Archive >= len(p.Parent.Archives) {
			return nil, fmt.Errorf("parent backup %s: %s: archive index %d out of range", p.Parent.ID, f.Path, f.Archive)
		}
		s.parentFiles[fileKey(p.Parent.Archives[f.Archive].TablespaceOID, f.Path)] = i
	}
	s.noteHeapSent()
	type shift struct{ end, delta int64 }
	shifts := make([][]shift, len(p.Archives))
	replaced := make([]map[int64]manifest.File, len(p.Archives))
	builders := make([]builder, len(p.Archives))
	for ai, a := range p.Archives {
		src, err := s.source(a.Chunks)
		if err != nil {
			return nil, fmt.Errorf("archive %s: %w", a.Name, err)
		}
		if src.size != a.RawSize {
			return nil, fmt.Errorf("archive %s: raw_size %d, chunks add up to %d", a.Name, a.RawSize, src.size)
		}
		byOff := map[int64]manifest.File{}
		for _, f := range p.Files {
			if f.Archive == ai && f.Type == manifest.TypeFile {
				byOff[f.Offset] = f
			}
		}
		replaced[ai] = map[int64]manifest.File{}
		b := &builders[ai]
		var cursor int64
		for _, m := range p.Collector.Members(ai) {
			if m.err != nil {
				return nil, fmt.Errorf("archive %s: %w", a.Name, m.err)
			}
			f, ok := byOff[m.ContentOff]
			if !ok || f.Path != m.Path || m.HeaderOff < cursor || m.RecordEnd() > a.RawSize {
				return nil, fmt.Errorf("archive %s: member %s at offset %d does not match the archive's records", a.Name, m.Path, m.ContentOff)
			}
			if err := src.copyTo(b, cursor, m.HeaderOff-cursor); err != nil {
				return nil, fmt.Errorf("archive %s: %w", a.Name, err)
			}
			var nf manifest.File
			if m.Path == labelPath {
				nf, err = s.relabel(ctx, b, f, m)
			} else {
				nf, err = s.assemble(ctx, b, src, a.TablespaceOID, f, m)
			}
			if err != nil {
				return nil, fmt.Errorf("archive %s: %w", a.Name, err)
			}
			replaced[ai][m.ContentOff] = nf
			cursor = m.RecordEnd()
			shifts[ai] = append(shifts[ai], shift{end: cursor, delta: b.size - cursor})
		}
		if err := src.copyTo(b, cursor, a.RawSize-cursor); err != nil {
			return nil, fmt.Errorf("archive %s: %w", a.Name, err)
		}
	}
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	for ai, a := range p.Archives {
		out := manifest.Archive{Name: a.Name, TablespaceOID: a.TablespaceOID}
		for _, pc := range builders[ai].pieces {
			r := s.table[pc.src]
			if pc.off != 0 || pc.n != r.RawSize {
				r.Offset, r.Length = pc.off, pc.n
			}
			out.Chunks = append(out.Chunks, r)
			out.RawSize += r.Len()
			out.StoredSize += r.StoredSize
		}
		s.res.Archives = append(s.res.Archives, out)
	}
	// The files, in the same order, moved by what the replaced records
	// before them added or took away.
	next := make([]int, len(p.Archives))
	delta := make([]int64, len(p.Archives))
	s.res.Files = make([]manifest.File, 0, len(p.Files))
	for _, f := range p.Files {
		ai := f.Archive
		if ai < 0 || ai >= len(p.Archives) {
			return nil, fmt.Errorf("%s: archive index %d out of range", f.Path, ai)
		}
		if nf, ok := replaced[ai][f.Offset]; ok && f.Type == manifest.TypeFile {
			s.res.Files = append(s.res.Files, nf)
			continue
		}
		for next[ai] < len(shifts[ai]) && shifts[ai][next[ai]].end <= f.Offset {
			delta[ai] = shifts[ai][next[ai]].delta
			next[ai]++
		}
		f.Offset += delta[ai]
		s.res.Files = append(s.res.Files, f)
	}
	return &s.res, nil
}

func fileKey(oid uint32, path string) string {
	return strconv.FormatUint(uint64(oid), 10) + "/" + path
}

// pgPath is the backup_manifest path of an archive member.
func pgPath(oid uint32, path string) string {
	if oid == 0 {
		return path
	}
	return "pg_tblspc/" + strconv.FormatUint(uint64(oid), 10) + "/" + path
}

// chunk returns the table index of ref's chunk.
func (s *synth) chunk(ref manifest.ChunkRef) int {
	if i, ok := s.byID[ref.ID]; ok {
		return i
	}
	whole := ref
	whole.Offset, whole.Length = 0, 0
	s.table = append(s.table, whole)
	s.byID[ref.ID] = len(s.table) - 1
	return len(s.table) - 1
}

// source indexes an archive's references.
func (s *synth) source(refs []manifest.ChunkRef) (*source, error) {
	src := &source{pieces: make([]piece, 0, len(refs)), starts: make([]int64, 0, len(refs))}
	for _, r := range refs {
		if r.Offset < 0 || r.Length < 0 || r.Offset+r.Len() > r.RawSize {
			return nil, fmt.Errorf("chunk %s: slice [%d, +%d) outside its %d bytes", r.ID, r.Offset, r.Length, r.RawSize)
		}
		if r.Len() == 0 {
			continue
		}
		src.pieces = append(src.pieces, piece{src: s.chunk(r), off: r.Offset, n: r.Len()})
		src.starts = append(src.starts, src.size)
		src.size += r.Len()
	}
	return src, nil
}

// parentSource returns the parent's archive a.
func (s *synth) parentSource(a int) (*source, error) {
	if src, ok := s.parentSrc[a]; ok {
		return src, nil
	}
	arch := s.p.Parent.Archives[a]
	src, err := s.source(arch.Chunks)
	if err != nil {
		return nil, fmt.Errorf("parent backup %s, archive %s: %w", s.p.Parent.ID, arch.Name, err)
	}
	s.parentSrc[a] = src
	return src, nil
}

// addNew appends new bytes to b, to be stored in the next chunk of new
// bytes.
func (s *synth) addNew(ctx context.Context, b *builder, data []byte) error {
	if s.nbIdx >= 0 && len(s.nb)+len(data) > s.p.NewChunkSize {
		if err := s.flush(ctx); err != nil {
			return err
		}
	}
	if s.nbIdx < 0 {
		s.table = append(s.table, manifest.ChunkRef{})
		s.nbIdx = len(s.table) - 1
	}
	b.add(piece{src: s.nbIdx, off: int64(len(s.nb)), n: int64(len(data))})
	s.nb = append(s.nb, data...)
	return nil
}

// flush stores the pending new bytes.
func (s *synth) flush(ctx context.Context) error {
	if s.nbIdx < 0 {
		return nil
	}
	ref, err := s.store(ctx, s.nb)
	if err != nil {
		return err
	}
	s.table[s.nbIdx] = ref
	s.nb, s.nbIdx = s.nb[:0], -1
	return nil
}

// store stores data through the sink and notes the chunk.
func (s *synth) store(ctx context.Context, data []byte) (manifest.ChunkRef, error) {
	ref, err := s.p.Sink.Store(ctx, data)
	if err != nil {
		return ref, fmt.Errorf("store %d new bytes: %w", len(data), err)
	}
	if ref.RawSize != int64(len(data)) || ref.Offset != 0 || ref.Length != 0 {
		return ref, fmt.Errorf("store %d new bytes: the sink returned a reference of %d bytes", len(data), ref.Len())
	}
	for _, r := range s.res.Stored {
		if r.ID == ref.ID {
			return ref, nil
		}
	}
	s.res.Stored = append(s.res.Stored, ref)
	return ref, nil
}

// maxZeroBlocks bounds the chunks of zeros: a run of zero blocks (the
// rare blocks below a relation's new end that the server neither sent
// nor had before) is cut into power-of-two pieces of at most this many
// blocks, each a slice-free reference to a chunk of exactly that many
// zero blocks. So a restore never reads more than twice the zeros it
// uses, and the few such chunks deduplicate across backups.
const maxZeroBlocks = 128

// addZeros appends n zero bytes (whole blocks) to b.
func (s *synth) addZeros(ctx context.Context, b *builder, n int64) error {
	for n > 0 {
		k := int64(1)
		for k*2 <= min(n/s.bs, maxZeroBlocks) {
			k *= 2
		}
		size := k * s.bs
		idx, ok := s.zeroIdx[size]
		if !ok {
			ref, err := s.store(ctx, make([]byte, size))
			if err != nil {
				return err
			}
			s.table = append(s.table, ref)
			idx = len(s.table) - 1
			s.zeroIdx[size] = idx
		}
		b.add(piece{src: idx, n: size})
		n -= size
	}
	return nil
}

// tarHeader returns the header blocks of a regular file.
func tarHeader(path string, mode uint32, mtime, size int64) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: int64(mode), Size: size, ModTime: time.Unix(mtime, 0)})
	if err != nil {
		return nil, fmt.Errorf("tar header for %s: %w", path, err)
	}
	return buf.Bytes(), nil // the header only: tw is not closed
}

// padding returns the zeros that end a tar record of size bytes.
func padding(size int64) []byte { return make([]byte, (512-size%512)%512) }

type blockSource int

const (
	fromNew blockSource = iota
	fromParent
	fromZero
)

// assemble replaces the INCREMENTAL member m (record f) by the whole file:
// a new header, then runs of blocks from the stream, the parent and
// chunks of zeros, following PostgreSQL's reconstruction (pg_combinebackup
// reconstruct.c): the file has max(truncation length, last block + 1)
// blocks; a block the member holds comes from it, else from the parent
// if the parent's file has it and it is below the truncation length,
// else it is zeros; except that visibility map forks take no block from
// the parent (see vm below).
func (s *synth) assemble(ctx context.Context, b *builder, stream *source, oid uint32, f manifest.File, m Member) (manifest.File, error) {
	target := m.Target
	pi, ok := s.parentFiles[fileKey(oid, target)]
	if !ok {
		return f, fmt.Errorf("the server sent %s as changed blocks of %s, which the parent backup %s does not have", m.Path, target, s.p.Parent.ID)
	}
	pf := &s.p.Parent.Files[pi]
	bs := s.bs
	if pf.Size%bs != 0 {
		return f, fmt.Errorf("%s: the parent backup's file is %d bytes, not whole blocks of %d", target, pf.Size, bs)
	}
	parentBlocks := pf.Size / bs
	if int64(len(pf.BlockCRC32C)) != parentBlocks {
		return f, fmt.Errorf("%s: the parent backup %s records %d block CRCs for its %d blocks", target, s.p.Parent.ID, len(pf.BlockCRC32C), parentBlocks)
	}
	h := m.header
	if len(m.imageCRCs) != len(h.Blocks) {
		return f, fmt.Errorf("%s: %d block images for %d block numbers", m.Path, len(m.imageCRCs), len(h.Blocks))
	}
	blocks := int64(h.ReconstructedBlocks())
	size := blocks * bs
	var parent *source
	var err error
	if parentBlocks > 0 || sameHeader(f, pf, size) {
		if parent, err = s.parentSource(pf.Archive); err != nil {
			return f, err
		}
	}
	if sameHeader(f, pf, size) {
		// The parent's header block says all a new one would: take it,
		// so an unchanged file is one run of the parent's bytes, header
		// and content, which merges with its unchanged neighbours into
		// the parent's chunks, often whole.
		if err := parent.copyTo(b, pf.Offset-blockHeaderSize, blockHeaderSize); err != nil {
			return f, fmt.Errorf("%s: the parent's header: %w", target, err)
		}
	} else {
		hdr, err := tarHeader(target, f.Mode, f.MTime, size)
		if err != nil {
			return f, err
		}
		if err := s.addNew(ctx, b, hdr); err != nil {
			return f, err
		}
	}
	contentOff := b.size
	type run struct {
		from   blockSource
		off, n int64
	}
	var cur run
	flushRun := func() error {
		switch cur.from {
		case fromNew:
			return stream.copyTo(b, cur.off, cur.n)
		case fromParent:
			return parent.copyTo(b, cur.off, cur.n)
		default:
			return s.addZeros(ctx, b, cur.n)
		}
	}
	// A visibility map block the server did not send is taken from the
	// parent only when no heap block it covers was sent (keepsVMBlock);
	// otherwise it is zeros.
	rel, fork, seg, _ := relationParts(target)
	vm := fork == "_vm"
	relKey := fileKey(oid, rel)
	crcs := make(manifest.BlockCRCs, blocks)
	var crc uint32
	j := 0
	for blk := int64(0); blk < blocks; blk++ {
		var r run
		var bc uint32
		switch {
		case j < len(h.Blocks) && int64(h.Blocks[j]) == blk:
			r = run{fromNew, m.ContentOff + h.HeaderLen + int64(j)*bs, bs}
			bc = m.imageCRCs[j]
			j++
		case blk < int64(h.TruncationBlocks) && blk < parentBlocks && (!vm || s.keepsVMBlock(relKey, int64(seg)*s.relseg()+blk)):
			r = run{fromParent, pf.Offset + blk*bs, bs}
			bc = pf.BlockCRC32C[blk]
		default:
			r = run{fromZero, 0, bs}
			bc = s.zeroCRC
		}
		crcs[blk] = bc
		crc = s.comb.Append(crc, bc)
		if cur.n > 0 && r.from == cur.from && (r.from == fromZero || r.off == cur.off+cur.n) {
			cur.n += bs
			continue
		}
		if cur.n > 0 {
			if err := flushRun(); err != nil {
				return f, fmt.Errorf("%s: %w", target, err)
			}
		}
		cur = r
	}
	if cur.n > 0 {
		if err := flushRun(); err != nil {
			return f, fmt.Errorf("%s: %w", target, err)
		}
	}
	if pad := padding(size); len(pad) > 0 {
		if err := s.addNew(ctx, b, pad); err != nil {
			return f, err
		}
	}
	s.res.IncrementalFiles++
	s.res.ChangedBlocks += int64(len(h.Blocks))
	s.res.Edits[pgPath(oid, m.Path)] = manifest.PGFileEdit{Replace: true, Path: pgPath(oid, target), Size: size, CRC32C: crc}
	return manifest.File{Path: target, Type: manifest.TypeFile, Mode: f.Mode, MTime: f.MTime, Size: size,
		CRC32C: crc, BlockCRC32C: crcs, Archive: f.Archive, Offset: contentOff}, nil
}

// blockHeaderSize is a tar header block's size.
const blockHeaderSize = 512

// sameHeader reports whether the parent's record of a file (pf) has a
// header block that serves the assembled file (f, size bytes; pf is the
// parent's record of its path) as is: the same mode, mtime and size, and a path short enough for a plain
// ustar header, so that the record's header is exactly the one block
// before its content (PostgreSQL and archive/tar write no extended header
// then).
func sameHeader(f manifest.File, pf *manifest.File, size int64) bool {
	return pf.Mode == f.Mode && pf.MTime == f.MTime && pf.Size == size &&
		len(pf.Path) < 100 && pf.Offset >= blockHeaderSize
}

// Visibility map forks need care. PostgreSQL's WAL summaries name the
// blocks a record registers, and a heap change that clears a page's
// all-visible and all-frozen bits registers the heap block only (its redo
// clears the bits from it): so the server sends a visibility map block
// when bits were set since the parent, not when they were cleared. The
// parent's copy of such a block may claim pages all-visible that no
// longer are, and index-only scans and VACUUM would then trust it; a
// restore of pg_combinebackup's output has the same flaw. A cleared bit is
// always safe. So a map block the server did not send is taken from the
// parent only when none of the heap blocks it covers was sent (any
// change that clears a bit changes the heap page, which the summaries do
// name); otherwise it is zeros, a new page that claims nothing, and the
// first VACUUM after a restore sets its bits again.

// heapBlocks are the main-fork blocks of one relation the server sent:
// listed in INCREMENTAL files, or a whole segment sent as a plain file.
type heapBlocks struct {
	blocks    []int64 // absolute block numbers, sorted
	wholeSegs map[int64]bool
}

// relseg is the number of blocks in a relation segment file.
func (s *synth) relseg() int64 { return int64(s.p.Collector.relsegBlocks) }

// heapPerVMBlock is how many heap blocks one visibility map block covers:
// two bits each in a page's space after its 24-byte header.
func (s *synth) heapPerVMBlock() int64 { return (s.bs - 24) * 4 }

// noteHeapSent records, for every relation's main fork in the stream,
// which blocks the server sent.
func (s *synth) noteHeapSent() {
	s.heapSent = map[string]*heapBlocks{}
	get := func(key string) *heapBlocks {
		hb := s.heapSent[key]
		if hb == nil {
			hb = &heapBlocks{wholeSegs: map[int64]bool{}}
			s.heapSent[key] = hb
		}
		return hb
	}
	incremental := map[string]bool{}
	for ai, a := range s.p.Archives {
		for _, m := range s.p.Collector.Members(ai) {
			if m.Target == "" {
				continue
			}
			incremental[fileKey(a.TablespaceOID, m.Path)] = true
			rel, fork, seg, ok := relationParts(m.Target)
			if !ok || fork != "" {
				continue
			}
			hb := get(fileKey(a.TablespaceOID, rel))
			for _, b := range m.header.Blocks {
				hb.blocks = append(hb.blocks, int64(seg)*s.relseg()+int64(b))
			}
		}
	}
	for _, f := range s.p.Files {
		if f.Type != manifest.TypeFile || f.Archive < 0 || f.Archive >= len(s.p.Archives) {
			continue
		}
		oid := s.p.Archives[f.Archive].TablespaceOID
		if incremental[fileKey(oid, f.Path)] {
			continue
		}
		if rel, fork, seg, ok := relationParts(f.Path); ok && fork == "" {
			get(fileKey(oid, rel)).wholeSegs[int64(seg)] = true
		}
	}
	for _, hb := range s.heapSent {
		slices.Sort(hb.blocks)
	}
}

// keepsVMBlock reports whether visibility map block vmBlock (counted from
// the fork's start) of relation relKey may be taken from the parent: no
// heap block it covers was sent.
func (s *synth) keepsVMBlock(relKey string, vmBlock int64) bool {
	hb := s.heapSent[relKey]
	if hb == nil {
		return true
	}
	lo := vmBlock * s.heapPerVMBlock()
	hi := lo + s.heapPerVMBlock()
	for seg := lo / s.relseg(); seg*s.relseg() < hi; seg++ {
		if hb.wholeSegs[seg] {
			return false
		}
	}
	i, _ := slices.BinarySearch(hb.blocks, lo)
	return i == len(hb.blocks) || hb.blocks[i] >= hi
}

// relationParts splits a relation file's path, dir/<relfilenode>[_fork][.seg],
// into dir/<relfilenode>, the fork suffix ("" for the main fork, "_fsm",
// "_vm", "_init") and the segment number. ok is false for other files.
func relationParts(p string) (rel, fork string, seg uint32, ok bool) {
	if !pgdata.IsRelationFile(false, p) && !pgdata.IsRelationFile(true, p) {
		return "", "", 0, false
	}
	dir, name := path.Split(p)
	if i := strings.IndexByte(name, '.'); i >= 0 {
		n, err := strconv.ParseUint(name[i+1:], 10, 32)
		if err != nil {
			return "", "", 0, false
		}
		seg, name = uint32(n), name[:i]
	}
	for _, f := range []string{"_fsm", "_vm", "_init"} {
		if rest, found := strings.CutSuffix(name, f); found {
			fork, name = f, rest
			break
		}
	}
	return dir + name, fork, seg, true
}

// relabel replaces backup_label by a copy without the INCREMENTAL FROM
// lines, which make the server refuse to start from it (they are for
// pg_combinebackup).
func (s *synth) relabel(ctx context.Context, b *builder, f manifest.File, m Member) (manifest.File, error) {
	content := StripIncrementalLines(m.label)
	hdr, err := tarHeader(labelPath, f.Mode, f.MTime, int64(len(content)))
	if err != nil {
		return f, err
	}
	if err := s.addNew(ctx, b, hdr); err != nil {
		return f, err
	}
	f.Offset = b.size
	for _, part := range [][]byte{content, padding(int64(len(content)))} {
		if err := s.addNew(ctx, b, part); err != nil {
			return f, err
		}
	}
	f.Size = int64(len(content))
	f.CRC32C = crc32.Checksum(content, manifest.Castagnoli)
	if f.SHA256 != "" {
		sum := sha256.Sum256(content)
		f.SHA256 = hex.EncodeToString(sum[:])
	}
	s.res.Edits[labelPath] = manifest.PGFileEdit{Replace: true, Path: labelPath, Size: f.Size, CRC32C: f.CRC32C}
	return f, nil
}

// StripIncrementalLines returns backup_label without its "INCREMENTAL
// FROM LSN:" and "INCREMENTAL FROM TLI:" lines.
func StripIncrementalLines(label []byte) []byte {
	var out []byte
	for rest := label; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i+1], rest[i+1:]
		} else {
			rest = nil
		}
		if s := string(line); strings.HasPrefix(s, "INCREMENTAL FROM LSN:") || strings.HasPrefix(s, "INCREMENTAL FROM TLI:") {
			continue
		}
		out = append(out, line...)
	}
	return out
}
