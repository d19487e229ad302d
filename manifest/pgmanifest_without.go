package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// CopyPGManifestWithout copies the backup_manifest src (size bytes) to dst
// without the Files entry for path, sealed with a new Manifest-Checksum.
// It exists for restores that leave a file of the backup out (a remapped
// restore leaves out tablespace_map, as pg_basebackup does in plain
// format), so that pg_verifybackup still accepts the directory.
//
// Every other byte stays as the server wrote it: the remaining entries
// keep PostgreSQL's own sizes and checksums, and nothing computed here
// stands in for them. The bytes are checked against the old
// Manifest-Checksum as they are copied, so a manifest damaged since it was
// first checked is refused rather than sealed anew; after an error dst
// holds an incomplete copy. It returns the number of file entries
// written.
func CopyPGManifestWithout(dst io.Writer, src io.ReaderAt, size int64, path string) (int, error) {
	covered, line, stored, err := pgChecksumLine(src, size)
	if err != nil {
		return 0, fmt.Errorf("backup_manifest: %w", err)
	}
	cutStart, cutEnd, kept, err := findPGFileEntry(src, covered, path)
	if err != nil {
		return 0, fmt.Errorf("backup_manifest: %w", err)
	}
	old, sum := sha256.New(), sha256.New()
	keep := io.MultiWriter(dst, old, sum)
	for _, part := range []struct {
		w        io.Writer
		from, to int64
	}{
		{keep, 0, cutStart},
		{old, cutStart, cutEnd}, // the entry: hashed to check the old checksum, not written
		{keep, cutEnd, covered},
	} {
		n := part.to - part.from
		if _, err := io.CopyN(part.w, io.NewSectionReader(src, part.from, n), n); err != nil {
			return 0, fmt.Errorf("copy backup_manifest: %w", err)
		}
	}
	if computed := hex.EncodeToString(old.Sum(nil)); !strings.EqualFold(computed, stored) {
		return 0, fmt.Errorf("backup_manifest %w: stored %s, computed %s — the backup_manifest is corrupt", ErrChecksumMismatch, stored, computed)
	}
	// The checksum line as the server wrote it, with the new digest.
	i := bytes.Index(line, []byte(stored))
	sealed := make([]byte, 0, len(line))
	sealed = append(sealed, line[:i]...)
	sealed = hex.AppendEncode(sealed, sum.Sum(nil))
	sealed = append(sealed, line[i+len(stored):]...)
	if _, err := dst.Write(sealed); err != nil {
		return 0, fmt.Errorf("copy backup_manifest: %w", err)
	}
	return kept, nil
}

// pgChecksumLine finds the Manifest-Checksum line at the end of a
// backup_manifest, as ParsePGManifestFrom does: it returns the length of
// what the checksum covers, the line itself (to the end of the document)
// and the stored digest.
func pgChecksumLine(src io.ReaderAt, size int64) (covered int64, line []byte, stored string, err error) {
	n := min(size, tailWindowBytes)
	tail := make([]byte, n)
	if _, err := src.ReadAt(tail, size-n); err != nil {
		return 0, nil, "", fmt.Errorf("read the last %d bytes: %w", n, err)
	}
	head, stored, err := splitChecksum(tail, pgChecksumKey)
	if err != nil {
		if n < size {
			err = fmt.Errorf("%w (in the last %d bytes, which must hold the checksum's line and all that follows)", err, n)
		}
		return 0, nil, "", err
	}
	return size - n + int64(len(head)), tail[len(head):], stored, nil
}

// findPGFileEntry returns the byte range to cut from a backup_manifest to
// remove the Files entry for path, with the comma that separates it from
// its neighbour, and how many entries remain. It reads no further than
// covered, where the checksum line starts; Files comes before it.
func findPGFileEntry(src io.ReaderAt, covered int64, path string) (start, end int64, kept int, err error) {
	dec := json.NewDecoder(io.NewSectionReader(src, 0, covered))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, 0, 0, fmt.Errorf("not a JSON object (%v, %v)", tok, err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			// The section ends where the checksum member starts.
			break
		}
		if err != nil {
			return 0, 0, 0, err
		}
		if key, _ := tok.(string); !strings.EqualFold(key, "Files") {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return 0, 0, 0, err
			}
			continue
		}
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return 0, 0, 0, fmt.Errorf("the Files member is not an array (%v, %v)", tok, err)
		}
		// An entry runs from the end of the token before it (the '[' or
		// the previous entry, so the comma before it goes with it) to its
		// closing brace.
		prevEnd := dec.InputOffset()
		n, found := 0, -1
		for dec.More() {
			var jf pgFileJSON
			if err := dec.Decode(&jf); err != nil {
				return 0, 0, 0, fmt.Errorf("file %d: %w", n, err)
			}
			f, err := jf.file()
			if err != nil {
				return 0, 0, 0, fmt.Errorf("file %d: %w", n, err)
			}
			if f.Path == path {
				if found >= 0 {
					return 0, 0, 0, fmt.Errorf("%q is listed twice (files %d and %d)", path, found, n)
				}
				found, start, end = n, prevEnd, dec.InputOffset()
			}
			prevEnd = dec.InputOffset()
			n++
		}
		switch {
		case found < 0:
			return 0, 0, 0, fmt.Errorf("%q is not listed", path)
		case found == 0 && n > 1:
			// The first entry has no comma before it: take the one
			// after it.
			comma, err := nextComma(src, end, covered)
			if err != nil {
				return 0, 0, 0, err
			}
			end = comma + 1
		}
		return start, end, n - 1, nil
	}
	return 0, 0, 0, errors.New("no Files member")
}

// nextComma returns the offset of the comma that follows blanks at from.
func nextComma(src io.ReaderAt, from, limit int64) (int64, error) {
	var buf [256]byte
	for off := from; off < limit; {
		n, err := src.ReadAt(buf[:min(int64(len(buf)), limit-off)], off)
		for i, c := range buf[:n] {
			switch c {
			case ' ', '\t', '\n', '\r':
				continue
			case ',':
				return off + int64(i), nil
			}
			return 0, fmt.Errorf("byte %d: %q where a comma should follow the first file entry", off+int64(i), c)
		}
		off += int64(n)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if n == 0 {
			break
		}
	}
	return 0, errors.New("no comma after the first file entry")
}
