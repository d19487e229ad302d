package manifest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
)

// MarshalJSON writes the values as one base64 string of their
// little-endian bytes: about 5.3 characters a block where a JSON array
// of numbers takes about 11, which matters at one value per 8 KiB.
func (c BlockCRCs) MarshalJSON() ([]byte, error) {
	return appendBlockCRCs(nil, c), nil
}

// appendBlockCRCs appends c as MarshalJSON writes it, quotes included,
// without a scratch buffer of the raw bytes: three values are 12 bytes, a
// multiple of base64's 3-byte group, so encoding them three at a time
// gives the bytes of encoding them all at once.
func appendBlockCRCs(dst []byte, c BlockCRCs) []byte {
	dst = append(dst, '"')
	var group [12]byte
	for len(c) > 0 {
		n := min(len(c), 3)
		for i, v := range c[:n] {
			binary.LittleEndian.PutUint32(group[4*i:], v)
		}
		dst = base64.StdEncoding.AppendEncode(dst, group[:4*n])
		c = c[n:]
	}
	return append(dst, '"')
}

// UnmarshalJSON reads what MarshalJSON writes. It refuses line breaks
// inside the string, which Go's base64 decoder skips even in strict mode:
// accepted, they would let two different manifests decode alike, and a
// decoded manifest would not encode back to its own bytes. An empty string
// or null decodes as no values (nil), as omitempty leaves the member out.
func (c *BlockCRCs) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		*c = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("block_crc32c: %w", err)
	}
	if strings.ContainsAny(s, "\r\n") {
		return fmt.Errorf("block_crc32c: line break inside the base64 string")
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return fmt.Errorf("block_crc32c: %w", err)
	}
	if len(raw)%4 != 0 {
		return fmt.Errorf("block_crc32c: %d bytes, not a whole number of 4-byte values", len(raw))
	}
	if len(raw) == 0 {
		*c = nil
		return nil
	}
	out := make(BlockCRCs, len(raw)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	*c = out
	return nil
}
