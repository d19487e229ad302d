// Package chunker cuts a PostgreSQL base backup's tar archives into
// content-addressed chunks and seals them (LZ4 frames named by the SHA-256
// of their raw bytes).
//
// A chunk is a contiguous byte range of the original tar, headers and
// padding included, so concatenating an archive's chunks reproduces it byte
// for byte and restore is just "decompress and untar". Chunk boundaries
// follow tar member boundaries by a deterministic rule (see Splitter), so
// an unchanged relation file yields the same chunks, and the same chunk
// IDs, in every backup whatever changed before it: that is what makes
// deduplication between backups work.
//
// The package is pure: io.Reader in, values out. It imports no I/O beyond
// io, which keeps it easy to fuzz and to benchmark against the CPU budget.
package chunker

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/pgstow/pgstow/manifest"
)

// maxReadSize bounds one read into a chunk buffer, so the CRC32C of the
// bytes just read runs while they are still in the CPU cache instead of
// after a whole chunk has gone by.
const maxReadSize = 256 << 10

// Chunk is a contiguous byte range of a tar archive.
type Chunk struct {
	Seq    int    // 0, 1, 2… within the archive
	Offset int64  // offset of Data[0] within the archive
	Data   []byte // raw tar bytes, in a buffer obtained from the Splitter's get function; the caller owns it
}

type splitState int

const (
	stateHeader  splitState = iota // next: the headers of a member, or the end-of-archive marker
	stateBody                      // placing the current member's bytes
	stateTrailer                   // after the first zero block, up to EOF
	stateDone
)

// Splitter cuts one tar archive into chunks of at most targetSize bytes,
// and records its members as manifest.File values on the way.
//
// The cutting rule: a member's record is its extended headers (PAX 'x',
// GNU 'L'/'K'), its header block, its content and the padding to 512
// bytes. A record larger than targetSize starts a new chunk and is cut at
// every targetSize bytes from its first byte, and the chunk holding its
// last piece is closed after it. A smaller record goes into the current
// chunk if it fits, and otherwise starts a new one. The trailer (from the
// first zero block to EOF) is placed like a record. So every chunk is at
// most targetSize bytes, and the pieces of a large file depend only on its
// own record, which is what lets unchanged relation files deduplicate.
//
// Memory: the Splitter fills one chunk buffer at a time, straight from the
// reader, and never allocates per member beyond its manifest.File. The one
// exception is a member whose headers do not fit in what is left of the
// current chunk: they are staged in a scratch buffer of at most
// maxHeaderBytes (a few KiB in practice).
type Splitter struct {
	r       io.Reader
	target  int
	archive int
	get     func() []byte

	err      error // sticky; io.EOF after the last chunk
	state    splitState
	ready    Chunk // a chunk for Next to return, when hasReady
	hasReady bool
	cur      []byte // the chunk being filled; nil when there is none
	seq      int
	emitted  int64 // bytes returned in chunks so far: the Offset of cur
	off      int64 // bytes consumed from r
	files    []manifest.File

	// Header staging for the member being read: hdr holds its header
	// blocks, in cur just past its data while they fit there (no copy),
	// else in scratch.
	hdr     []byte
	spilled bool
	scratch []byte

	// The member being placed (stateBody).
	pend        []byte // header bytes from scratch still to place
	left        int64  // content and padding bytes still to read
	contentLeft int64  // content bytes still to read, for the CRC
	big         bool   // the record is larger than a chunk: close the chunk after it
	file        manifest.File
	hasFile     bool  // file is a member to record (not a global PAX header)
	hdrOff      int64 // offset of the member's first header block

	// hashSHA256 says which regular files' content gets a SHA-256
	// (manifest.File.SHA256); hashing is set while the current member is
	// one of them, and sha is the hash, reused.
	hashSHA256 func(path string) bool
	hashing    bool
	sha        hash.Hash

	// observe, when set, is asked for an observer of each regular file;
	// obs is the current member's, nil when it has none.
	observe func(path string, headerOff, contentOff, size int64) MemberObserver
	obs     MemberObserver

	// The trailer (stateTrailer).
	trailerStart int   // where the trailer begins in cur
	trailerRead  int64 // trailer bytes read so far
	trailerEOF   bool  // r is exhausted: the last chunk goes next
}

// NewSplitter reads one tar archive from r and cuts it into chunks of at
// most targetSize bytes (which must be at least 512, one tar block). get
// returns an empty buffer with a capacity of at least targetSize; the
// caller pools them, and a returned chunk owns its buffer until the caller
// recycles it. archive is the index stored in File.Archive.
func NewSplitter(r io.Reader, targetSize int, archive int, get func() []byte) *Splitter {
	s := &Splitter{r: r, target: targetSize, archive: archive, get: get}
	switch {
	case targetSize < blockSize:
		s.err = fmt.Errorf("chunk target size %d is below the tar block size %d", targetSize, blockSize)
	case r == nil || get == nil:
		s.err = errors.New("splitter needs a reader and a buffer source")
	}
	return s
}

// HashSHA256 makes the splitter record a SHA-256 of the content of each
// regular file for which sealed(path) is true, in File.SHA256: the files
// PostgreSQL ends with the CRC32C of their content, whose CRC32C is the
// same for every version (pgdata.SealedByCRC, which the caller binds, as
// this package knows nothing of PostgreSQL's layout). They are small and
// few, so the cost is nil. Call it before the first Next.
func (s *Splitter) HashSHA256(sealed func(path string) bool) { s.hashSHA256 = sealed }

// MemberObserver sees one regular file's content as it streams through
// the Splitter. Write gets the content bytes in order, in pieces of any
// size (padding excluded), straight from the chunk buffer: it must not
// keep p. Close is called once the content is complete, with the member's
// record before it is appended to Files, so the observer can add to it
// (manifest.File.BlockCRC32C). An archive that fails midway leaves the
// current observer unclosed.
type MemberObserver interface {
	Write(p []byte)
	Close(f *manifest.File)
}

// Observe makes the splitter call newObserver for each regular file
// member, with its path, the archive offset of its record's first header
// block (extended headers included), of its content, and its content
// size; the record ends at contentOff plus size rounded up to 512 bytes.
// Those spans let a caller describe an archive in which some records are
// replaced (incremental backups). newObserver returns nil for a member it
// does not want to see. It is what lets callers that know PostgreSQL's
// layout compute per-file facts in the one pass over the bytes, which
// this package, knowing nothing of PostgreSQL, cannot. Call it before the
// first Next.
func (s *Splitter) Observe(newObserver func(path string, headerOff, contentOff, size int64) MemberObserver) {
	s.observe = newObserver
}

// Next returns the next chunk of the archive, and io.EOF after the last
// one. Errors are final: a malformed or truncated archive cannot be
// resumed.
func (s *Splitter) Next() (Chunk, error) {
	for s.err == nil {
		if s.hasReady {
			c := s.ready
			s.ready, s.hasReady = Chunk{}, false
			return c, nil
		}
		switch s.state {
		case stateHeader:
			s.err = s.readHeaders()
		case stateBody:
			s.err = s.readBody()
		case stateTrailer:
			s.err = s.readTrailer()
		default:
			s.err = io.EOF
		}
	}
	return Chunk{}, s.err
}

// Files returns the archive's members in archive order. It is complete
// once Next has returned io.EOF.
func (s *Splitter) Files() []manifest.File { return s.files }

// Size returns the number of archive bytes consumed so far. After io.EOF it
// is the archive's size, and the sum of the chunk sizes.
func (s *Splitter) Size() int64 { return s.off }

// emit hands data over as the next chunk.
func (s *Splitter) emit(data []byte) {
	s.ready = Chunk{Seq: s.seq, Offset: s.emitted, Data: data}
	s.hasReady = true
	s.seq++
	s.emitted += int64(len(data))
}

// newBuffer starts a new, empty chunk buffer.
func (s *Splitter) newBuffer() error {
	b := s.get()
	if cap(b) < s.target {
		return fmt.Errorf("chunk buffer has capacity %d, below the target size %d", cap(b), s.target)
	}
	s.cur = b[:0]
	return nil
}

// read fills p from r. EOF is always unexpected here: a caller that
// accepts it (the trailer) reads on its own.
func (s *Splitter) read(p []byte) error {
	n, err := io.ReadFull(s.r, p)
	s.off += int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// growHeader extends the staged headers of the current member by n bytes
// and returns those bytes to read into. The headers stay in the chunk
// buffer, right after its data, while they fit within the target size;
// past that they move to scratch, because they must be contiguous to be
// parsed and may end up spanning chunks.
func (s *Splitter) growHeader(n int) ([]byte, error) {
	k := len(s.hdr)
	if k+n > maxHeaderBytes {
		return nil, fmt.Errorf("tar member at offset %d: more than %d bytes of headers", s.hdrOff, maxHeaderBytes)
	}
	if !s.spilled {
		pos := len(s.cur)
		if pos+k+n <= s.target {
			s.hdr = s.cur[pos : pos+k+n]
			return s.hdr[k:], nil
		}
		s.scratch = append(s.scratch[:0], s.hdr...)
		s.spilled = true
	}
	if cap(s.scratch) < k+n {
		grown := make([]byte, k, max(k+n, 2*cap(s.scratch)))
		copy(grown, s.scratch[:k])
		s.scratch = grown
	}
	s.scratch = s.scratch[:k+n]
	s.hdr = s.scratch
	return s.hdr[k:], nil
}

// readHeaders reads the headers of the next member (or the first block of
// the end-of-archive marker), records the member and decides where its
// record goes.
func (s *Splitter) readHeaders() error {
	if s.cur != nil && s.target-len(s.cur) < blockSize {
		// Every record, and the trailer, is at least one block: none can
		// join this chunk, so close it now.
		s.emit(s.cur)
		s.cur = nil
		return nil
	}
	if s.cur == nil {
		if err := s.newBuffer(); err != nil {
			return err
		}
	}
	s.hdr, s.spilled = s.cur[len(s.cur):len(s.cur)], false
	s.hdrOff = s.off
	var ext extHeaders
	for {
		blkOff := s.off
		blk, err := s.growHeader(blockSize)
		if err != nil {
			return err
		}
		if err := s.read(blk); err != nil {
			if ext.n == 0 && blkOff == s.off {
				return fmt.Errorf("archive ends at offset %d without an end-of-archive marker: %w", blkOff, err)
			}
			return fmt.Errorf("tar header at offset %d: %w", blkOff, err)
		}
		if isZeroBlock(blk) {
			if ext.n > 0 {
				return fmt.Errorf("offset %d: extended header at offset %d is followed by the end-of-archive marker, not a member", blkOff, s.hdrOff)
			}
			// Never spilled: the first block of a record always fits.
			s.trailerStart = len(s.cur)
			s.cur = s.cur[:len(s.cur)+blockSize]
			s.trailerRead = blockSize
			s.hdr = nil
			s.state = stateTrailer
			return nil
		}
		h, err := parseBlock(blk, blkOff)
		if err != nil {
			return err
		}
		switch h.typeflag {
		case typePAX, typeGNULongNam, typeGNULongLnk:
			if !h.sizeOK || h.size > maxExtSize {
				return fmt.Errorf("offset %d: extended header (type %q) has invalid or too large size field %q (limit %d)", blkOff, h.typeflag, blk[offSize:offSize+12], maxExtSize)
			}
			size := int(h.size)
			dataOff := s.off
			data, err := s.growHeader(padded(size))
			if err != nil {
				return err
			}
			if err := s.read(data); err != nil {
				return fmt.Errorf("extended header at offset %d: data truncated at offset %d: %w", blkOff, s.off, err)
			}
			data = data[:size]
			ext.n++
			switch h.typeflag {
			case typePAX:
				if err := ext.parsePAX(data); err != nil {
					return fmt.Errorf("offset %d: PAX extended header: %w", dataOff, err)
				}
			case typeGNULongNam:
				ext.gnuName = cString(data)
			case typeGNULongLnk:
				ext.gnuLink = cString(data)
			}
			continue
		}
		return s.startMember(blk, blkOff, h, &ext)
	}
}

// padded rounds n up to a whole number of tar blocks.
func padded(n int) int { return (n + blockSize - 1) &^ (blockSize - 1) }

// startMember records the member whose header block blk (at offset blkOff)
// has just been read, after its extended headers ext, and places its
// headers: in the current chunk if the whole record fits there, else at
// the start of a new chunk.
func (s *Splitter) startMember(blk []byte, blkOff int64, h headerInfo, ext *extHeaders) error {
	name := headerName(blk)
	if ext.hasPath {
		name = ext.path
	}
	if ext.gnuName != "" {
		// archive/tar lets a GNU long name win over a PAX path too.
		name = ext.gnuName
	}
	link := cString(blk[offLinkname : offLinkname+100])
	if ext.hasLinkpath {
		link = ext.linkpath
	}
	if ext.gnuLink != "" {
		link = ext.gnuLink
	}

	size := h.size
	if ext.hasSize {
		size = ext.size
	} else if !h.sizeOK {
		return fmt.Errorf("tar member %q at offset %d: invalid size field %q", name, blkOff, blk[offSize:offSize+12])
	}
	mode, ok := parseNumeric(blk[offMode : offMode+8])
	if !ok {
		return fmt.Errorf("tar member %q at offset %d: invalid mode field %q", name, blkOff, blk[offMode:offMode+8])
	}
	mtime, ok := parseNumeric(blk[offMTime : offMTime+12])
	if ext.hasMTime {
		mtime, ok = ext.mtime, true
	}
	if !ok {
		return fmt.Errorf("tar member %q at offset %d: invalid mtime field %q", name, blkOff, blk[offMTime:offMTime+12])
	}

	hdrLen := int64(len(s.hdr))
	f := manifest.File{
		Mode:    uint32(mode & 0o7777),
		MTime:   mtime,
		Archive: s.archive,
		Offset:  blkOff, // the header, for members without content
	}
	s.hasFile = true
	switch tf := h.typeflag; {
	case tf == typeRegA && len(name) > 0 && name[len(name)-1] == '/':
		// Pre-POSIX tars mark directories by the trailing slash alone.
		fallthrough
	case tf == typeDir:
		f.Type, f.Path = manifest.TypeDir, cleanName(name, true)
		size = 0 // header-only type, as archive/tar reads it
	case tf == typeReg || tf == typeRegA:
		f.Type, f.Path = manifest.TypeFile, cleanName(name, false)
		f.Size = size
		f.Offset = s.hdrOff + hdrLen
		if s.hashSHA256 != nil && s.hashSHA256(f.Path) {
			if s.sha == nil {
				s.sha = sha256.New()
			}
			s.sha.Reset()
			s.hashing = true
		}
		if s.observe != nil {
			s.obs = s.observe(f.Path, s.hdrOff, f.Offset, size)
		}
	case tf == typeSymlink:
		f.Type, f.Path, f.LinkTarget = manifest.TypeSymlink, cleanName(name, false), link
		size = 0
	case tf == typeLink:
		return fmt.Errorf("tar member %q at offset %d: hard link to %q: PostgreSQL never sends hard links", name, blkOff, link)
	case tf == typePAXGlobal:
		if ext.n > 0 {
			return fmt.Errorf("offset %d: global PAX header after an extended header at offset %d", blkOff, s.hdrOff)
		}
		// Applies to the archive, not a member: kept as bytes, not parsed.
		s.hasFile = false
	default:
		return fmt.Errorf("tar member %q at offset %d: unsupported type %q", name, blkOff, tf)
	}
	if size < 0 || size > maxMemberSize {
		return fmt.Errorf("tar member %q at offset %d: invalid size %d", name, blkOff, size)
	}
	s.file = f
	s.left = size + (blockSize-size%blockSize)%blockSize
	s.contentLeft = size
	s.state = stateBody

	// Place the record: its headers are staged, and its size is known now.
	record := hdrLen + s.left
	pos := len(s.cur)
	hdr := s.hdr
	s.hdr = nil
	s.big = record > int64(s.target)
	switch {
	case !s.spilled && int64(pos)+record <= int64(s.target):
		// It fits: the headers are already in place.
		s.cur = s.cur[:pos+len(hdr)]
	case !s.spilled && pos == 0:
		// A large record at the start of a chunk: its first piece starts
		// with the headers already in place.
		s.cur = s.cur[:len(hdr)]
	case !s.spilled:
		// A new chunk. The headers sit past the end of the chunk being
		// closed, in its buffer: copy them before handing it over.
		old := s.cur[:pos]
		if err := s.newBuffer(); err != nil {
			return err
		}
		s.cur = append(s.cur, hdr...)
		s.emit(old)
	default:
		// The headers are in scratch; the chunk is closed if it has
		// anything in it, and they are copied into the next ones.
		if pos > 0 {
			s.emit(s.cur)
			s.cur = nil
		}
		s.pend = hdr
	}
	return nil
}

// maxMemberSize keeps size plus padding within an int64.
const maxMemberSize = 1<<63 - 1 - blockSize

// readBody moves the current record's remaining bytes into chunk buffers:
// staged headers from scratch, then content and padding straight from the
// reader. It returns after it closes a chunk, or when the record is done.
func (s *Splitter) readBody() error {
	for {
		if len(s.pend) == 0 && s.left == 0 {
			s.finishMember()
			return nil
		}
		if s.cur == nil {
			if err := s.newBuffer(); err != nil {
				return err
			}
		}
		pos := len(s.cur)
		room := s.target - pos // > 0: a full chunk is closed at once
		if len(s.pend) > 0 {
			n := copy(s.cur[pos:s.target], s.pend)
			s.pend = s.pend[n:]
			s.cur = s.cur[:pos+n]
		} else {
			n := int(min(int64(room), s.left, maxReadSize))
			p := s.cur[pos : pos+n]
			if err := s.read(p); err != nil {
				return fmt.Errorf("tar member %q at offset %d: content truncated at offset %d: %w", s.file.Path, s.hdrOff, s.off, err)
			}
			if s.contentLeft > 0 {
				c := min(int64(n), s.contentLeft)
				s.file.CRC32C = crc32.Update(s.file.CRC32C, manifest.Castagnoli, p[:c])
				if s.hashing {
					s.sha.Write(p[:c])
				}
				if s.obs != nil {
					s.obs.Write(p[:c])
				}
				s.contentLeft -= c
			}
			s.left -= int64(n)
			s.cur = s.cur[:pos+n]
		}
		if len(s.cur) == s.target {
			// Full: a cut at k×targetSize of a large record, or a small
			// record that filled the chunk exactly.
			s.emit(s.cur)
			s.cur = nil
			return nil
		}
	}
}

// finishMember records the member just placed and, after a large record,
// closes its last piece so the next member starts a new chunk.
func (s *Splitter) finishMember() {
	if s.hashing {
		var sum [sha256.Size]byte
		s.file.SHA256 = hex.EncodeToString(s.sha.Sum(sum[:0]))
		s.hashing = false
	}
	if s.obs != nil {
		s.obs.Close(&s.file)
		s.obs = nil
	}
	if s.hasFile {
		s.files = append(s.files, s.file)
	}
	s.file = manifest.File{}
	s.state = stateHeader
	if s.big && len(s.cur) > 0 {
		s.emit(s.cur)
		s.cur = nil
	}
	s.big = false
}

// readTrailer reads the end-of-archive marker and whatever follows it up
// to EOF (tar pads archives to a record size with zeros), placing it like
// a record whose size is only known at EOF: when it outgrows the current
// chunk it moves to a new one, and it is cut every targetSize bytes from
// there.
func (s *Splitter) readTrailer() error {
	if s.trailerEOF {
		if len(s.cur) > 0 {
			s.emit(s.cur)
		}
		s.cur = nil
		s.state = stateDone
		return nil
	}
	pos := len(s.cur)
	full := pos == s.target
	var p []byte
	if full {
		// Whether the trailer fits in this chunk depends on whether
		// anything follows: read ahead a little into scratch to know,
		// rather than take a buffer that might not be needed.
		if cap(s.scratch) < blockSize {
			s.scratch = make([]byte, blockSize)
		}
		p = s.scratch[:blockSize]
	} else {
		p = s.cur[pos : pos+min(s.target-pos, maxReadSize)]
	}
	n, err := io.ReadFull(s.r, p)
	p = p[:n]
	// The marker is two zero blocks: check the second one.
	if lo, hi := max(s.trailerRead, blockSize), min(s.trailerRead+int64(n), 2*blockSize); lo < hi {
		if !isZeroBlock(p[lo-s.trailerRead : hi-s.trailerRead]) {
			return fmt.Errorf("offset %d: zero block followed by a non-zero block, not an end-of-archive marker", s.off-s.trailerRead+blockSize)
		}
	}
	s.trailerRead += int64(n)
	s.off += int64(n)
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		if s.trailerRead < 2*blockSize {
			return fmt.Errorf("archive ends at offset %d inside its end-of-archive marker: %w", s.off, io.ErrUnexpectedEOF)
		}
		s.trailerEOF = true
	default:
		return fmt.Errorf("end-of-archive marker at offset %d: %w", s.off-s.trailerRead, err)
	}
	if !full {
		s.cur = s.cur[:pos+n]
		return nil
	}
	if n == 0 {
		return nil // EOF: the trailer ends with this chunk
	}
	// More trailer than fits: close this chunk. If records precede the
	// trailer in it, the trailer moves to the new chunk (a copy of at most
	// one chunk, once per archive), as any record that does not fit would.
	old := s.cur
	if err := s.newBuffer(); err != nil {
		return err
	}
	if s.trailerStart > 0 {
		// Fits: the records before the trailer take at least one block,
		// and n is at most one block.
		s.cur = append(s.cur, old[s.trailerStart:]...)
		old = old[:s.trailerStart]
		s.trailerStart = 0
	}
	s.cur = append(s.cur, p...)
	s.emit(old)
	return nil
}
