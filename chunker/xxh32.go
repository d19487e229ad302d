package chunker

import (
	"encoding/binary"
	"math/bits"
)

// xxh32 is the 32-bit xxHash (seed 0) that LZ4 frames use for their
// header and content checksums. The frame decoder needs it for both, and
// pierrec/lz4 keeps its own implementation internal.
const (
	xxhP1 uint32 = 2654435761
	xxhP2 uint32 = 2246822519
	xxhP3 uint32 = 3266489917
	xxhP4 uint32 = 668265263
	xxhP5 uint32 = 374761393
)

// xxh32State hashes a stream written in pieces: it buffers less than one
// 16-byte stripe between writes.
type xxh32State struct {
	v      [4]uint32
	buf    [16]byte
	nbuf   int
	total  uint64
	strips bool // at least one whole stripe was consumed
}

func (x *xxh32State) reset() {
	p1, p2 := xxhP1, xxhP2 // variables: the sums wrap, as the algorithm wants
	*x = xxh32State{v: [4]uint32{p1 + p2, p2, 0, 0 - p1}}
}

func xxhRound(acc, lane uint32) uint32 {
	return bits.RotateLeft32(acc+lane*xxhP2, 13) * xxhP1
}

func (x *xxh32State) stripes(p []byte) {
	v1, v2, v3, v4 := x.v[0], x.v[1], x.v[2], x.v[3]
	for ; len(p) >= 16; p = p[16:] {
		v1 = xxhRound(v1, binary.LittleEndian.Uint32(p[0:]))
		v2 = xxhRound(v2, binary.LittleEndian.Uint32(p[4:]))
		v3 = xxhRound(v3, binary.LittleEndian.Uint32(p[8:]))
		v4 = xxhRound(v4, binary.LittleEndian.Uint32(p[12:]))
	}
	x.v = [4]uint32{v1, v2, v3, v4}
	x.strips = true
}

func (x *xxh32State) write(p []byte) {
	x.total += uint64(len(p))
	if x.nbuf > 0 {
		n := copy(x.buf[x.nbuf:], p)
		x.nbuf += n
		p = p[n:]
		if x.nbuf < 16 {
			return
		}
		x.stripes(x.buf[:])
		x.nbuf = 0
	}
	if whole := len(p) &^ 15; whole > 0 {
		x.stripes(p[:whole])
		p = p[whole:]
	}
	x.nbuf = copy(x.buf[:], p)
}

func (x *xxh32State) sum() uint32 {
	var h uint32
	if x.strips {
		h = bits.RotateLeft32(x.v[0], 1) + bits.RotateLeft32(x.v[1], 7) +
			bits.RotateLeft32(x.v[2], 12) + bits.RotateLeft32(x.v[3], 18)
	} else {
		h = xxhP5
	}
	h += uint32(x.total)
	p := x.buf[:x.nbuf]
	for ; len(p) >= 4; p = p[4:] {
		h = bits.RotateLeft32(h+binary.LittleEndian.Uint32(p)*xxhP3, 17) * xxhP4
	}
	for _, b := range p {
		h = bits.RotateLeft32(h+uint32(b)*xxhP5, 11) * xxhP1
	}
	h ^= h >> 15
	h *= xxhP2
	h ^= h >> 13
	h *= xxhP3
	h ^= h >> 16
	return h
}

// xxh32Sum is the xxHash32 of p.
func xxh32Sum(p []byte) uint32 {
	var x xxh32State
	x.reset()
	x.write(p)
	return x.sum()
}
