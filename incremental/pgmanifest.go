package incremental

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
	"sort"
	"strconv"
	"strings"
)

// This file is a private stand-in for manifest.RewritePGManifest, which
// another change adds; it goes once that is merged.

// RewritePGManifest copies PostgreSQL's backup_manifest from src to dst
// with the entries named in edits (by path) changed as they say, and a
// new Manifest-Checksum (SHA-256 of every byte before its line, as
// PostgreSQL computes it). Everything else, Last-Modified and WAL-Ranges
// included, is copied as is. It relies on the layout PostgreSQL writes:
// one file entry per line, the checksum on the last line; the entries
// edited must use CRC32C checksums. Every edit must find its entry.
func RewritePGManifest(dst io.Writer, src io.Reader, edits map[string]Edit) error {
	br := bufio.NewReaderSize(src, 64<<10)
	sum := sha256.New()
	out := io.MultiWriter(dst, sum)
	done := map[string]bool{}
	for {
		line, err := br.ReadBytes('\n')
		if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
			if errors.Is(err, io.EOF) {
				return errors.New("backup_manifest: no Manifest-Checksum line")
			}
			return fmt.Errorf("read backup_manifest: %w", err)
		}
		trimmed := bytes.TrimLeft(line, " \t")
		if bytes.HasPrefix(trimmed, []byte(`"Manifest-Checksum"`)) {
			if len(done) != len(edits) {
				return fmt.Errorf("backup_manifest: %d of %d entries to rewrite not found: %s", len(edits)-len(done), len(edits), missing(edits, done))
			}
			_, err := fmt.Fprintf(dst, "\"Manifest-Checksum\": \"%s\"}\n", hex.EncodeToString(sum.Sum(nil)))
			return err
		}
		if bytes.HasPrefix(trimmed, []byte(`{ "Path": `)) {
			var e struct {
				Path      string `json:"Path"`
				Size      int64  `json:"Size"`
				Algorithm string `json:"Checksum-Algorithm"`
				Checksum  string `json:"Checksum"`
			}
			// The entry is the line's first JSON value; a "," or the
			// "]" closing the list may follow it.
			if err := json.NewDecoder(bytes.NewReader(trimmed)).Decode(&e); err != nil {
				return fmt.Errorf("backup_manifest: entry %q: %w", bytes.TrimSpace(line), err)
			}
			if ed, ok := edits[e.Path]; ok {
				if line, err = rewriteEntry(line, e.Path, e.Size, e.Algorithm, e.Checksum, ed); err != nil {
					return err
				}
				done[e.Path] = true
			}
		}
		if _, err := out.Write(line); err != nil {
			return fmt.Errorf("write backup_manifest: %w", err)
		}
	}
}

// rewriteEntry replaces the path, size and checksum in one entry line.
func rewriteEntry(line []byte, path string, size int64, alg, checksum string, ed Edit) ([]byte, error) {
	if alg != "CRC32C" {
		return nil, fmt.Errorf("backup_manifest: %s has a %s checksum; only CRC32C can be recomputed", path, alg)
	}
	var crc [4]byte
	binary.LittleEndian.PutUint32(crc[:], ed.CRC32C) // PostgreSQL hex-encodes the bytes in memory
	s := string(line)
	for _, r := range []struct{ old, new string }{
		{`"Path": ` + quote(path), `"Path": ` + quote(ed.Path)},
		{`"Size": ` + strconv.FormatInt(size, 10) + ",", `"Size": ` + strconv.FormatInt(ed.Size, 10) + ","},
		{`"Checksum": "` + checksum + `"`, `"Checksum": "` + hex.EncodeToString(crc[:]) + `"`},
	} {
		if strings.Count(s, r.old) != 1 {
			return nil, fmt.Errorf("backup_manifest: entry for %s is not laid out as PostgreSQL writes it: %q", path, line)
		}
		s = strings.Replace(s, r.old, r.new, 1)
	}
	return []byte(s), nil
}

// quote is a JSON string as PostgreSQL writes a plain path.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// missing names the edits not done, a few of them.
func missing(edits map[string]Edit, done map[string]bool) string {
	var names []string
	for k := range edits {
		if !done[k] {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	if len(names) > 5 {
		names = append(names[:5], "…")
	}
	return strings.Join(names, ", ")
}
