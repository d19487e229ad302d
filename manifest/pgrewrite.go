package manifest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// PGFileEdit is what RewritePGManifest does with one file entry. The zero
// value keeps the entry byte for byte.
type PGFileEdit struct {
	// Drop leaves the entry out.
	Drop bool
	// Replace writes the entry anew with Path, Size and CRC32C (its
	// Last-Modified kept), as PostgreSQL writes an entry: an incremental
	// backup turns INCREMENTAL.<name> into the whole <name> it assembled,
	// and backup_label into the one without INCREMENTAL FROM lines.
	Replace bool
	Path    string
	Size    int64
	CRC32C  uint32
}

// RewritePGManifest copies PostgreSQL's backup_manifest from src to dst,
// calling edit with each file entry and dropping or replacing it as told,
// and seals the result with a new Manifest-Checksum (the SHA-256 of every
// byte before its line, as PostgreSQL computes it). Everything else keeps
// the server's bytes: the header, the entries kept, WAL-Ranges and the
// checksum line's layout. It returns the number of file entries written.
//
// It streams: what is held is the JSON decoder's read-ahead and one entry,
// not the manifest (tens of MB with a hundred thousand files). src is
// checked against its own Manifest-Checksum as it is read, and the new
// checksum is written only once that verified, so a damaged manifest is
// refused rather than sealed anew; after an error dst holds an incomplete
// copy without a checksum line. An entry can only be replaced if
// PostgreSQL checksummed it with CRC32C (pgstow asks for it): a
// SHA checksum cannot be computed from what an incremental backup knows.
func RewritePGManifest(src io.Reader, dst io.Writer, edit func(f PGFile) (PGFileEdit, error)) (int, error) {
	s := newSealedReader(src, pgChecksumKey)
	in := &teeBuffer{r: s}
	out := &hashedOut{hashingWriter: hashingWriter{w: bufio.NewWriterSize(dst, 64<<10), covered: sha256.New()}}
	rw := &pgRewriter{dec: json.NewDecoder(in), in: in, out: out, edit: edit}
	if err := rw.document(); err != nil {
		// A damaged or truncated manifest is reported as such, as
		// ParsePGManifestFrom does, rather than as the syntax error it
		// causes.
		if verr := s.verify("backup_manifest"); errors.Is(verr, ErrChecksumMismatch) {
			return 0, verr
		} else if verr != nil {
			return 0, fmt.Errorf("rewrite backup_manifest: %w", verr)
		}
		return 0, fmt.Errorf("rewrite backup_manifest: %w", err)
	}
	// Read the rest (the checksum member) through the buffer, so that it
	// holds the document's tail, and check the old checksum.
	if _, err := io.Copy(io.Discard, in); err != nil {
		return 0, fmt.Errorf("rewrite backup_manifest: read: %w", err)
	}
	if err := s.verify("backup_manifest"); errors.Is(err, ErrChecksumMismatch) {
		return 0, err
	} else if err != nil {
		return 0, fmt.Errorf("rewrite backup_manifest: %w", err)
	}
	// The checks ParsePGManifestFrom makes of the members around Files
	// (the entries were checked one by one).
	if _, err := rw.doc.header(); err != nil {
		return 0, fmt.Errorf("rewrite %w", err)
	}
	switch {
	case !rw.files:
		return 0, errors.New("rewrite backup_manifest: no Files member")
	case rw.read > maxCount:
		return 0, fmt.Errorf("rewrite backup_manifest: %d files, more than the limit of %d", rw.read, maxCount)
	case rw.doc.WALRanges == nil:
		return 0, errors.New("rewrite backup_manifest: missing WAL-Ranges")
	}
	if _, err := rw.doc.walRanges(); err != nil {
		return 0, fmt.Errorf("rewrite backup_manifest: %w", err)
	}
	// What is left to copy is the separator before the checksum's line
	// (",\n") and the line, whose digest is replaced.
	rest := in.span(out.copied, in.end())
	covered, stored, err := splitChecksum(rest, pgChecksumKey)
	if err != nil {
		return 0, fmt.Errorf("rewrite backup_manifest: %w", err)
	}
	out.write(covered)
	sum := out.covered.Sum(nil)
	out.covered = nil // the checksum's line is not covered by itself
	line := rest[len(covered):]
	i := bytes.Index(line, []byte(stored))
	out.write(line[:i])
	out.write(hex.AppendEncode(nil, sum))
	out.write(line[i+len(stored):])
	if out.err == nil {
		out.err = out.w.Flush()
	}
	if out.err != nil {
		return 0, fmt.Errorf("rewrite backup_manifest: write: %w", out.err)
	}
	return rw.written, nil
}

// pgRewriter walks the document with a JSON decoder and copies the bytes
// it has consumed from in to out, replacing entries on the way. in keeps
// every byte read since the last one copied or skipped.
type pgRewriter struct {
	dec     *json.Decoder
	in      *teeBuffer
	out     *hashedOut
	edit    func(PGFile) (PGFileEdit, error)
	doc     pgManifestJSON
	files   bool // the Files member was seen
	sealed  bool // the checksum member was seen
	read    int  // file entries read
	written int  // file entries written
}

// document walks the top-level object, copying each member through as it
// goes, except the checksum member, which the caller handles.
func (rw *pgRewriter) document() error {
	if tok, err := rw.dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("not a JSON object (%v, %v)", tok, err)
	}
	for rw.dec.More() {
		tok, err := rw.dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("object key %v is not a string", tok)
		}
		switch {
		case key == pgChecksumKey:
			// Left in the buffer for the caller; the stream ends here.
			var skip json.RawMessage
			if err := rw.dec.Decode(&skip); err != nil {
				return err
			}
			rw.sealed = true
			continue
		case strings.EqualFold(key, "Files"):
			if rw.files {
				return errors.New("the Files member appears twice")
			}
			rw.files = true
			if err := rw.entries(); err != nil {
				return err
			}
		default:
			var raw json.RawMessage
			if err := rw.dec.Decode(&raw); err != nil {
				return err
			}
			k, _ := json.Marshal(key) // a string always marshals
			obj := append(append(append(append([]byte{'{'}, k...), ':'), raw...), '}')
			if err := json.Unmarshal(obj, &rw.doc); err != nil {
				return err
			}
		}
		if rw.sealed {
			return fmt.Errorf("%q is not the last member", pgChecksumKey)
		}
		rw.copyTo(rw.dec.InputOffset())
	}
	if _, err := rw.dec.Token(); err != nil { // the closing '}'
		return err
	}
	if !rw.sealed {
		return fmt.Errorf("no %q member", pgChecksumKey)
	}
	return nil
}

// entries copies the Files array, entry by entry. An entry's bytes run
// from the end of the token before it (so the separator before it goes
// with it) to its closing brace.
func (rw *pgRewriter) entries() error {
	if tok, err := rw.dec.Token(); err != nil || tok != json.Delim('[') {
		return fmt.Errorf("the Files member is not an array (%v, %v)", tok, err)
	}
	rw.copyTo(rw.dec.InputOffset())
	for n := 0; rw.dec.More(); n++ {
		rw.read++
		var jf pgFileJSON
		if err := rw.dec.Decode(&jf); err != nil {
			return fmt.Errorf("file %d: %w", n, err)
		}
		f, err := jf.file()
		if err != nil {
			return fmt.Errorf("file %d: %w", n, err)
		}
		e, err := rw.edit(f)
		if err != nil {
			return fmt.Errorf("file %d (%s): %w", n, f.Path, err)
		}
		end := rw.dec.InputOffset()
		raw := rw.in.span(rw.out.copied, end)
		brace := bytes.IndexByte(raw, '{')
		if brace < 0 {
			return fmt.Errorf("file %d: not an object", n)
		}
		sep, entry := raw[:brace], raw[brace:]
		switch {
		case e.Drop:
			rw.advance(end)
			continue
		case e.Replace:
			if f.ChecksumAlgorithm != "CRC32C" {
				return fmt.Errorf("file %d (%s): checksum algorithm %q, want CRC32C to replace its checksum", n, f.Path, f.ChecksumAlgorithm)
			}
			if e.Size < 0 || e.Path == "" {
				return fmt.Errorf("file %d (%s): replaced by path %q, size %d", n, f.Path, e.Path, e.Size)
			}
			entry = appendPGFileEntry(nil, e, f.LastModified)
		}
		if rw.written == 0 {
			// A first entry has no comma before it; when entries
			// before it were dropped, its separator still has one.
			if i := bytes.IndexByte(sep, ','); i >= 0 {
				sep = append(bytes.Clone(sep[:i]), sep[i+1:]...)
			}
		}
		rw.out.write(sep)
		rw.out.write(entry)
		rw.advance(end)
		rw.written++
	}
	_, err := rw.dec.Token() // the closing ']'
	return err
}

// copyTo copies the bytes read up to offset to the output unchanged.
func (rw *pgRewriter) copyTo(offset int64) {
	rw.out.write(rw.in.span(rw.out.copied, offset))
	rw.advance(offset)
}

// advance marks the input up to offset as done: copied or skipped.
func (rw *pgRewriter) advance(offset int64) {
	rw.out.copied = offset
	rw.in.release(offset)
}

// appendPGFileEntry appends a file entry as PostgreSQL's
// AddFileToBackupManifest writes it, with a CRC32C checksum: its bytes in
// memory order (little-endian) in hex, as PGChecksumCRC32C reads them.
func appendPGFileEntry(dst []byte, e PGFileEdit, lastModified string) []byte {
	if utf8.ValidString(e.Path) {
		dst = append(dst, `{ "Path": `...)
		dst = appendPGJSONString(dst, e.Path)
	} else {
		dst = append(dst, `{ "Encoded-Path": "`...)
		dst = hex.AppendEncode(dst, []byte(e.Path))
		dst = append(dst, '"')
	}
	dst = fmt.Appendf(dst, `, "Size": %d, "Last-Modified": `, e.Size)
	dst = appendPGJSONString(dst, lastModified)
	dst = append(dst, `, "Checksum-Algorithm": "CRC32C", "Checksum": "`...)
	dst = hex.AppendEncode(dst, binary.LittleEndian.AppendUint32(nil, e.CRC32C))
	return append(dst, `" }`...)
}

// appendPGJSONString quotes s as PostgreSQL's escape_json does: the quote,
// the backslash and control characters escaped, everything else as it is.
func appendPGJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			dst = append(dst, `\"`...)
		case '\\':
			dst = append(dst, `\\`...)
		case '\b':
			dst = append(dst, `\b`...)
		case '\f':
			dst = append(dst, `\f`...)
		case '\n':
			dst = append(dst, `\n`...)
		case '\r':
			dst = append(dst, `\r`...)
		case '\t':
			dst = append(dst, `\t`...)
		default:
			if c < 0x20 {
				dst = fmt.Appendf(dst, `\u%04x`, c)
			} else {
				dst = append(dst, c)
			}
		}
	}
	return append(dst, '"')
}

// teeBuffer passes reads through, keeping what was read from offset base
// on until released, so that the bytes behind the decoder's tokens can be
// copied out.
type teeBuffer struct {
	r     io.Reader
	buf   []byte // bytes from base on; buf[start:] are still held
	base  int64  // stream offset of buf[0]
	start int
}

func (t *teeBuffer) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.buf = append(t.buf, p[:n]...)
	return n, err
}

// end is the offset after the last byte read.
func (t *teeBuffer) end() int64 { return t.base + int64(len(t.buf)) }

// span returns the held bytes [from, to).
func (t *teeBuffer) span(from, to int64) []byte {
	return t.buf[from-t.base : to-t.base]
}

// release lets go of the bytes before offset, compacting now and then so
// that the buffer stays about the size of the decoder's read-ahead.
func (t *teeBuffer) release(offset int64) {
	t.start = int(offset - t.base)
	if t.start > len(t.buf)/2 {
		n := copy(t.buf, t.buf[t.start:])
		t.buf = t.buf[:n]
		t.base = offset
		t.start = 0
	}
}

// hashedOut is the encoder's hashingWriter (covered: the new
// Manifest-Checksum's input), and copied the input offset up to which the
// input has been copied or skipped.
type hashedOut struct {
	hashingWriter
	copied int64
}
