package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/pierrec/lz4/v4"

	"github.com/pgstow/pgstow/manifest"
)

// ID returns a chunk's content address: the lowercase hex SHA-256 of its
// raw (uncompressed) bytes. Naming chunks by their raw bytes rather than
// their compressed form keeps IDs stable if the codec or its settings
// change, so deduplication survives an upgrade.
func ID(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// lz4BlockSize is the LZ4 frame block size. 4 MB is the largest standard
// one: fewer blocks mean less per-block overhead, and both encoders
// compress a whole block straight from the caller's slice without copying
// it.
const lz4BlockSize = 4 << 20

// Compressor seals chunks as standard LZ4 frames, so `lz4 -d` can read a
// chunk taken straight from the store. The frames have:
//   - a content checksum: an xxh32 of the whole chunk inside the frame,
//     so corruption is caught by any LZ4 reader, not only by pgstow;
//   - no block checksums: the content checksum and the chunk's SHA-256
//     already cover every byte;
//   - the content size in the header, and independent blocks of at most
//     4 MB;
//   - the fastest standard level: compression is the largest CPU cost of a
//     backup, and the stronger levels cost several times more for a few
//     percent.
//
// Two encoders write such frames: pierrec/lz4 (pure Go, always there), and
// the system's liblz4 through cgo when built with the lz4cgo tag (`make
// build` does so when liblz4-dev is installed), which compresses about
// twice as fast. Their frames differ in bytes but not in meaning: chunk
// IDs hash the raw bytes, so deduplication does not care which one wrote
// a chunk. One Compressor reuses its encoder's state and buffers across
// chunks; it is meant to be owned by one worker and is not safe for
// concurrent use.
type Compressor struct {
	enc frameEncoder
	err error // from configuring the encoder; never expected
}

// frameEncoder writes LZ4 frames. appendFrame appends one frame of raw to
// dst, whose spare capacity is at least CompressBound(len(raw)).
// writeFrame writes one frame of the first size bytes of src to w, block
// by block, byte for byte the frame appendFrame makes of the same bytes.
type frameEncoder interface {
	appendFrame(dst, raw []byte) ([]byte, error)
	writeFrame(w io.Writer, src io.Reader, size int64) error
}

// NewCompressor returns a Compressor configured for pgstow's chunks.
func NewCompressor() *Compressor {
	enc, err := newFrameEncoder()
	if err != nil {
		err = fmt.Errorf("configure lz4 encoder: %w", err)
	}
	return &Compressor{enc: enc, err: err}
}

// Encoder names the LZ4 encoder this build uses ("pierrec/lz4" or
// "liblz4 <version>"), for version output and benchmark reports.
func Encoder() string { return encoderName() }

// CompressBound returns the largest size of the frame Compress produces
// for rawSize bytes, so callers can size pooled buffers once: LZ4 stores
// a block that does not compress as is, so a frame exceeds its input only
// by its header, a 4-byte size per block, the end mark and the checksum.
func CompressBound(rawSize int) int {
	blocks := (rawSize + lz4BlockSize - 1) / lz4BlockSize
	return rawSize + 4*blocks + frameOverhead
}

// frameOverhead is an LZ4 frame's size without its blocks: the header at
// its largest (magic 4, descriptor and content size up to 15), the end
// mark (4) and the content checksum (4).
const frameOverhead = 4 + 15 + 4 + 4

// Compress appends one LZ4 frame of raw to dst and returns the CRC32C of
// the frame's bytes, which the store verifies on upload (so a bit flipped
// between here and the store's disk is caught before it is acknowledged).
// The frame records len(raw) as its content size.
func (c *Compressor) Compress(dst *bytes.Buffer, raw []byte) (crc uint32, err error) {
	// One growth up front instead of doublings; a pooled buffer already
	// has the room.
	dst.Grow(CompressBound(len(raw)))
	frame, crc, err := c.Append(dst.AvailableBuffer(), raw)
	if err != nil {
		return 0, err
	}
	// The frame is already in dst's spare space: writing it to itself
	// only advances the length (copy skips identical slices).
	dst.Write(frame)
	return crc, nil
}

// Append appends one LZ4 frame of raw to dst, growing it only if its
// spare capacity is below CompressBound(len(raw)), and returns the
// extended slice and the CRC32C of the frame's bytes. With a pooled dst of
// that capacity it allocates nothing.
func (c *Compressor) Append(dst, raw []byte) ([]byte, uint32, error) {
	if c.err != nil {
		return dst, 0, c.err
	}
	if need := CompressBound(len(raw)); cap(dst)-len(dst) < need {
		grown := make([]byte, len(dst), len(dst)+need)
		copy(grown, dst)
		dst = grown
	}
	start := len(dst)
	out, err := c.enc.appendFrame(dst, raw)
	if err != nil {
		return dst, 0, fmt.Errorf("lz4 compress: %w", err)
	}
	return out, crc32.Checksum(out[start:], manifest.Castagnoli), nil
}

// Decompressor reads standard LZ4 frames: chunks sealed by Compressor, and
// frames the lz4 CLI writes (no content size, linked blocks, block
// checksums). It decodes each block straight into the caller's buffer with
// pierrec/lz4's block decoder, so it holds no block buffers of its own and
// allocates nothing per frame. It is not safe for concurrent use.
type Decompressor struct {
	// TrustID skips the frame's content checksum (xxh32) in Decompress
	// calls given a chunk id: the SHA-256 check of the content proves
	// more, and the xxh32 costs about 5% of a restore's CPU. A corrupt
	// checksum field over intact content then goes unreported, which a
	// restore can accept and a verification of the repository cannot.
	TrustID bool

	xxh xxh32State
	// r reads frames too large to hold (DecompressStream), made on
	// first use; none is its source while idle.
	r    *lz4.Reader
	none bytes.Reader
}

// NewDecompressor returns a Decompressor.
func NewDecompressor() *Decompressor { return &Decompressor{} }

// lz4 frame constants (the LZ4 frame format, version 01).
const (
	lz4Magic        = 0x184D2204
	lz4FlagVersion  = 0x40 // bits 7-6: 01
	lz4FlagIndep    = 0x20
	lz4FlagBlockSum = 0x10
	lz4FlagSize     = 0x08
	lz4FlagSum      = 0x04
	lz4FlagDict     = 0x01
	lz4Uncompressed = 0x80000000
	lz4WindowSize   = 64 << 10 // how far back a linked block may reach
)

// Decompress decodes the LZ4 frame in src, appending the raw bytes to dst.
// The frame's content checksum, when it has one, must match (unless
// TrustID and wantID stand in for it): a corrupt stored object is reported
// even where the corruption spares the content.
// When wantID is not empty it also checks that the raw bytes hash to it,
// which proves the chunk is the one the manifest names, not merely an
// intact frame; without wantID the content checksum is required.
func (d *Decompressor) Decompress(dst *bytes.Buffer, src []byte, wantID string) error {
	what := "lz4 frame"
	if wantID != "" {
		what = "chunk " + wantID
	}
	start := dst.Len()
	out, err := d.decode(dst.AvailableBuffer(), src, wantID == "", d.TrustID && wantID != "", func(need int) []byte {
		dst.Grow(need)
		return dst.AvailableBuffer()
	})
	if err != nil {
		return fmt.Errorf("decompress %s: %w", what, err)
	}
	dst.Write(out) // out is dst's spare space: this only advances the length
	if wantID != "" {
		sum := sha256.Sum256(dst.Bytes()[start:])
		var got [2 * sha256.Size]byte
		hex.Encode(got[:], sum[:])
		if string(got[:]) != wantID {
			return fmt.Errorf("chunk %s: content hash mismatch (got %s)", wantID, got[:])
		}
	}
	return nil
}

// decode decodes the frame in src into out (empty, with spare capacity),
// calling grow(n) for a new empty buffer with at least n spare bytes (the
// bytes decoded so far copied in) when out has too little room. needSum:
// a frame without a content checksum is refused; skipSum: a content
// checksum is not checked.
func (d *Decompressor) decode(out, src []byte, needSum, skipSum bool, grow func(int) []byte) ([]byte, error) {
	if len(src) < 7 {
		return nil, io.ErrUnexpectedEOF
	}
	if binary.LittleEndian.Uint32(src) != lz4Magic {
		return nil, fmt.Errorf("not an LZ4 frame (magic %#08x)", binary.LittleEndian.Uint32(src))
	}
	flg, bd := src[4], src[5]
	if flg&0xC0 != lz4FlagVersion {
		return nil, fmt.Errorf("LZ4 frame version %d, only 1 is known", flg>>6)
	}
	if flg&0x02 != 0 || bd&0x8F != 0 {
		return nil, errors.New("LZ4 frame descriptor has reserved bits set")
	}
	if flg&lz4FlagDict != 0 {
		return nil, errors.New("LZ4 frame needs a dictionary")
	}
	var blockMax int
	switch bd >> 4 & 7 {
	case 4:
		blockMax = 64 << 10
	case 5:
		blockMax = 256 << 10
	case 6:
		blockMax = 1 << 20
	case 7:
		blockMax = 4 << 20
	default:
		return nil, fmt.Errorf("LZ4 frame block size code %d is not a valid one", bd>>4&7)
	}
	hdr := 6
	size := int64(-1)
	if flg&lz4FlagSize != 0 {
		hdr += 8
		if len(src) < hdr+1 {
			return nil, io.ErrUnexpectedEOF
		}
		size = int64(binary.LittleEndian.Uint64(src[6:]))
	}
	if byte(xxh32Sum(src[4:hdr])>>8) != src[hdr] {
		return nil, errors.New("LZ4 frame header checksum mismatch")
	}
	pos := hdr + 1
	if size >= 0 {
		// A compressed LZ4 block expands at most about 255 times: trust
		// the declared size no further, so that a header whose one-byte
		// checksum passed by chance cannot make this allocate much.
		if want := int(min(size, 255*int64(len(src)))); cap(out)-len(out) < want {
			out = grow(want)
		}
	}
	linked := flg&lz4FlagIndep == 0
	checkContent := flg&lz4FlagSum != 0 && !skipSum
	if checkContent {
		d.xxh.reset()
	}
	for {
		if len(src)-pos < 4 {
			return nil, io.ErrUnexpectedEOF
		}
		word := binary.LittleEndian.Uint32(src[pos:])
		pos += 4
		if word == 0 {
			break // end mark
		}
		n := int(word &^ lz4Uncompressed)
		if n > blockMax {
			return nil, fmt.Errorf("LZ4 block of %d bytes in a frame of %d-byte blocks", n, blockMax)
		}
		if len(src)-pos < n {
			return nil, io.ErrUnexpectedEOF
		}
		block := src[pos : pos+n]
		pos += n
		if flg&lz4FlagBlockSum != 0 {
			if len(src)-pos < 4 {
				return nil, io.ErrUnexpectedEOF
			}
			if xxh32Sum(block) != binary.LittleEndian.Uint32(src[pos:]) {
				return nil, errors.New("LZ4 block checksum mismatch")
			}
			pos += 4
		}
		if cap(out)-len(out) < blockMax {
			grown := grow(len(out) + max(blockMax, len(out)))
			out = append(grown[:0], out...)
		}
		at := len(out)
		spare := out[at : at+blockMax]
		var k int
		if word&lz4Uncompressed != 0 {
			k = copy(spare, block)
		} else {
			var err error
			if linked && at > 0 {
				k, err = lz4.UncompressBlockWithDict(block, spare, out[max(0, at-lz4WindowSize):at])
			} else {
				k, err = lz4.UncompressBlock(block, spare)
			}
			if err != nil {
				return nil, fmt.Errorf("LZ4 block at offset %d: %w", pos-n, err)
			}
		}
		out = out[:at+k]
		if checkContent {
			d.xxh.write(out[at:])
		}
		if size >= 0 && int64(len(out)) > size {
			return nil, fmt.Errorf("LZ4 frame holds more than the %d bytes it declares", size)
		}
	}
	if flg&lz4FlagSum != 0 {
		if len(src)-pos < 4 {
			return nil, io.ErrUnexpectedEOF
		}
		if checkContent && d.xxh.sum() != binary.LittleEndian.Uint32(src[pos:]) {
			return nil, errors.New("LZ4 content checksum mismatch")
		}
		pos += 4
	} else if needSum {
		return nil, errors.New("LZ4 frame has no content checksum to check it by")
	}
	if pos != len(src) {
		return nil, fmt.Errorf("%d bytes of trailing data after the LZ4 frame", len(src)-pos)
	}
	if size >= 0 && int64(len(out)) != size {
		return nil, fmt.Errorf("LZ4 frame holds %d bytes, its header declares %d", len(out), size)
	}
	return out, nil
}
