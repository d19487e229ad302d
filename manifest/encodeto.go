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
		for i := range b.Files {
			rec, err := json.MarshalIndent(&b.Files[i], "  ", " ")
			if err != nil {
				return enc.n, sum, fmt.Errorf("encode manifest %s: file %d: %w", b.ID, i, err)
			}
			enc.writeString("\n  ")
			enc.write(rec)
			if i < len(b.Files)-1 {
				enc.writeString(",")
			}
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

// hashingWriter writes through a buffer, hashing what it writes, and keeps
// the first error so the encoder can write without checking every call.
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
	h.all.Write(p)
	m, err := h.w.Write(p)
	h.n += int64(m)
	h.err = err
}

func (h *hashingWriter) writeString(s string) { h.write([]byte(s)) }
