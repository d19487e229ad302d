package incremental

import (
	"hash/crc32"

	"github.com/pgstow/pgstow/manifest"
)

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
		h.crc = crc32.Update(h.crc, manifest.Castagnoli, p[:k])
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
