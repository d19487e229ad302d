package manifest

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Limits on WAL segment sizes, as enforced by initdb --wal-segsize.
const (
	minSegmentSize = 1 << 20 // 1 MiB
	maxSegmentSize = 1 << 30 // 1 GiB
)

// maxCount bounds the number of files, chunks or WAL segments one backup
// may hold. Real clusters stay far below it; anything above is a corrupt or
// hostile manifest, and refusing it keeps memory bounded.
const maxCount = 10_000_000

// ValidSegmentSize reports whether n is a WAL segment size PostgreSQL can
// be configured with: a power of two from 1 MiB to 1 GiB. Every function
// here that takes a segment size assumes it is valid.
func ValidSegmentSize(n uint64) bool {
	return n >= minSegmentSize && n <= maxSegmentSize && bits.OnesCount64(n) == 1
}

// segmentsPerID is the number of segments per "log id", the middle eight
// hex digits of a segment name (XLogSegmentsPerXLogId).
func segmentsPerID(segSize uint64) uint64 {
	return 0x100000000 / segSize
}

// SegmentNo is the number of the segment that holds lsn (XLByteToSeg).
func SegmentNo(lsn LSN, segSize uint64) uint64 {
	return uint64(lsn) / segSize
}

// PrevSegmentNo is the number of the segment that holds the byte just
// before lsn (XLByteToPrevSeg). An end LSN points one past the last byte
// written, so this is the last segment a backup ending there needs; lsn
// must not be 0.
func PrevSegmentNo(lsn LSN, segSize uint64) uint64 {
	return (uint64(lsn) - 1) / segSize
}

// SegmentName is the file name of segment segno on timeline tli
// (XLogFileName).
func SegmentName(tli uint32, segno, segSize uint64) string {
	per := segmentsPerID(segSize)
	return fmt.Sprintf("%08X%08X%08X", tli, segno/per, segno%per)
}

// ParseSegmentName is the inverse of SegmentName. It accepts only what
// PostgreSQL itself writes (24 upper-case hex digits, a timeline above 0, a
// low part below the number of segments per log id), so that a stray file
// name is never mistaken for a segment.
func ParseSegmentName(name string, segSize uint64) (tli uint32, segno uint64, err error) {
	if !ValidSegmentSize(segSize) {
		return 0, 0, fmt.Errorf("parse WAL segment name %q: invalid segment size %d", name, segSize)
	}
	if len(name) != 24 {
		return 0, 0, fmt.Errorf("parse WAL segment name %q: want 24 hex digits", name)
	}
	var parts [3]uint32
	for i := range parts {
		v, err := parseUpperHex32(name[i*8 : i*8+8])
		if err != nil {
			return 0, 0, fmt.Errorf("parse WAL segment name %q: %w", name, err)
		}
		parts[i] = v
	}
	if parts[0] == 0 {
		return 0, 0, fmt.Errorf("parse WAL segment name %q: timeline 0 does not exist", name)
	}
	per := segmentsPerID(segSize)
	if uint64(parts[2]) >= per {
		return 0, 0, fmt.Errorf("parse WAL segment name %q: low part %08X is not below %X, the segments per log id for %d-byte segments",
			name, parts[2], per, segSize)
	}
	return parts[0], uint64(parts[1])*per + uint64(parts[2]), nil
}

// A backup taken from a standby ends inside a segment the standby cannot
// complete (only a primary switches segments), so it stores the part of
// its last segment up to the end LSN as a partial segment, named
// <segment>.<bytes as 8 hex digits>.partial. The name says how much it
// holds, so one name always means the same bytes: WAL on one timeline
// never changes, and a longer part is another object. It is distinct from
// the <segment>.partial that wal-receive keeps and replaces as it grows,
// and from the complete segment, which may arrive later beside it.

// PartialSegmentName names the first size bytes of segment segName.
func PartialSegmentName(segName string, size uint64) string {
	return fmt.Sprintf("%s.%08X.partial", segName, size)
}

// ParsePartialSegmentName is the inverse of PartialSegmentName: it returns
// the segment's name and number and the size held, which must be above 0
// and below the segment size (a whole segment is stored as a segment).
func ParsePartialSegmentName(name string, segSize uint64) (segName string, tli uint32, segno, size uint64, err error) {
	const suffix = ".partial"
	if len(name) != 24+1+8+len(suffix) || name[24] != '.' || name[33:] != suffix {
		return "", 0, 0, 0, fmt.Errorf("parse partial WAL segment name %q: want <segment>.<8 hex digits>.partial", name)
	}
	segName = name[:24]
	if tli, segno, err = ParseSegmentName(segName, segSize); err != nil {
		return "", 0, 0, 0, err
	}
	n, err := parseUpperHex32(name[25:33])
	if err != nil {
		return "", 0, 0, 0, fmt.Errorf("parse partial WAL segment name %q: %w", name, err)
	}
	if n == 0 || uint64(n) >= segSize {
		return "", 0, 0, 0, fmt.Errorf("parse partial WAL segment name %q: size %d is not between 0 and the segment size %d", name, n, segSize)
	}
	return segName, tli, segno, uint64(n), nil
}

// parseUpperHex32 parses exactly eight upper-case hex digits, the only form
// PostgreSQL uses in WAL file names.
func parseUpperHex32(s string) (uint32, error) {
	var v uint32
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("invalid character %q, want upper-case hex", c)
		}
		v = v<<4 | uint32(d)
	}
	return v, nil
}

// RequiredSegments lists, in order, the names of the WAL segments on
// timeline tli that a backup from start to end needs: from the segment
// holding start to the one holding the byte before end. The segment holding
// start is always included, even in the degenerate case of start == end on
// a segment boundary, because recovery begins by reading it.
func RequiredSegments(tli uint32, start, end LSN, segSize uint64) ([]string, error) {
	switch {
	case !ValidSegmentSize(segSize):
		return nil, fmt.Errorf("required WAL segments: invalid segment size %d", segSize)
	case tli == 0:
		return nil, fmt.Errorf("required WAL segments: timeline 0 does not exist")
	case end == 0:
		return nil, fmt.Errorf("required WAL segments: end LSN is 0/0")
	case end < start:
		return nil, fmt.Errorf("required WAL segments: end LSN %s is before start LSN %s", end, start)
	}
	first, last := SegmentNo(start, segSize), PrevSegmentNo(end, segSize)
	if last < first {
		last = first
	}
	if n := last - first + 1; n > maxCount {
		return nil, fmt.Errorf("required WAL segments: %s to %s spans %d segments, more than the limit of %d", start, end, n, maxCount)
	}
	names := make([]string, 0, last-first+1)
	for segno := first; segno <= last; segno++ {
		names = append(names, SegmentName(tli, segno, segSize))
	}
	return names, nil
}

// HistoryFileName is the name of the timeline history file of tli, which a
// restore needs when a backup spans a timeline switch.
func HistoryFileName(tli uint32) string {
	return fmt.Sprintf("%08X.history", tli)
}

// parseHistoryFileName is the inverse of HistoryFileName.
func parseHistoryFileName(name string) (uint32, error) {
	const suffix = ".history"
	if len(name) != 8+len(suffix) || name[8:] != suffix {
		return 0, fmt.Errorf("parse history file name %q: want 8 hex digits and %q", name, suffix)
	}
	tli, err := parseUpperHex32(name[:8])
	if err != nil {
		return 0, fmt.Errorf("parse history file name %q: %w", name, err)
	}
	if tli == 0 {
		return 0, fmt.Errorf("parse history file name %q: timeline 0 does not exist", name)
	}
	return tli, nil
}

// WALHeader is what the long page header at the start of every WAL
// segment says about the cluster that wrote it.
type WALHeader struct {
	SystemID    uint64
	SegmentSize uint64
}

// walLongHeader layout (XLogLongPageHeaderData, native byte order, which
// is little-endian on every platform pgstow supports): xlp_magic (2),
// xlp_info (2), xlp_tli (4), xlp_pageaddr (8), xlp_rem_len (4), padding
// (4), xlp_sysid (8), xlp_seg_size (4), xlp_xlog_blcksz (4).
const (
	walLongHeaderLen = 40
	xlpLongHeader    = 0x0002
)

// ParseWALHeader reads the long page header of a WAL segment; ok is false
// when data does not start with one (a history file, or not WAL).
func ParseWALHeader(data []byte) (h WALHeader, ok bool) {
	if len(data) < walLongHeaderLen {
		return WALHeader{}, false
	}
	info := binary.LittleEndian.Uint16(data[2:4])
	if info&xlpLongHeader == 0 {
		return WALHeader{}, false
	}
	h = WALHeader{
		SystemID:    binary.LittleEndian.Uint64(data[24:32]),
		SegmentSize: uint64(binary.LittleEndian.Uint32(data[32:36])),
	}
	if h.SystemID == 0 || !ValidSegmentSize(h.SegmentSize) {
		return WALHeader{}, false
	}
	return h, true
}

// ValidWALName reports whether name is a WAL file name pgstow stores:
// what PostgreSQL archives (ArchivedWALName) or a standby backup's partial
// segment (PartialSegmentName). It is the one check of WAL names, which
// become parts of object keys and of paths under pg_wal/, so nothing else
// passes, not even lower-case hex.
func ValidWALName(name string) bool {
	return ArchivedWALName(name) || standbyPartialName(name)
}

// ArchivedWALName reports whether name is one PostgreSQL hands to
// archive_command: a segment, a segment's .partial, a backup history file
// or a timeline history file. wal-push takes only these; a standby
// backup's partial segment is written by the backup alone.
func ArchivedWALName(name string) bool {
	if len(name) == 8+len(".history") {
		return upperHex8(name[:8]) && name[8:] == ".history"
	}
	if !segmentPrefix(name) {
		return false
	}
	switch rest := name[24:]; {
	case rest == "", rest == ".partial":
		return true
	case len(rest) == 1+8+len(".backup") && rest[0] == '.' && upperHex8(rest[1:9]) && rest[9:] == ".backup":
		return true
	}
	return false
}

// standbyPartialName reports whether name has the form of
// PartialSegmentName: a segment name, a dot, 8 hex digits, ".partial".
func standbyPartialName(name string) bool {
	if !segmentPrefix(name) {
		return false
	}
	rest := name[24:]
	return len(rest) == 1+8+len(".partial") && rest[0] == '.' && upperHex8(rest[1:9]) && rest[9:] == ".partial"
}

// segmentPrefix reports whether name starts with a segment name (24
// upper-case hex digits).
func segmentPrefix(name string) bool {
	return len(name) >= 24 && upperHex8(name[:8]) && upperHex8(name[8:16]) && upperHex8(name[16:24])
}

func upperHex8(s string) bool {
	_, err := parseUpperHex32(s)
	return len(s) == 8 && err == nil
}
