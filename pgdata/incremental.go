package pgdata

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// IncrementalMagic starts every INCREMENTAL.<name> file PostgreSQL 17+
// sends in an incremental backup (INCREMENTAL_MAGIC in the server).
const IncrementalMagic = 0xd3ae1f0d

// incrementalFixedLen is the magic, the block count and the truncation
// length, before the block numbers.
const incrementalFixedLen = 12

// ErrIncrementalShort is returned (wrapped) by ParseIncrementalHeader when
// b ends before the header does; IncrementalHeaderLen says how many bytes
// it needs.
var ErrIncrementalShort = errors.New("incremental file header is short")

// IncrementalHeader is the header of an INCREMENTAL.<name> file. The file
// is the header, zero padding to a multiple of the block size (only when
// there are blocks), then one block image per entry of Blocks, in that
// order. The relation segment it stands for is reconstructed with
// ReconstructedBlocks blocks: block b is the file's image when b is in
// Blocks, else the previous backup's block b when b < TruncationBlocks and
// the previous file has it, else zeros.
type IncrementalHeader struct {
	// Blocks are the changed blocks' numbers relative to the segment,
	// strictly ascending.
	Blocks []uint32
	// TruncationBlocks is how many leading blocks of the previous backup's
	// file may be kept (the server's truncation_block_length).
	TruncationBlocks uint32
	// HeaderLen is where the first block image starts: the header and its
	// padding.
	HeaderLen int64
	// ContentLen is the size the file must have: HeaderLen plus the block
	// images.
	ContentLen int64
}

// ReconstructedBlocks is the length, in blocks, of the file the
// incremental stands for: max(TruncationBlocks, last changed block + 1).
func (h IncrementalHeader) ReconstructedBlocks() uint32 {
	n := h.TruncationBlocks
	if len(h.Blocks) > 0 {
		n = max(n, h.Blocks[len(h.Blocks)-1]+1)
	}
	return n
}

// CheckSize refuses a file whose size is not the header's ContentLen: a
// file cut short or with more after its blocks cannot be reconstructed.
func (h IncrementalHeader) CheckSize(size int64) error {
	if size != h.ContentLen {
		return fmt.Errorf("incremental file of %d bytes, but its header describes %d (%d blocks after a %d-byte header)", size, h.ContentLen, len(h.Blocks), h.HeaderLen)
	}
	return nil
}

// IncrementalHeaderLen returns how many bytes of an INCREMENTAL.<name>
// file ParseIncrementalHeader needs: the fixed part, then four bytes per
// block number (the zero padding is not needed). prefix must hold at
// least the fixed 12 bytes. It checks what those bytes say.
func IncrementalHeaderLen(prefix []byte, relsegBlocks int) (int, error) {
	if len(prefix) < incrementalFixedLen {
		return 0, fmt.Errorf("%w: %d bytes, want at least %d", ErrIncrementalShort, len(prefix), incrementalFixedLen)
	}
	if magic := binary.LittleEndian.Uint32(prefix); magic != IncrementalMagic {
		return 0, fmt.Errorf("incremental file: bad magic number 0x%08x, want 0x%08x", magic, uint32(IncrementalMagic))
	}
	n := binary.LittleEndian.Uint32(prefix[4:])
	if relsegBlocks <= 0 || uint64(n) > uint64(relsegBlocks) {
		return 0, fmt.Errorf("incremental file: %d blocks, more than the segment's %d", n, relsegBlocks)
	}
	if t := binary.LittleEndian.Uint32(prefix[8:]); uint64(t) > uint64(relsegBlocks) {
		return 0, fmt.Errorf("incremental file: truncation length %d blocks, more than the segment's %d", t, relsegBlocks)
	}
	return incrementalFixedLen + 4*int(n), nil
}

// ParseIncrementalHeader parses the header of an INCREMENTAL.<name> file
// from b, its first bytes (at least IncrementalHeaderLen of them; more,
// up to the whole file, are fine). blockSize is the server's BLCKSZ and
// relsegBlocks its RELSEG_SIZE, the blocks in a segment (131072 for 1 GiB
// segments of 8 KiB blocks). It refuses a bad magic number, counts beyond
// a segment, block numbers out of order, repeated or beyond a segment,
// and padding that is not zeros where b holds it; the caller checks the
// file's size with CheckSize. The byte order is little-endian: PostgreSQL
// writes the header in the server's order, and we back up little-endian
// servers only.
func ParseIncrementalHeader(b []byte, blockSize, relsegBlocks int) (IncrementalHeader, error) {
	var h IncrementalHeader
	if blockSize <= 0 || blockSize&(blockSize-1) != 0 {
		return h, fmt.Errorf("incremental file: invalid block size %d", blockSize)
	}
	need, err := IncrementalHeaderLen(b, relsegBlocks)
	if err != nil {
		return h, err
	}
	if len(b) < need {
		return h, fmt.Errorf("%w: %d bytes, want %d for its block numbers", ErrIncrementalShort, len(b), need)
	}
	n := (need - incrementalFixedLen) / 4
	h.TruncationBlocks = binary.LittleEndian.Uint32(b[8:])
	h.Blocks = make([]uint32, n)
	for i := range h.Blocks {
		blk := binary.LittleEndian.Uint32(b[incrementalFixedLen+4*i:])
		switch {
		case uint64(blk) >= uint64(relsegBlocks):
			return IncrementalHeader{}, fmt.Errorf("incremental file: block number %d (entry %d) beyond the segment's %d blocks", blk, i, relsegBlocks)
		case i > 0 && blk <= h.Blocks[i-1]:
			return IncrementalHeader{}, fmt.Errorf("incremental file: block number %d (entry %d) not after %d: want them ascending and distinct", blk, i, h.Blocks[i-1])
		}
		h.Blocks[i] = blk
	}
	h.HeaderLen = int64(need)
	if n > 0 {
		// Block images are aligned: the header is padded with zeros to
		// a multiple of the block size.
		bs := int64(blockSize)
		h.HeaderLen = (h.HeaderLen + bs - 1) / bs * bs
	}
	for i, c := range b[need:min(int64(len(b)), h.HeaderLen)] {
		if c != 0 {
			return IncrementalHeader{}, fmt.Errorf("incremental file: byte %d of the header's padding is 0x%02x, want zeros", need+i, c)
		}
	}
	h.ContentLen = h.HeaderLen + int64(n)*int64(blockSize)
	return h, nil
}
