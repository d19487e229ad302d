package manifest

import "fmt"

// CRC32C combination: an incremental backup assembles a file from blocks
// it never reads whole (a parent backup's, recorded as per-block CRCs, and
// new ones from the server), and still records the file's CRC32C, which
// restore and verify check. The CRC of a concatenation follows from the
// parts' CRCs: with CRCs kept in the reflected form hash/crc32 uses,
// crc(A‖B) = crc(A)·x^(8·len(B)) mod P ⊕ crc(B), the pre- and
// post-inversion cancelling out (zlib's crc32_combine rests on the same
// identity). Polynomials over GF(2) are uint32s, bit 31 the coefficient of
// x^0, as in the reflected CRC.

// castagnoliReversed is the CRC-32C polynomial in reflected form.
const castagnoliReversed = 0x82f63b78

// gfMulModP returns a·b mod P.
func gfMulModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0 && a != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			a ^= m
		}
		// b·x mod P
		if b&1 != 0 {
			b = b>>1 ^ castagnoliReversed
		} else {
			b >>= 1
		}
	}
	return p
}

// xPow8nModP returns x^(8n) mod P, the operator that shifts a CRC past n
// zero bytes, by squaring: x^(2^k) for each set bit k of 8n. About 64
// multiplications for any n, so no table is kept.
func xPow8nModP(n int64) uint32 {
	p := uint32(1) << 31  // x^0
	sq := uint32(1) << 30 // x^1
	for k := uint64(n) * 8; k != 0; k >>= 1 {
		if k&1 != 0 {
			p = gfMulModP(sq, p)
		}
		sq = gfMulModP(sq, sq)
	}
	return p
}

// CRC32CCombine returns the CRC32C (Castagnoli, as hash/crc32 computes it)
// of A‖B from crcA, the CRC32C of A, crcB, that of B, and lenB, B's length
// in bytes; A's length does not matter. lenB must not be negative.
func CRC32CCombine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA // B is empty, so crcB is 0
	}
	return gfMulModP(xPow8nModP(lenB), crcA) ^ crcB
}

// CRC32CFolder combines CRCs of blocks of one length fast: the shift past
// a block, a linear map on the CRC, is tabulated once (4 KiB), so
// appending a block costs four table look-ups. One folder serves every
// file of a backup, whose relation files share the server's block size.
type CRC32CFolder struct {
	blockLen int64
	shift    [4][256]uint32 // shift[i][v]: the shift of v<<(8i)
}

// NewCRC32CFolder returns a folder for blocks of blockLen bytes (> 0).
func NewCRC32CFolder(blockLen int) *CRC32CFolder {
	f := &CRC32CFolder{blockLen: int64(blockLen)}
	op := xPow8nModP(int64(blockLen))
	for i := range f.shift {
		for v := range 256 {
			f.shift[i][v] = gfMulModP(op, uint32(v)<<(8*i))
		}
	}
	return f
}

// Append returns the CRC32C of A‖B, where crc is A's and blockCRC that of
// a block B of the folder's length.
func (f *CRC32CFolder) Append(crc, blockCRC uint32) uint32 {
	return f.shift[0][crc&0xff] ^ f.shift[1][crc>>8&0xff] ^
		f.shift[2][crc>>16&0xff] ^ f.shift[3][crc>>24] ^ blockCRC
}

// Fold returns the CRC32C of a content of size bytes from the CRCs of its
// blocks, in order: every block of the folder's length but the last,
// which holds the rest (1 to blockLen bytes). It refuses a count of CRCs
// that does not fit size, as a manifest's block_crc32c must.
func (f *CRC32CFolder) Fold(blocks []uint32, size int64) (uint32, error) {
	if size < 0 {
		return 0, fmt.Errorf("fold block CRCs: negative size %d", size)
	}
	want := size/f.blockLen + min(size%f.blockLen, 1)
	if int64(len(blocks)) != want {
		return 0, fmt.Errorf("fold block CRCs: %d values for %d bytes in %d-byte blocks: want %d", len(blocks), size, f.blockLen, want)
	}
	if len(blocks) == 0 {
		return 0, nil
	}
	var crc uint32
	last := len(blocks) - 1
	for _, b := range blocks[:last] {
		crc = f.Append(crc, b)
	}
	lastLen := size - int64(last)*f.blockLen
	if lastLen == f.blockLen {
		return f.Append(crc, blocks[last]), nil
	}
	return CRC32CCombine(crc, blocks[last], lastLen), nil
}
