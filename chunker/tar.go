package chunker

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
)

// This file holds the minimal tar header decoding the Splitter needs. It is
// written against raw 512-byte blocks rather than archive/tar because the
// Splitter must keep every byte of the archive (headers included) in its
// chunk buffers, and archive/tar hides header bytes and copies content.
// Only the fields pgstow records are decoded: name, mode, size, mtime,
// typeflag, linkname, magic and the ustar prefix. uid, gid, uname and the
// like are neither parsed nor validated, so an odd value there cannot fail
// a backup.

const blockSize = 512

// Header block field offsets (POSIX ustar; v7 and GNU share the first 257
// bytes).
const (
	offName     = 0
	offMode     = 100
	offSize     = 124
	offMTime    = 136
	offChksum   = 148
	offTypeflag = 156
	offLinkname = 157
	offMagic    = 257
	offPrefix   = 345
	endPrefix   = 500
)

// Typeflags the Splitter knows about.
const (
	typeReg        = '0'
	typeRegA       = '\x00' // pre-POSIX regular file (or a directory if the name ends in "/")
	typeLink       = '1'
	typeSymlink    = '2'
	typeDir        = '5'
	typePAX        = 'x'
	typePAXGlobal  = 'g'
	typeGNULongNam = 'L'
	typeGNULongLnk = 'K'
)

// maxExtSize bounds the content of one extended header (PAX 'x', GNU 'L' or
// 'K'). Extended headers are the only member data the Splitter must hold in
// one piece to parse, so they are the only place where a hostile size could
// make it allocate; real ones are a few hundred bytes. archive/tar uses the
// same bound.
const maxExtSize = 1 << 20

// maxHeaderBytes bounds all header bytes of one member (its extended
// headers and its own header block together).
const maxHeaderBytes = 4 * maxExtSize

// headerInfo is what the Splitter needs from a non-zero header block.
type headerInfo struct {
	typeflag byte
	size     int64 // the size field; sizeOK is false when it does not parse
	sizeOK   bool
}

// parseBlock verifies the checksum of a header block and decodes its
// typeflag and size. off is the block's offset in the archive, for errors.
func parseBlock(blk []byte, off int64) (headerInfo, error) {
	stored, ok := parseOctal(blk[offChksum : offChksum+8])
	if !ok || isBlank(blk[offChksum:offChksum+8]) {
		return headerInfo{}, fmt.Errorf("offset %d: not a tar header (checksum field %q is not an octal number)", off, blk[offChksum:offChksum+8])
	}
	unsigned, signed := headerChecksums(blk)
	if stored != unsigned && stored != signed {
		return headerInfo{}, fmt.Errorf("offset %d: tar header checksum mismatch (stored %#o, computed %#o)", off, stored, unsigned)
	}
	size, sizeOK := parseNumeric(blk[offSize : offSize+12])
	return headerInfo{typeflag: blk[offTypeflag], size: size, sizeOK: sizeOK && size >= 0}, nil
}

// headerChecksums returns the sum of the block's bytes with the checksum
// field counted as spaces, both as unsigned and as signed bytes: some old
// tars summed signed chars, and archive/tar accepts either.
func headerChecksums(blk []byte) (unsigned, signed int64) {
	for i, c := range blk[:blockSize] {
		if i >= offChksum && i < offChksum+8 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return unsigned, signed
}

// isZeroBlock reports whether blk is all zero bytes, the end-of-archive
// marker.
func isZeroBlock(blk []byte) bool {
	for _, c := range blk {
		if c != 0 {
			return false
		}
	}
	return true
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != 0 && c != ' ' {
			return false
		}
	}
	return true
}

// parseNumeric decodes a numeric header field: octal text, or GNU base-256
// when the high bit of the first byte is set (how tar writes sizes of 8 GiB
// and more, and negative times). ok is false when the field is malformed or
// does not fit an int64.
func parseNumeric(b []byte) (int64, bool) {
	if len(b) == 0 || b[0]&0x80 == 0 {
		return parseOctal(b)
	}
	// Base-256: a big-endian two's-complement number whose first byte
	// carries the marker bit; 0xff... is negative.
	var inv byte
	if b[0]&0x40 != 0 {
		inv = 0xff
	}
	var x uint64
	for i, c := range b {
		c ^= inv
		if i == 0 {
			c &= 0x7f
		}
		if x>>56 != 0 {
			return 0, false
		}
		x = x<<8 | uint64(c)
	}
	if x>>63 != 0 {
		return 0, false
	}
	if inv != 0 {
		return ^int64(x), true
	}
	return int64(x), true
}

// parseOctal decodes an octal field. Writers pad with leading zeros,
// spaces or NULs and terminate with a NUL or a space, so both are trimmed
// at either end; an empty field is zero.
func parseOctal(b []byte) (int64, bool) {
	b = bytes.Trim(b, " \x00")
	var x int64
	for _, c := range b {
		if c < '0' || c > '7' {
			return 0, false
		}
		if x > math.MaxInt64>>3 {
			return 0, false
		}
		x = x<<3 | int64(c-'0')
	}
	return x, true
}

// cString returns the bytes of b up to its first NUL as a string.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// isPOSIXUstar reports whether the block has the POSIX ustar magic, the
// only format whose prefix field extends the name (GNU tar stores other
// things there).
func isPOSIXUstar(blk []byte) bool {
	return string(blk[offMagic:offMagic+6]) == "ustar\x00"
}

// headerName returns the member name stored in the block itself: the name
// field, joined with the ustar prefix field when there is one.
func headerName(blk []byte) string {
	name := cString(blk[offName : offName+100])
	if isPOSIXUstar(blk) {
		if prefix := cString(blk[offPrefix:endPrefix]); prefix != "" {
			name = prefix + "/" + name
		}
	}
	return name
}

// extHeaders accumulates what extended headers say about the member that
// follows them. A later extended header of the same kind overrides an
// earlier one.
type extHeaders struct {
	n int // extended headers seen

	path, linkpath       string // PAX
	hasPath, hasLinkpath bool
	size, mtime          int64
	hasSize, hasMTime    bool

	gnuName, gnuLink string // GNU 'L' and 'K'
}

var errPAXRecord = errors.New("malformed PAX record")

// parsePAX applies the records of a PAX extended header ("%d %s=%s\n",
// the length counting the whole record) to e. Only path, linkpath, size and
// mtime matter to pgstow; other keywords are checked for form and ignored.
// An empty value unsets a keyword, as POSIX specifies.
func (e *extHeaders) parsePAX(data []byte) error {
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 {
			return errPAXRecord
		}
		n, ok := parseDecimal(data[:sp])
		if !ok || n <= int64(sp)+1 || n > int64(len(data)) {
			return errPAXRecord
		}
		rec := data[sp+1 : n]
		data = data[n:]
		if rec[len(rec)-1] != '\n' {
			return errPAXRecord
		}
		rec = rec[:len(rec)-1]
		eq := bytes.IndexByte(rec, '=')
		if eq <= 0 {
			return errPAXRecord
		}
		key, val := rec[:eq], rec[eq+1:]
		switch string(key) {
		case "path":
			e.path, e.hasPath = string(val), len(val) > 0
		case "linkpath":
			e.linkpath, e.hasLinkpath = string(val), len(val) > 0
		case "size":
			if err := setPAXNumber("size", val, parseDecimal, &e.size, &e.hasSize); err != nil {
				return err
			}
		case "mtime":
			if err := setPAXNumber("mtime", val, parsePAXTime, &e.mtime, &e.hasMTime); err != nil {
				return err
			}
		}
	}
	return nil
}

// setPAXNumber sets *dst and *has from the value of PAX keyword name,
// read by parse; an empty value unsets it.
func setPAXNumber(name string, val []byte, parse func([]byte) (int64, bool), dst *int64, has *bool) error {
	if len(val) == 0 {
		*has = false
		return nil
	}
	v, ok := parse(val)
	if !ok {
		return fmt.Errorf("invalid PAX %s %q", name, val)
	}
	*dst, *has = v, true
	return nil
}

// parseDecimal decodes a non-empty string of decimal digits that fits an
// int64.
func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var x int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if x > (math.MaxInt64-d)/10 {
			return 0, false
		}
		x = x*10 + d
	}
	return x, true
}

// parsePAXTime decodes a PAX time ("[-]seconds[.fraction]") to whole Unix
// seconds, rounding down as time.Time.Unix would for negative times.
func parsePAXTime(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	secs, frac, hasFrac := bytes.Cut(b, []byte{'.'})
	s, ok := parseDecimal(secs)
	if !ok {
		return 0, false
	}
	nonzeroFrac := false
	if hasFrac {
		if len(frac) == 0 {
			return 0, false
		}
		for _, c := range frac {
			if c < '0' || c > '9' {
				return 0, false
			}
			nonzeroFrac = nonzeroFrac || c != '0'
		}
	}
	if neg {
		s = -s
		if nonzeroFrac {
			s--
		}
	}
	return s, true
}

// cleanName turns a tar member name into the path recorded in the
// manifest: a leading "./" (as `tar -C dir .` writes) is removed, and so is
// the trailing "/" of a directory. Nothing else is changed; rejecting
// hostile names is the manifest validator's job, which sees every name.
func cleanName(name string, dir bool) string {
	if dir && len(name) > 1 {
		name = strings.TrimSuffix(name, "/")
	}
	return strings.TrimPrefix(name, "./")
}
