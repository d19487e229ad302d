package incremental

import (
	"encoding/binary"
	"fmt"
)

// This file is a private stand-in for pgdata.ParseIncrementalHeader,
// which another change adds; it goes once that is merged.

// incrMagic starts every INCREMENTAL.<name> file (PostgreSQL's
// INCREMENTAL_MAGIC).
const incrMagic = 0xd3ae1f0d

// incrHeader is the header of an INCREMENTAL.<name> file: which blocks
// it holds and the length the relation had, in blocks.
type incrHeader struct {
	Blocks           []uint32
	TruncationBlocks uint32
	HeaderLen        int64 // bytes before the first block image
}

// incrHeaderLen is the header's length for n blocks: 12 bytes, 4 a block
// number, padded to a whole block when there are blocks, so the images
// are aligned (PostgreSQL's GetIncrementalHeaderSize).
func incrHeaderLen(n int64, blockSize int) int64 {
	l := 12 + 4*n
	if n > 0 && l%int64(blockSize) != 0 {
		l += int64(blockSize) - l%int64(blockSize)
	}
	return l
}

// parseIncrHeader parses the header in b (at least its first 12 + 4n
// bytes) of an INCREMENTAL file of contentSize bytes, and refuses what
// PostgreSQL never writes: a bad magic, counts over relsegBlocks, block
// numbers unsorted, repeated or out of range, or a size that is not the
// header plus n blocks.
func parseIncrHeader(b []byte, contentSize int64, blockSize, relsegBlocks int) (incrHeader, error) {
	var h incrHeader
	if len(b) < 12 {
		return h, fmt.Errorf("incremental file header: %d bytes, want at least 12", len(b))
	}
	if m := binary.LittleEndian.Uint32(b); m != incrMagic {
		return h, fmt.Errorf("incremental file header: magic %#08x, want %#08x", m, incrMagic)
	}
	n := binary.LittleEndian.Uint32(b[4:])
	h.TruncationBlocks = binary.LittleEndian.Uint32(b[8:])
	if n > uint32(relsegBlocks) {
		return h, fmt.Errorf("incremental file header: %d blocks, more than a segment's %d", n, relsegBlocks)
	}
	if h.TruncationBlocks > uint32(relsegBlocks) {
		return h, fmt.Errorf("incremental file header: truncation length %d blocks, more than a segment's %d", h.TruncationBlocks, relsegBlocks)
	}
	if int64(len(b)) < 12+4*int64(n) {
		return h, fmt.Errorf("incremental file header: %d block numbers need %d bytes, got %d", n, 12+4*int64(n), len(b))
	}
	h.HeaderLen = incrHeaderLen(int64(n), blockSize)
	if want := h.HeaderLen + int64(n)*int64(blockSize); contentSize != want {
		return h, fmt.Errorf("incremental file: %d bytes, but a header for %d blocks and the blocks make %d", contentSize, n, want)
	}
	h.Blocks = make([]uint32, n)
	for i := range h.Blocks {
		v := binary.LittleEndian.Uint32(b[12+4*i:])
		switch {
		case v >= uint32(relsegBlocks):
			return h, fmt.Errorf("incremental file header: block %d (entry %d) is beyond a segment's %d blocks", v, i, relsegBlocks)
		case i > 0 && v <= h.Blocks[i-1]:
			return h, fmt.Errorf("incremental file header: block %d (entry %d) follows block %d: not in ascending order", v, i, h.Blocks[i-1])
		}
		h.Blocks[i] = v
	}
	return h, nil
}
