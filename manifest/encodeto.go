package manifest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
)

// EncodeTo writes exactly the bytes Encode returns to w, without holding
// them: with a hundred thousand files a manifest is tens of MB, and
// MarshalIndent of the whole would hold it two or three times over. The
// file records, nearly all of it, are encoded one at a time between a head
// and a tail encoded as usual. It returns the bytes written and their
// SHA-256 (of the whole encoding, not the covered part), so a caller can
// compare with a stored copy without reading it back into memory.
func EncodeTo(w io.Writer, b *Backup) (n int64, sum [sha256.Size]byte, err error) {
	if b == nil {
		return 0, sum, errors.New("encode manifest: nil backup")
	}
	if err := b.Validate(); err != nil {
		return 0, sum, fmt.Errorf("encode manifest: %w", err)
	}
	// Everything but the files, with a placeholder where they go. A JSON
	// string cannot hold a raw newline and nested members are indented
	// deeper, so the top-level line below can only be the placeholder.
	shell := *b
	shell.Files = nil
	body, err := json.MarshalIndent(&shell, "", " ")
	if err != nil {
		return 0, sum, fmt.Errorf("encode manifest %s: %w", b.ID, err)
	}
	const placeholder = "\n \"files\": null"
	at := bytes.Index(body, []byte(placeholder))
	body, ok := bytes.CutSuffix(body, []byte("\n}"))
	if at < 0 || !ok {
		return 0, sum, fmt.Errorf("encode manifest %s: unexpected JSON layout", b.ID)
	}
	head, rest := body[:at+len(placeholder)-len("null")], body[at+len(placeholder):]

	enc := &hashingWriter{w: bufio.NewWriterSize(w, 64<<10), covered: sha256.New(), all: sha256.New()}
	enc.write(head)
	switch {
	case b.Files == nil:
		enc.writeString("null")
	case len(b.Files) == 0:
		enc.writeString("[]")
	default:
		enc.writeString("[")
		var rec []byte
		for i := range b.Files {
			rec = append(rec[:0], "\n  "...)
			rec = appendFileJSON(rec, &b.Files[i])
			if i < len(b.Files)-1 {
				rec = append(rec, ',')
			}
			enc.write(rec)
		}
		enc.writeString("\n ]")
	}
	enc.write(rest)
	enc.writeString(",\n")
	// The checksum line is not covered by itself.
	covered := enc.covered.Sum(nil)
	enc.covered = nil
	enc.writeString(fmt.Sprintf(" %q: %q\n}\n", checksumKey, hex.EncodeToString(covered)))
	if enc.err == nil {
		enc.err = enc.w.Flush()
	}
	if enc.err != nil {
		return enc.n, sum, fmt.Errorf("encode manifest %s: %w", b.ID, enc.err)
	}
	copy(sum[:], enc.all.Sum(nil))
	return enc.n, sum, nil
}

// hashingWriter writes through a buffer, hashing what it writes (covered
// until set to nil, all when set), and keeps the first error so the
// encoder, and RewritePGManifest, can write without checking every call.
type hashingWriter struct {
	w            *bufio.Writer
	covered, all hash.Hash
	n            int64
	err          error
}

func (h *hashingWriter) write(p []byte) {
	if h.err != nil {
		return
	}
	if h.covered != nil {
		h.covered.Write(p)
	}
	if h.all != nil {
		h.all.Write(p)
	}
	m, err := h.w.Write(p)
	h.n += int64(m)
	h.err = err
}

func (h *hashingWriter) writeString(s string) { h.write([]byte(s)) }

// appendFileJSON appends f as json.MarshalIndent(f, "  ", " ") writes it,
// without reflection or allocation: a hundred thousand records took
// 0.27 CPU-s through MarshalIndent. Strings that need escaping (rare in a
// data directory) go through json.Marshal, so the bytes are the same as
// encoding/json's; TestEncodeToMatchesWholeEncoding and FuzzEncodeTo hold
// it to that.
func appendFileJSON(dst []byte, f *File) []byte {
	dst = append(dst, "{\n   \"path\": "...)
	dst = appendJSONString(dst, f.Path)
	dst = append(dst, ",\n   \"type\": "...)
	dst = appendJSONString(dst, string(f.Type))
	dst = append(dst, ",\n   \"mode\": "...)
	dst = strconv.AppendUint(dst, uint64(f.Mode), 10)
	dst = append(dst, ",\n   \"mtime\": "...)
	dst = strconv.AppendInt(dst, f.MTime, 10)
	if f.Size != 0 {
		dst = append(dst, ",\n   \"size\": "...)
		dst = strconv.AppendInt(dst, f.Size, 10)
	}
	if f.CRC32C != 0 {
		dst = append(dst, ",\n   \"crc32c\": "...)
		dst = strconv.AppendUint(dst, uint64(f.CRC32C), 10)
	}
	if f.SHA256 != "" {
		dst = append(dst, ",\n   \"sha256\": "...)
		dst = appendJSONString(dst, f.SHA256)
	}
	if len(f.BlockCRC32C) > 0 {
		dst = append(dst, ",\n   \"block_crc32c\": "...)
		dst = appendBlockCRCs(dst, f.BlockCRC32C)
	}
	if f.LinkTarget != "" {
		dst = append(dst, ",\n   \"link_target\": "...)
		dst = appendJSONString(dst, f.LinkTarget)
	}
	dst = append(dst, ",\n   \"archive\": "...)
	dst = strconv.AppendInt(dst, int64(f.Archive), 10)
	dst = append(dst, ",\n   \"offset\": "...)
	dst = strconv.AppendInt(dst, f.Offset, 10)
	return append(dst, "\n  }"...)
}

// appendJSONString appends s quoted as encoding/json quotes it: printable
// ASCII other than the characters it escapes is copied, anything else is
// left to json.Marshal.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(dst, q...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
