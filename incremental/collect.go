package incremental

import (
	"fmt"

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
	Target     string // for INCREMENTAL.<name>, dir/<name>: the file it stands for
	HeaderOff  int64  // offset of the record's first header block
	ContentOff int64
	Size       int64
	// For INCREMENTAL.<name>:
	header    pgdata.IncrementalHeader
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
		m := Member{Path: p, HeaderOff: headerOff, ContentOff: contentOff, Size: size}
		kind := kindOther
		if pgdata.IsRelationFile(tablespace, p) {
			kind = kindRelation
		} else if t, ok := pgdata.IncrementalName(p); ok && pgdata.IsRelationFile(tablespace, t) {
			kind, m.Target = kindIncremental, t
		} else if !tablespace && p == labelPath {
			kind = kindLabel
		} else {
			return nil
		}
		o.reset(kind, m)
		if kind == kindRelation {
			// A relation file is at most a segment; a size a damaged
			// tar header claims must not size the allocation.
			n := (max(size, 0) + int64(c.blockSize) - 1) / int64(c.blockSize)
			o.crcs.out = make(manifest.BlockCRCs, 0, min(n, int64(c.relsegBlocks)))
		}
		return o
	}
}

const labelPath = "backup_label"

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
	parsed  bool   // the INCREMENTAL header is parsed into m.header
	crcs    blockCRCs
}

func (o *observer) reset(kind memberKind, m Member) {
	o.kind, o.m, o.seen, o.parsed = kind, m, 0, false
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

// writeIncremental keeps the header's fixed part and block numbers,
// parses them once they are in, skips the padding and hashes the block
// images. After an error it drops the rest: Synthesize reports the error.
func (o *observer) writeIncremental(p []byte) {
	for len(p) > 0 && o.m.err == nil {
		if !o.parsed {
			want := 12
			if len(o.hdr) >= want {
				if want, o.m.err = pgdata.IncrementalHeaderLen(o.hdr, o.c.relsegBlocks); o.m.err != nil {
					return
				}
			}
			if len(o.hdr) < want {
				k := min(want-len(o.hdr), len(p))
				o.hdr = append(o.hdr, p[:k]...)
				p, o.seen = p[k:], o.seen+int64(k)
				continue
			}
			o.m.header, o.m.err = pgdata.ParseIncrementalHeader(o.hdr, o.c.blockSize, o.c.relsegBlocks)
			o.parsed = true
			continue
		}
		if pad := o.m.header.HeaderLen - o.seen; pad > 0 {
			k := min(pad, int64(len(p)))
			for i, c := range p[:k] {
				if c != 0 {
					o.m.err = fmt.Errorf("incremental file: byte %d of the header's padding is 0x%02x, want zeros", o.seen+int64(i), c)
					return
				}
			}
			p, o.seen = p[k:], o.seen+k
			continue
		}
		o.crcs.write(p)
		o.seen += int64(len(p))
		return
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
		if m.err == nil && !o.parsed {
			// A header that ended with the member, or was cut short.
			m.header, m.err = pgdata.ParseIncrementalHeader(o.hdr, o.c.blockSize, o.c.relsegBlocks)
		}
		if m.err == nil {
			m.err = m.header.CheckSize(m.Size)
		}
		if m.err != nil {
			m.err = fmt.Errorf("%s: %w", m.Path, m.err)
		}
		m.imageCRCs = o.crcs.finish()
		o.c.members[o.archive] = append(o.c.members[o.archive], m)
	}
	o.kind = kindOther
}
