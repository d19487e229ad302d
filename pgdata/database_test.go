package pgdata

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// tup describes one tuple of a hand-built pg_database page.
type tup struct {
	xmin, xmax uint32
	infomask   uint16
	oid        uint32
	name       string
	lpFlags    uint32 // line pointer flags; 0 means LP_NORMAL here
	rawName    []byte // datname bytes instead of name (not NUL-padded)
	natts      int    // 0 means 16
	hoff       int    // 0 means what the null bitmap needs, maxaligned
	nullBits   byte   // first byte of the null bitmap, with HEAP_HASNULL
}

// tupleBytes lays a tuple out as heap_form_tuple does: header, optional
// null bitmap, padding to t_hoff, then oid, datname and a few more bytes
// standing for pg_database's other columns.
func (t tup) tupleBytes() []byte {
	natts := t.natts
	if natts == 0 {
		natts = 16
	}
	hoff := t.hoff
	if hoff == 0 {
		hoff = tupleHeaderSize
		if t.infomask&heapHasNull != 0 {
			hoff += (natts + 7) / 8
		}
		hoff = (hoff + maxAlign - 1) / maxAlign * maxAlign
	}
	b := make([]byte, hoff+databaseFixed+16)
	le := binary.LittleEndian
	// Data first, so that a t_hoff inside the header (a malformed tuple)
	// leaves the header as given.
	le.PutUint32(b[hoff:], t.oid)
	name := t.rawName
	if name == nil {
		name = []byte(t.name)
	}
	copy(b[hoff+4:hoff+databaseFixed], name)
	le.PutUint32(b[0:], t.xmin)
	le.PutUint32(b[4:], t.xmax)
	le.PutUint16(b[16:], 1) // t_ctid offset number, unread
	le.PutUint16(b[18:], uint16(natts))
	le.PutUint16(b[20:], t.infomask)
	b[22] = byte(hoff)
	if t.infomask&heapHasNull != 0 {
		b[tupleHeaderSize] = t.nullBits
	}
	return b
}

// heapPage builds one 8 KiB heap page holding tuples, the first at the
// end of the page as PageAddItem places them.
func heapPage(tuples ...tup) []byte {
	p := make([]byte, pageSize)
	le := binary.LittleEndian
	upper := pageSize
	for i, t := range tuples {
		b := t.tupleBytes()
		upper = (upper - len(b)) / maxAlign * maxAlign
		copy(p[upper:], b)
		flags := t.lpFlags
		if flags == 0 {
			flags = lpNormal
		}
		le.PutUint32(p[pageHeaderSize+i*itemIDSize:], uint32(upper)|flags<<15|uint32(len(b))<<17)
	}
	le.PutUint16(p[12:], uint16(pageHeaderSize+len(tuples)*itemIDSize))
	le.PutUint16(p[14:], uint16(upper))
	le.PutUint16(p[16:], pageSize)
	le.PutUint16(p[18:], pageSize|pageLayout)
	return p
}

// xactFiles builds pg_xact files recording the given statuses, each file
// as long as needed to hold its highest xid's page.
func xactFiles(status map[uint32]byte) map[string][]byte {
	files := map[string][]byte{}
	for xid, s := range status {
		name := XactFile(xid)
		i := int(xid % xactsPerSegment)
		need := (i/xactsPerPage + 1) * pageSize
		if len(files[name]) < need {
			files[name] = append(files[name], make([]byte, need-len(files[name]))...)
		}
		files[name][i/xactsPerByte] |= s << (2 * (i % xactsPerByte))
	}
	return files
}

// readerOf serves files as XactStatusFunc does, recording what was read.
func readerOf(files map[string][]byte, read *[]string) XactStatusFunc {
	return func(name string) ([]byte, error) {
		if read != nil {
			*read = append(*read, name)
		}
		b, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("backup has no pg_xact/%s: %w", name, fs.ErrNotExist)
		}
		return b, nil
	}
}

// Transaction ids of the visibility table and their pg_xact statuses.
// Their neighbours (same byte) hold other statuses, so a misplaced bit
// shift shows.
const (
	xidCommitted  = 1000
	xidAborted    = 1001
	xidInProgress = 1002
	xidSubCommit  = 1003
	xidUnwritten  = 3*xactsPerPage + 7    // beyond the end of file 0000
	xidOtherSeg   = 5*xactsPerSegment + 6 // in file 0005, committed
	xidMissingSeg = 9 * xactsPerSegment   // file 0009 is missing
)

var testXact = map[uint32]byte{
	xidCommitted:    xactCommitted,
	xidAborted:      xactAborted,
	xidInProgress:   xactInProgress,
	xidSubCommit:    xactSubCommitted,
	xidOtherSeg:     xactCommitted,
	xidOtherSeg - 1: xactAborted, xidOtherSeg + 1: xactAborted,
	xactsPerPage - 1: xactCommitted, // file 0000 is one page long
}

func TestDatabasesVisibility(t *testing.T) {
	const plain = heapXmaxInvalid // committed-by-hint cases add their own
	tests := []struct {
		name     string
		t        tup
		visible  bool
		reads    []string // pg_xact files read
		errWants string   // error substring, if an error is expected
	}{
		{name: "xmin committed hint", t: tup{xmin: xidAborted, infomask: heapXminCommitted | plain}, visible: true},
		{name: "xmin frozen hint", t: tup{xmin: xidAborted, infomask: heapXminFrozen | plain}, visible: true},
		{name: "xmin FrozenTransactionId", t: tup{xmin: frozenXid, infomask: plain}, visible: true},
		{name: "xmin BootstrapTransactionId", t: tup{xmin: bootstrapXid, infomask: plain}, visible: true},
		{name: "xmin InvalidTransactionId", t: tup{xmin: invalidXid, infomask: plain}},
		{name: "xmin invalid hint", t: tup{xmin: xidCommitted, infomask: heapXminInvalid | plain}},
		{name: "xmin committed in pg_xact", t: tup{xmin: xidCommitted, infomask: plain}, visible: true, reads: []string{"0000"}},
		{name: "xmin aborted in pg_xact", t: tup{xmin: xidAborted, infomask: plain}, reads: []string{"0000"}},
		{name: "xmin in progress in pg_xact", t: tup{xmin: xidInProgress, infomask: plain}, reads: []string{"0000"}},
		{name: "xmin sub-committed in pg_xact", t: tup{xmin: xidSubCommit, infomask: plain}, reads: []string{"0000"}},
		{name: "xmin beyond the end of pg_xact file", t: tup{xmin: xidUnwritten, infomask: plain}, reads: []string{"0000"}},
		{name: "xmin in another pg_xact file", t: tup{xmin: xidOtherSeg, infomask: plain}, visible: true, reads: []string{"0005"}},
		{name: "xmin pg_xact file missing", t: tup{xmin: xidMissingSeg, infomask: plain}, reads: []string{"0009"}, errWants: "pg_xact/0009"},
		{name: "xmax committed hint", t: tup{xmin: frozenXid, xmax: xidAborted, infomask: heapXmaxCommitted}},
		{name: "xmax invalid hint", t: tup{xmin: frozenXid, xmax: xidCommitted, infomask: heapXmaxInvalid}, visible: true},
		{name: "xmax lock only", t: tup{xmin: frozenXid, xmax: xidCommitted, infomask: heapXmaxLockOnly | heapXmaxExclLock}, visible: true},
		{name: "xmax exclusive lock before 9.3", t: tup{xmin: frozenXid, xmax: xidCommitted, infomask: heapXmaxExclLock}, visible: true},
		{name: "xmax key-share lock without LOCK_ONLY is an update", t: tup{xmin: frozenXid, xmax: xidCommitted, infomask: heapXmaxKeyShr}, reads: []string{"0000"}},
		{name: "xmax multi lock only", t: tup{xmin: frozenXid, xmax: 7, infomask: heapXmaxIsMulti | heapXmaxLockOnly | heapXmaxKeyShr}, visible: true},
		{name: "xmax multi with updater taken for a lock", t: tup{xmin: frozenXid, xmax: 7, infomask: heapXmaxIsMulti}, visible: true},
		{name: "xmax multi committed hint", t: tup{xmin: frozenXid, xmax: 7, infomask: heapXmaxIsMulti | heapXmaxCommitted}},
		{name: "xmax committed in pg_xact", t: tup{xmin: frozenXid, xmax: xidCommitted}, reads: []string{"0000"}},
		{name: "xmax aborted in pg_xact", t: tup{xmin: frozenXid, xmax: xidAborted}, visible: true, reads: []string{"0000"}},
		{name: "xmax in progress in pg_xact", t: tup{xmin: frozenXid, xmax: xidInProgress}, visible: true, reads: []string{"0000"}},
		{name: "xmax sub-committed in pg_xact", t: tup{xmin: frozenXid, xmax: xidSubCommit}, visible: true, reads: []string{"0000"}},
		{name: "xmax InvalidTransactionId without hint", t: tup{xmin: frozenXid}, visible: true},
		{name: "xmax FrozenTransactionId without hint", t: tup{xmin: frozenXid, xmax: frozenXid}},
		{name: "xmax in another pg_xact file", t: tup{xmin: frozenXid, xmax: xidOtherSeg}, reads: []string{"0005"}},
		{name: "xmax pg_xact file missing", t: tup{xmin: frozenXid, xmax: xidMissingSeg}, reads: []string{"0009"}, errWants: "pg_xact/0009"},
		{name: "xmin and xmax both in pg_xact", t: tup{xmin: xidCommitted, xmax: xidAborted}, visible: true, reads: []string{"0000"}},
		{name: "xmin aborted skips xmax", t: tup{xmin: xidAborted, xmax: xidMissingSeg}, reads: []string{"0000"}},
	}
	files := xactFiles(testXact)
	// A database that is always there, so an invisible test tuple does
	// not leave the page without any.
	always := tup{xmin: frozenXid, infomask: heapXmaxInvalid, oid: 1, name: "template1"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.t.oid, tc.t.name = 16384, "d"
			var read []string
			got, err := Databases(heapPage(always, tc.t), readerOf(files, &read))
			if tc.errWants != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errWants) || !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Databases: error %v, want one naming %s and wrapping fs.ErrNotExist", err, tc.errWants)
				}
				return
			}
			if err != nil {
				t.Fatalf("Databases: %v", err)
			}
			want := []Database{{1, "template1"}}
			if tc.visible {
				want = append(want, Database{16384, "d"})
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Databases (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.reads, read); diff != "" {
				t.Errorf("pg_xact files read (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDatabasesXactReadOnce checks each pg_xact file is asked for once,
// however many tuples need it.
func TestDatabasesXactReadOnce(t *testing.T) {
	var read []string
	page := heapPage(
		tup{xmin: xidCommitted, infomask: heapXmaxInvalid, oid: 1, name: "a"},
		tup{xmin: xidCommitted, infomask: heapXmaxInvalid, oid: 2, name: "b"},
		tup{xmin: frozenXid, xmax: xidAborted, oid: 3, name: "c"},
	)
	got, err := Databases(page, readerOf(xactFiles(testXact), &read))
	if err != nil {
		t.Fatalf("Databases: %v", err)
	}
	if len(got) != 3 || len(read) != 1 {
		t.Errorf("Databases = %v reading %v, want 3 databases reading pg_xact/0000 once", got, read)
	}
}

func TestDatabasesPages(t *testing.T) {
	live := func(oid uint32, name string) tup {
		return tup{xmin: frozenXid, infomask: heapXmaxInvalid, oid: oid, name: name}
	}
	renamed := live(16384, "old")
	renamed.xmax, renamed.infomask = xidCommitted, 0
	garbage := heapPage()
	copy(garbage[2000:], "not a tuple")
	var pages []byte
	pages = append(pages, heapPage(live(16385, "b"), renamed, tup{lpFlags: 0, oid: 5, name: "postgres", xmin: frozenXid, infomask: heapXmaxInvalid})...)
	pages = append(pages, make([]byte, pageSize)...) // a new, never initialised page
	pages = append(pages, heapPage(live(1, "template1"), live(16384, "new"), live(4, "template0"))...)
	// Line pointers that are not LP_NORMAL are skipped whatever they
	// point to.
	unused := heapPage(live(7, "unused"), live(8, "dead"), live(9, "redirect"))
	le := binary.LittleEndian
	for i, flags := range []uint32{0, 3, 2} {
		off := pageHeaderSize + i*itemIDSize
		lp := le.Uint32(unused[off:])&^(3<<15) | flags<<15
		if flags != 3 {
			lp = flags << 15 // unused and redirect items have no storage
		}
		le.PutUint32(unused[off:], lp)
	}
	pages = append(pages, unused...)
	got, err := Databases(pages, readerOf(xactFiles(testXact), nil))
	if err != nil {
		t.Fatalf("Databases: %v", err)
	}
	want := []Database{{1, "template1"}, {4, "template0"}, {5, "postgres"}, {16384, "new"}, {16385, "b"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Databases (-want +got):\n%s", diff)
	}
}

func TestDatabasesNullBitmap(t *testing.T) {
	tests := []struct {
		name     string
		nullBits byte
		ok       bool
	}{
		{"oid and datname present", 0xFB, true},
		{"oid null", 0xFE, false},
		{"datname null", 0xFD, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			page := heapPage(tup{xmin: frozenXid, infomask: heapXmaxInvalid | heapHasNull, nullBits: tc.nullBits, oid: 5, name: "postgres"})
			got, err := Databases(page, nil)
			if tc.ok {
				if err != nil || len(got) != 1 || got[0] != (Database{5, "postgres"}) {
					t.Errorf("Databases = %v, %v; want [{5 postgres}]", got, err)
				}
				return
			}
			if !errors.Is(err, ErrNotHeapFile) {
				t.Errorf("Databases error %v, want ErrNotHeapFile", err)
			}
		})
	}
}

func TestDatabasesAmbiguous(t *testing.T) {
	live := func(oid uint32, name string) tup {
		return tup{xmin: frozenXid, infomask: heapXmaxInvalid, oid: oid, name: name}
	}
	tests := []struct {
		name  string
		page  []byte
		wants string
	}{
		{"same OID", heapPage(live(1, "template1"), live(16384, "a"), live(16384, "b")), `OID 16384 is both "a" (page 0 item 2) and "b" (page 0 item 3)`},
		{"same name", heapPage(live(16384, "a"), live(16385, "a")), `database "a" has both OID 16384 (page 0 item 1) and OID 16385 (page 0 item 2)`},
		{"same OID on two pages", append(heapPage(live(16384, "a")), heapPage(live(16384, "a"))...), "page 1 item 1"},
		// ALTER DATABASE of a row others hold a key-share lock on: the old
		// version's multi xmax is taken for a lock, and the list refused.
		{"multi updater", heapPage(tup{xmin: frozenXid, xmax: 9, infomask: heapXmaxIsMulti, oid: 16384, name: "a"}, live(16384, "a")), "OID 16384"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Databases(tc.page, nil)
			if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), tc.wants) {
				t.Errorf("Databases error %v, want ErrAmbiguous saying %s", err, tc.wants)
			}
		})
	}
}

func TestDatabasesMalformed(t *testing.T) {
	good := tup{xmin: frozenXid, infomask: heapXmaxInvalid, oid: 5, name: "postgres"}
	with := func(f func(p []byte)) []byte {
		p := heapPage(good)
		f(p)
		return p
	}
	le := binary.LittleEndian
	lp := func(p []byte) uint32 { return le.Uint32(p[pageHeaderSize:]) }
	tests := []struct {
		name  string
		data  []byte
		wants string
	}{
		{"empty", nil, "0 bytes"},
		{"partial page", heapPage(good)[:pageSize-1], "8191 bytes"},
		{"no database", heapPage(), "no visible database"},
		{"not all zeros with pd_upper 0", with(func(p []byte) { le.PutUint16(p[14:], 0) }), "not all zeros"},
		{"other page size", with(func(p []byte) { le.PutUint16(p[18:], 16384|pageLayout) }), "page size 16384"},
		{"other layout version", with(func(p []byte) { le.PutUint16(p[18:], pageSize|3) }), "layout version 3"},
		{"pd_lower inside the header", with(func(p []byte) { le.PutUint16(p[12:], 20) }), "pd_lower 20"},
		{"pd_lower above pd_upper", with(func(p []byte) { le.PutUint16(p[12:], le.Uint16(p[14:])+4) }), "bad page header"},
		{"pd_lower between line pointers", with(func(p []byte) { le.PutUint16(p[12:], 26) }), "pd_lower 26"},
		{"pd_special above the page", with(func(p []byte) { le.PutUint16(p[16:], pageSize+8) }), "pd_special 8200"},
		{"pd_upper above pd_special", with(func(p []byte) { le.PutUint16(p[16:], le.Uint16(p[14:])-8) }), "bad page header"},
		{"line pointer below pd_upper", with(func(p []byte) { le.PutUint32(p[pageHeaderSize:], lp(p)-8) }), "outside the tuple space"},
		{"line pointer past pd_special", with(func(p []byte) { le.PutUint32(p[pageHeaderSize:], lp(p)+8<<17) }), "outside the tuple space"},
		{"line pointer unaligned", with(func(p []byte) { le.PutUint32(p[pageHeaderSize:], lp(p)+1) }), "outside the tuple space"},
		{"tuple shorter than its header", with(func(p []byte) { le.PutUint32(p[pageHeaderSize:], lp(p)&0x1FFFF|22<<17) }), "length 22"},
		{"tuple too short for datname", with(func(p []byte) { le.PutUint32(p[pageHeaderSize:], lp(p)&0x1FFFF|60<<17) }), "t_hoff 24 in a 60-byte tuple"},
		{"t_hoff inside the header", heapPage(tup{hoff: 16, xmin: frozenXid, oid: 5, name: "x"}), "t_hoff 16"},
		{"t_hoff unaligned", heapPage(tup{hoff: 25, xmin: frozenXid, oid: 5, name: "x"}), "t_hoff 25"},
		{"t_hoff over the null bitmap", heapPage(tup{hoff: 24, natts: 16, infomask: heapHasNull, nullBits: 3, xmin: frozenXid, oid: 5, name: "x"}), "t_hoff 24"},
		{"one attribute", heapPage(tup{natts: 1, xmin: frozenXid, oid: 5, name: "x"}), "1 attributes"},
		{"OID 0", heapPage(tup{xmin: frozenXid, name: "x"}), "OID 0"},
		{"empty name", heapPage(tup{xmin: frozenXid, oid: 5}), "empty or not NUL-terminated"},
		{"name without NUL", heapPage(tup{xmin: frozenXid, oid: 5, rawName: []byte(strings.Repeat("n", nameDataLen))}), "database 5: datname"},
		{"HEAP_MOVED", heapPage(tup{xmin: frozenXid, infomask: 0x4000, oid: 5, name: "x"}), "HEAP_MOVED"},
		{"error names the page", append(heapPage(good), heapPage(tup{xmin: frozenXid, name: "x"})...), "page 1: item 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Databases(tc.data, readerOf(nil, nil))
			if !errors.Is(err, ErrNotHeapFile) || !strings.Contains(err.Error(), tc.wants) {
				t.Errorf("Databases = %v, %v; want an ErrNotHeapFile saying %q", got, err, tc.wants)
			}
		})
	}
}

func TestXactFile(t *testing.T) {
	tests := []struct {
		xid  uint32
		want string
	}{
		{0, "0000"},
		{3, "0000"},
		{32*8192*4 - 1, "0000"},
		{32 * 8192 * 4, "0001"},
		{0xA0 * 32 * 8192 * 4, "00A0"},
		{0xFFFFFFFF, "0FFF"},
	}
	for _, tc := range tests {
		if got := XactFile(tc.xid); got != tc.want {
			t.Errorf("XactFile(%d) = %q, want %q", tc.xid, got, tc.want)
		}
	}
}
