package incremental

import (
	"fmt"
	"path"
	"strings"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/pgdata"
)

// Collector gathers, while a backup of a PostgreSQL 17+ server streams,
// what the backup records beyond the splitter's file records: the
// per-block CRC32C of every relation file (manifest.File.BlockCRC32C),
// and, for an incremental backup, the records Synthesize replaces: each
// INCREMENTAL.<name> member (its header and its block images' CRCs) and
// backup_label (its content). One pass over the bytes, no copy of them
// beyond headers and backup_label.
//
// Archives are observed one after the other (the uploader cuts them in
// order), so it takes no lock.
type Collector struct {
	blockSize    int
	relsegBlocks int
	members      map[int][]Member // by archive index
}

// Member is a record of the stream that Synthesize replaces.
type Member struct {
	Path       string // as in the archive: dir/INCREMENTAL.<name>, or backup_label
	HeaderOff  int64  // offset of the record's first header block
	ContentOff int64
	Size       int64
	// For INCREMENTAL.<name>:
	header    incrHeader
	imageCRCs manifest.BlockCRCs // of the block images, in header order
	// For backup_label:
	label []byte
	err   error // a malformed member, reported by Synthesize
}

// RecordEnd is where the member's record ends: content and padding.
func (m *Member) RecordEnd() int64 { return m.ContentOff + (m.Size+511)&^511 }

// maxLabelSize bounds the backup_label the Collector keeps (PostgreSQL's
// is a few hundred bytes).
const maxLabelSize = 64 << 10

// NewCollector returns a collector for a server with blocks of blockSize
// bytes and relation segments of relsegBlocks blocks.
func NewCollector(blockSize, relsegBlocks int) *Collector {
	return &Collector{blockSize: blockSize, relsegBlocks: relsegBlocks, members: map[int][]Member{}}
}

// Members returns the records of archive a to replace, in archive order.
func (c *Collector) Members(a int) []Member { return c.members[a] }

// Observer returns the member observer for archive a (chunker.Splitter's
// Observe); tablespace is true for a tablespace's archive.
func (c *Collector) Observer(a int, tablespace bool) func(path string, headerOff, contentOff, size int64) chunker.MemberObserver {
	o := &observer{c: c, archive: a}
	return func(p string, headerOff, contentOff, size int64) chunker.MemberObserver {
		kind := kindOther
		switch {
		case IsRelationFile(tablespace, p):
			kind = kindRelation
		case strings.HasPrefix(path.Base(p), incrPrefix) && IsRelationFile(tablespace, incrTarget(p)):
			kind = kindIncremental
		case !tablespace && p == labelPath:
			kind = kindLabel
		default:
			return nil
		}
		o.reset(kind, Member{Path: p, HeaderOff: headerOff, ContentOff: contentOff, Size: size})
		if kind == kindRelation {
			o.crcs.out = make(manifest.BlockCRCs, 0, (size+int64(c.blockSize)-1)/int64(c.blockSize))
		}
		return o
	}
}

const (
	incrPrefix = "INCREMENTAL."
	labelPath  = "backup_label"
)

// incrTarget is the file an INCREMENTAL.<name> member describes.
func incrTarget(p string) string {
	dir, base := path.Split(p)
	return dir + strings.TrimPrefix(base, incrPrefix)
}

// IsRelationFile reports whether p (as an archive names it) is a relation
// data file: pgdata.RelationFile's database files, and the shared
// catalogs' global/<relfilenode>[_fork][.seg], which the server also
// sends as INCREMENTAL files. (A stand-in for pgdata.IsRelationFile.)
func IsRelationFile(tablespace bool, p string) bool {
	if _, ok := pgdata.RelationFile(tablespace, p); ok {
		return true
	}
	if tablespace {
		return false
	}
	rest, ok := strings.CutPrefix(p, "global/")
	if !ok || strings.Contains(rest, "/") {
		return false
	}
	// Reuse the database-file grammar on a made-up database directory.
	_, ok = pgdata.RelationFile(false, "base/1/"+rest)
	return ok
}

type memberKind int

const (
	kindOther memberKind = iota
	kindRelation
	kindIncremental
	kindLabel
)

// observer is reused for every member of one archive: members come one
// at a time.
type observer struct {
	c       *Collector
	archive int
	kind    memberKind
	m       Member
	seen    int64
	hdr     []byte // INCREMENTAL header bytes, then backup_label's content
	crcs    blockCRCs
}

func (o *observer) reset(kind memberKind, m Member) {
	o.kind, o.m, o.seen = kind, m, 0
	o.hdr = o.hdr[:0]
	o.crcs = blockCRCs{blockSize: o.c.blockSize}
}

func (o *observer) Write(p []byte) {
	switch o.kind {
	case kindRelation:
		o.crcs.write(p)
	case kindLabel:
		if len(o.hdr)+len(p) <= maxLabelSize {
			o.hdr = append(o.hdr, p...)
		} else if o.m.err == nil {
			o.m.err = fmt.Errorf("%s is over %d bytes", labelPath, maxLabelSize)
		}
	case kindIncremental:
		o.writeIncremental(p) // counts what it consumes
		return
	}
	o.seen += int64(len(p))
}

// writeIncremental keeps the header's first 12 + 4n bytes and hashes the
// block images after the padded header.
func (o *observer) writeIncremental(p []byte) {
	bs := o.c.blockSize
	for len(p) > 0 {
		pos := o.seen
		want := int64(12)
		if len(o.hdr) >= 12 {
			n := int64(uint32(o.hdr[4]) | uint32(o.hdr[5])<<8 | uint32(o.hdr[6])<<16 | uint32(o.hdr[7])<<24)
			if n > int64(o.c.relsegBlocks) {
				n = 0 // refused by the parser at Close
			}
			want = 12 + 4*n
			if hl := incrHeaderLen(n, bs); pos >= hl {
				o.crcs.write(p)
				o.seen += int64(len(p))
				return
			} else if pos >= want {
				// Padding: skip to the images.
				k := min(hl-pos, int64(len(p)))
				p = p[k:]
				o.seen += k
				continue
			}
		}
		k := min(want-int64(len(o.hdr)), int64(len(p)))
		o.hdr = append(o.hdr, p[:k]...)
		p = p[k:]
		o.seen += k
	}
}

func (o *observer) Close(f *manifest.File) {
	switch o.kind {
	case kindRelation:
		f.BlockCRC32C = o.crcs.finish()
	case kindLabel:
		o.m.label = append([]byte(nil), o.hdr...)
		o.c.members[o.archive] = append(o.c.members[o.archive], o.m)
	case kindIncremental:
		m := o.m
		if m.err == nil {
			m.header, m.err = parseIncrHeader(o.hdr, m.Size, o.c.blockSize, o.c.relsegBlocks)
		}
		if m.err != nil {
			m.err = fmt.Errorf("%s: %w", m.Path, m.err)
		}
		m.imageCRCs = o.crcs.finish()
		o.c.members[o.archive] = append(o.c.members[o.archive], m)
	}
	o.kind = kindOther
}
