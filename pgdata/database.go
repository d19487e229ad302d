package pgdata

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Database is one database of a cluster, as its pg_database catalog
// records it.
type Database struct {
	OID  uint32
	Name string
}

// XactStatusFunc returns the content of pg_xact segment file name (four
// or more upper-case hex digits, e.g. "0000"), or an error wrapping
// fs.ErrNotExist when the backup has no such file.
type XactStatusFunc func(name string) ([]byte, error)

var (
	// ErrNotHeapFile is returned for bytes that cannot be pg_database's
	// heap file: a bad page header, line pointer or tuple header.
	ErrNotHeapFile = errors.New("not a PostgreSQL pg_database heap file")
	// ErrAmbiguous is returned when two tuples judged visible carry the
	// same OID or the same name, so the list cannot be trusted.
	ErrAmbiguous = errors.New("pg_database is ambiguous")
)

// Page and tuple layout, PostgreSQL 15 to 18 (src/include/storage/
// bufpage.h, itemid.h, access/htup_details.h).
const (
	pageSize       = 8192 // BLCKSZ; a build with another one is refused
	pageLayout     = 4    // PG_PAGE_LAYOUT_VERSION since 8.3
	pageHeaderSize = 24   // SizeOfPageHeaderData
	itemIDSize     = 4    // sizeof(ItemIdData)
	maxAlign       = 8    // MAXALIGN on 64-bit platforms

	lpNormal = 1 // lp_flags of a line pointer to a tuple

	tupleHeaderSize = 23 // offsetof(HeapTupleHeaderData, t_bits)

	heapHasNull       = 0x0001
	heapXmaxKeyShr    = 0x0010
	heapXmaxExclLock  = 0x0040
	heapXmaxLockOnly  = 0x0080
	heapXminCommitted = 0x0100
	heapXminInvalid   = 0x0200
	heapXminFrozen    = heapXminCommitted | heapXminInvalid
	heapXmaxCommitted = 0x0400
	heapXmaxInvalid   = 0x0800
	heapXmaxIsMulti   = 0x1000
	heapMoved         = 0xC000 // HEAP_MOVED_OFF | HEAP_MOVED_IN
	heapLockMask      = 0x0050 // HEAP_XMAX_SHR_LOCK | EXCL_LOCK | KEYSHR_LOCK
	heapNattsMask     = 0x07FF

	// pg_database begins with oid (int4, at t_hoff, which is MAXALIGNed)
	// and datname (name: NAMEDATALEN bytes, char-aligned, right after) in
	// every release since 12 (catalog/pg_database.h).
	nameDataLen   = 64
	databaseFixed = 4 + nameDataLen
)

// Transaction ids below FirstNormalTransactionId (access/transam.h).
const (
	invalidXid   = 0
	bootstrapXid = 1
	frozenXid    = 2
)

// pg_xact layout (access/transam/clog.c, access/slru.h): two status bits
// per transaction, four transactions a byte, 32 pages of BLCKSZ a segment.
const (
	xactsPerByte     = 4
	xactsPerPage     = pageSize * xactsPerByte
	slruPagesPerSeg  = 32
	xactsPerSegment  = xactsPerPage * slruPagesPerSeg
	xactStatusMask   = 0x03
	xactInProgress   = 0x00
	xactCommitted    = 0x01
	xactAborted      = 0x02
	xactSubCommitted = 0x03
)

// XactFile returns the name of the pg_xact segment file that records the
// status of transaction xid, as PostgreSQL names it (%04X of the segment
// number), so a restore knows which files to fetch.
func XactFile(xid uint32) string {
	return fmt.Sprintf("%04X", xid/xactsPerSegment)
}

// Databases lists the databases recorded in pg_database's heap file
// (global/1262, all its segments concatenated, a whole number of 8 KiB
// pages), the tuples visible once every transaction the backup saw commit
// has committed: a tuple whose inserting transaction did not commit, or
// whose deleting one did, is left out, judged by the tuple's hint bits
// and, without them, by pg_xact (read through xact, only when needed).
// Sorted by OID.
//
// A pg_xact file that the backup lacks is an error naming it; a file too
// short to hold a transaction's status means the status was not yet
// written when the file was copied, which PostgreSQL itself reads as "in
// progress" (zeros), and so does this: that transaction has not
// committed. Two visible tuples with one OID or one name are an error
// wrapping ErrAmbiguous; malformed bytes are errors wrapping
// ErrNotHeapFile. It never panics on any input.
func Databases(pgDatabase []byte, xact XactStatusFunc) ([]Database, error) {
	if len(pgDatabase) == 0 || len(pgDatabase)%pageSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of %d-byte pages",
			ErrNotHeapFile, len(pgDatabase), pageSize)
	}
	st := &xactStatus{read: xact, files: map[string][]byte{}}
	type found struct {
		Database
		where string
	}
	byOID := map[uint32]found{}
	byName := map[string]found{}
	for p := 0; p*pageSize < len(pgDatabase); p++ {
		tuples, err := pageTuples(pgDatabase[p*pageSize : (p+1)*pageSize])
		if err != nil {
			return nil, fmt.Errorf("pg_database page %d: %w", p, err)
		}
		for _, t := range tuples {
			where := fmt.Sprintf("page %d item %d", p, t.item)
			ok, err := st.visible(t.tupleHeader)
			if err != nil {
				return nil, fmt.Errorf("pg_database %s: %w", where, err)
			}
			if !ok {
				continue
			}
			f := found{Database{t.oid, t.name}, where}
			if o, dup := byOID[t.oid]; dup {
				return nil, fmt.Errorf("%w: OID %d is both %q (%s) and %q (%s)",
					ErrAmbiguous, t.oid, o.Name, o.where, t.name, where)
			}
			if o, dup := byName[t.name]; dup {
				return nil, fmt.Errorf("%w: database %q has both OID %d (%s) and OID %d (%s)",
					ErrAmbiguous, t.name, o.OID, o.where, t.oid, where)
			}
			byOID[t.oid], byName[t.name] = f, f
		}
	}
	if len(byOID) == 0 {
		// A cluster always keeps at least the database a DROP DATABASE
		// was run from.
		return nil, fmt.Errorf("%w: no visible database", ErrNotHeapFile)
	}
	dbs := make([]Database, 0, len(byOID))
	for _, f := range byOID {
		dbs = append(dbs, f.Database)
	}
	slices.SortFunc(dbs, func(a, b Database) int { return cmp.Compare(a.OID, b.OID) })
	return dbs, nil
}

// tupleHeader holds the visibility fields of HeapTupleHeaderData.
type tupleHeader struct {
	xmin, xmax uint32
	infomask   uint16
}

// dbTuple is one pg_database tuple of a page, before visibility.
type dbTuple struct {
	tupleHeader
	item int // line pointer number, from 1
	oid  uint32
	name string
}

// pageTuples checks a heap page's header and returns the pg_database
// tuples its LP_NORMAL line pointers point to. An all-zero page (a page
// the relation was extended by and never initialised) holds none, as
// PostgreSQL's PageIsVerified accepts it.
func pageTuples(page []byte) ([]dbTuple, error) {
	le := binary.LittleEndian
	lower := int(le.Uint16(page[12:]))
	upper := int(le.Uint16(page[14:]))
	special := int(le.Uint16(page[16:]))
	sizeVersion := le.Uint16(page[18:])
	if upper == 0 { // PageIsNew
		if !allZero(page) {
			return nil, fmt.Errorf("%w: pd_upper is 0 but the page is not all zeros", ErrNotHeapFile)
		}
		return nil, nil
	}
	if size, v := int(sizeVersion&0xFF00), sizeVersion&0xFF; size != pageSize || v != pageLayout {
		return nil, fmt.Errorf("%w: page size %d, layout version %d (want %d, %d)",
			ErrNotHeapFile, size, v, pageSize, pageLayout)
	}
	if lower < pageHeaderSize || lower > upper || upper > special || special > pageSize ||
		(lower-pageHeaderSize)%itemIDSize != 0 {
		return nil, fmt.Errorf("%w: bad page header (pd_lower %d, pd_upper %d, pd_special %d)",
			ErrNotHeapFile, lower, upper, special)
	}
	var tuples []dbTuple
	for i, off := 1, pageHeaderSize; off < lower; i, off = i+1, off+itemIDSize {
		lp := le.Uint32(page[off:])
		lpOff, lpFlags, lpLen := int(lp&0x7FFF), lp>>15&0x3, int(lp>>17)
		if lpFlags != lpNormal {
			continue // unused, dead or a HOT redirect: no tuple here
		}
		if lpOff < upper || lpOff%maxAlign != 0 || lpLen < tupleHeaderSize || lpOff+lpLen > special {
			return nil, fmt.Errorf("%w: item %d: line pointer offset %d length %d outside the tuple space [%d, %d)",
				ErrNotHeapFile, i, lpOff, lpLen, upper, special)
		}
		t, err := parseTuple(page[lpOff : lpOff+lpLen])
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
		t.item = i
		tuples = append(tuples, t)
	}
	return tuples, nil
}

// parseTuple reads the header and the first two columns (oid, datname)
// of a pg_database tuple; tup is at least tupleHeaderSize bytes.
func parseTuple(tup []byte) (dbTuple, error) {
	le := binary.LittleEndian
	t := dbTuple{tupleHeader: tupleHeader{
		xmin:     le.Uint32(tup[0:]),
		xmax:     le.Uint32(tup[4:]),
		infomask: le.Uint16(tup[20:]),
	}}
	natts := int(le.Uint16(tup[18:]) & heapNattsMask)
	hoff := int(tup[22])
	if t.infomask&heapMoved != 0 {
		// Only VACUUM FULL before 9.0 set these, and pg_upgrade never
		// carries a shared catalog over: pg_database cannot hold them.
		return t, fmt.Errorf("%w: HEAP_MOVED bits set (infomask %#04x)", ErrNotHeapFile, t.infomask)
	}
	if natts < 2 {
		return t, fmt.Errorf("%w: %d attributes, pg_database has more than 2", ErrNotHeapFile, natts)
	}
	minHoff := tupleHeaderSize
	if t.infomask&heapHasNull != 0 {
		minHoff += (natts + 7) / 8
	}
	if hoff < minHoff || hoff%maxAlign != 0 || hoff+databaseFixed > len(tup) {
		return t, fmt.Errorf("%w: t_hoff %d in a %d-byte tuple of %d attributes",
			ErrNotHeapFile, hoff, len(tup), natts)
	}
	// oid and datname are NOT NULL; a null bitmap (bit set = not null)
	// must say so.
	if t.infomask&heapHasNull != 0 && tup[tupleHeaderSize]&0x03 != 0x03 {
		return t, fmt.Errorf("%w: oid or datname is null", ErrNotHeapFile)
	}
	t.oid = le.Uint32(tup[hoff:])
	if t.oid == 0 {
		return t, fmt.Errorf("%w: database OID 0", ErrNotHeapFile)
	}
	name := tup[hoff+4 : hoff+databaseFixed]
	n := bytes.IndexByte(name, 0)
	if n <= 0 {
		return t, fmt.Errorf("%w: database %d: datname is empty or not NUL-terminated", ErrNotHeapFile, t.oid)
	}
	t.name = string(name[:n])
	return t, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// xactStatus judges tuple visibility, reading each pg_xact file at most
// once.
type xactStatus struct {
	read  XactStatusFunc
	files map[string][]byte
}

// visible reports whether a tuple's insertion committed and its deletion,
// if any, did not: HeapTupleSatisfiesMVCC for a snapshot that sees every
// committed transaction, without the current transaction's cases.
func (s *xactStatus) visible(t tupleHeader) (bool, error) {
	switch {
	case t.infomask&heapXminFrozen == heapXminFrozen, t.infomask&heapXminCommitted != 0:
	case t.infomask&heapXminInvalid != 0:
		return false, nil // inserter aborted
	default:
		ok, err := s.committed(t.xmin)
		if err != nil || !ok {
			return false, err
		}
	}
	switch {
	case t.infomask&heapXmaxInvalid != 0:
		return true, nil
	case xmaxLockedOnly(t.infomask):
		return true, nil // a row lock, not a deletion
	case t.infomask&heapXmaxCommitted != 0:
		return false, nil
	case t.infomask&heapXmaxIsMulti != 0:
		// A MultiXactId whose members include an updater. Finding it
		// means reading pg_multixact, which we do not: such a multi is
		// taken for a lock. PostgreSQL never sets HEAP_XMAX_COMMITTED on
		// a multi (honoured above all the same), and only makes one with
		// an updater when a transaction updates a row that others hold
		// compatible row locks on: for pg_database, a superuser's SELECT
		// ... FOR KEY SHARE while ALTER DATABASE changes a non-key column.
		// A DELETE (DROP DATABASE) conflicts with every row lock, so it
		// never leaves one. Taking the multi for a lock can thus only keep
		// an updated row's old version, which has the same OID as its
		// successor: Databases then fails with ErrAmbiguous, and never
		// returns a wrong list.
		return true, nil
	default:
		deleted, err := s.committed(t.xmax)
		return !deleted, err
	}
}

// xmaxLockedOnly is HEAP_XMAX_IS_LOCKED_ONLY: the LOCK_ONLY bit, or (for
// tuples locked before 9.3 and pg_upgraded) a plain xid with only
// EXCL_LOCK among the lock bits.
func xmaxLockedOnly(infomask uint16) bool {
	return infomask&heapXmaxLockOnly != 0 ||
		infomask&(heapXmaxIsMulti|heapLockMask) == heapXmaxExclLock
}

// committed is TransactionIdDidCommit from pg_xact alone: bootstrap and
// frozen ids are committed, the invalid id is not. A sub-committed
// status (3) is not committed: PostgreSQL writes it only for the moment
// between marking a transaction's subtransactions and marking the
// transaction itself, so it means the parent's commit was not recorded
// when the file was copied (without pg_subtrans, which no backup holds,
// the parent cannot be found anyway).
func (s *xactStatus) committed(xid uint32) (bool, error) {
	switch xid {
	case invalidXid:
		return false, nil
	case bootstrapXid, frozenXid:
		return true, nil
	}
	name := XactFile(xid)
	b, ok := s.files[name]
	if !ok {
		if s.read == nil {
			return false, fmt.Errorf("status of transaction %d: no pg_xact reader for pg_xact/%s", xid, name)
		}
		var err error
		if b, err = s.read(name); err != nil {
			return false, fmt.Errorf("status of transaction %d: read pg_xact/%s: %w", xid, name, err)
		}
		s.files[name] = b
	}
	i := int(xid % xactsPerSegment)
	if i/xactsPerByte >= len(b) {
		return false, nil // page not written yet: in progress
	}
	switch b[i/xactsPerByte] >> (2 * (i % xactsPerByte)) & xactStatusMask {
	case xactCommitted:
		return true, nil
	case xactInProgress, xactAborted, xactSubCommitted:
	}
	return false, nil
}
