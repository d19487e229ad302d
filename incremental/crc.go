package incremental

import (
	"hash/crc32"

	"github.com/pgstow/pgstow/manifest"
)

// This file is a private stand-in for manifest.CRC32CCombine, which
// another change adds; the names are lower-case so that both can meet
// in one tree, and this one goes once that is merged.

// crcTable is the Castagnoli table, for stepping the raw CRC register.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// gf2Times multiplies the 32×32 GF(2) matrix mat (columns) by vec.
func gf2Times(mat *[32]uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

// gf2Square sets sq to mat×mat.
func gf2Square(sq, mat *[32]uint32) {
	for i := range 32 {
		sq[i] = gf2Times(mat, mat[i])
	}
}

// zeroOperator returns the matrix that advances the raw (unconditioned)
// CRC32C register over n zero bytes, by squaring as zlib's
// crc32_combine does: O(log n) matrix products.
func zeroOperator(n int64) [32]uint32 {
	var res, odd, even [32]uint32
	for i := range 32 {
		res[i] = 1 << i // identity
	}
	// odd: one zero bit.
	odd[0] = 0x82F63B78 // reflected Castagnoli polynomial
	for i := 1; i < 32; i++ {
		odd[i] = 1 << (i - 1)
	}
	gf2Square(&even, &odd) // two bits
	gf2Square(&odd, &even) // four bits
	for n > 0 {
		gf2Square(&even, &odd) // first: one byte
		if n&1 != 0 {
			res = product(&even, &res)
		}
		n >>= 1
		if n == 0 {
			break
		}
		gf2Square(&odd, &even)
		if n&1 != 0 {
			res = product(&odd, &res)
		}
		n >>= 1
	}
	return res
}

// product returns a×b (apply b, then a).
func product(a, b *[32]uint32) [32]uint32 {
	var out [32]uint32
	for i := range 32 {
		out[i] = gf2Times(a, b[i])
	}
	return out
}

// crc32cCombine returns the CRC32C of A||B from crcA, crcB and len(B):
// the conditioning of both CRCs cancels, leaving crcA advanced over
// len(B) zero bytes, xor crcB.
func crc32cCombine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA // B is empty, and crcB is 0
	}
	op := zeroOperator(lenB)
	return gf2Times(&op, crcA) ^ crcB
}

// blockCombiner appends blocks of one fixed size to a CRC32C in four
// table lookups each: the zero-byte operator for that size as byte
// tables. It makes the CRC of a 1 GiB file from its 131,072 block CRCs
// cost microseconds, not a matrix product per block.
type blockCombiner struct {
	t [4][256]uint32
}

func newBlockCombiner(blockSize int) *blockCombiner {
	op := zeroOperator(int64(blockSize))
	c := &blockCombiner{}
	for k := range 4 {
		for b := range 256 {
			c.t[k][b] = gf2Times(&op, uint32(b)<<(8*k))
		}
	}
	return c
}

// add returns the CRC32C of A||B given crcA and the CRC32C of one block B.
func (c *blockCombiner) add(crcA, crcB uint32) uint32 {
	return c.t[0][crcA&0xff] ^ c.t[1][(crcA>>8)&0xff] ^ c.t[2][(crcA>>16)&0xff] ^ c.t[3][crcA>>24] ^ crcB
}

// blockCRCs computes the CRC32C of each blockSize block of a stream fed
// in pieces of any size; the last block may be short.
type blockCRCs struct {
	blockSize int
	in        int    // bytes of the current block seen
	crc       uint32 // of those bytes
	out       manifest.BlockCRCs
}

func (h *blockCRCs) write(p []byte) {
	for len(p) > 0 {
		k := min(h.blockSize-h.in, len(p))
		h.crc = crc32.Update(h.crc, crcTable, p[:k])
		h.in += k
		p = p[k:]
		if h.in == h.blockSize {
			h.out = append(h.out, h.crc)
			h.in, h.crc = 0, 0
		}
	}
}

// finish closes a short last block and returns the values.
func (h *blockCRCs) finish() manifest.BlockCRCs {
	if h.in > 0 {
		h.out = append(h.out, h.crc)
		h.in, h.crc = 0, 0
	}
	return h.out
}
