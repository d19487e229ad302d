package manifest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// MarshalJSON writes the values as one base64 string of their
// little-endian bytes: about 5.3 characters a block where a JSON array
// of numbers takes about 11, which matters at one value per 8 KiB.
func (c BlockCRCs) MarshalJSON() ([]byte, error) {
	raw := make([]byte, 4*len(c))
	for i, v := range c {
		binary.LittleEndian.PutUint32(raw[4*i:], v)
	}
	return json.Marshal(base64.StdEncoding.EncodeToString(raw))
}

// UnmarshalJSON reads what MarshalJSON writes.
func (c *BlockCRCs) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("block_crc32c: %w", err)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return fmt.Errorf("block_crc32c: %w", err)
	}
	if len(raw)%4 != 0 {
		return fmt.Errorf("block_crc32c: %d bytes, not a whole number of 4-byte values", len(raw))
	}
	out := make(BlockCRCs, len(raw)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	*c = out
	return nil
}
