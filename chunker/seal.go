package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/pierrec/lz4/v4"
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

// frameEncoder appends one LZ4 frame of raw to dst, whose spare capacity
// is at least CompressBound(len(raw)).
type frameEncoder interface {
	appendFrame(dst, raw []byte) ([]byte, error)
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
	return out, crc32.Checksum(out[start:], castagnoli), nil
}

// Decompressor reads chunks sealed by Compressor. It reuses its lz4 Reader
// across chunks. It is not safe for concurrent use.
type Decompressor struct {
	r     *lz4.Reader
	src   bytes.Reader
	small [4096]byte // read space when dst is full
}

// NewDecompressor returns a Decompressor.
func NewDecompressor() *Decompressor {
	d := &Decompressor{}
	d.r = lz4.NewReader(&d.src)
	return d
}

// Decompress decodes the LZ4 frame in src, appending the raw bytes to dst,
// and fails if the frame's content checksum does not match. When wantID is
// not empty it also checks that the raw bytes hash to it, which proves the
// chunk is the one the manifest names, not merely an intact frame.
func (d *Decompressor) Decompress(dst *bytes.Buffer, src []byte, wantID string) error {
	what := "lz4 frame"
	if wantID != "" {
		what = "chunk " + wantID
	}
	start := dst.Len()
	d.src.Reset(src)
	d.r.Reset(&d.src)
	defer func() {
		d.src.Reset(nil)
		d.r.Reset(&d.src)
	}()

	// Reading nothing makes the Reader parse and verify the frame header,
	// so the content size it reports can be trusted as far as the header
	// checksum goes.
	if _, err := d.r.Read(nil); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("decompress %s: %w", what, err)
	}
	// Decode straight into dst's spare capacity, grown once to the size
	// the frame declares (ours always do), so the bytes are not copied
	// again. The lz4 Reader decodes a block in place only when a whole
	// block's room (4 MB) is left, so the last block goes through its own
	// buffer unless dst had that much room to spare beforehand.
	if size := int64(d.r.Size()); size > 0 {
		// A compressed LZ4 block expands at most about 255 times: trust
		// the declared size no further, so a header whose one-byte
		// checksum passed by chance cannot make this allocate much.
		dst.Grow(int(min(size, 255*int64(len(src)))))
	}
	for {
		spare := dst.AvailableBuffer()
		spare = spare[:cap(spare)]
		if len(spare) == 0 {
			// Full: either the content is all there and this read only
			// checks the end mark and checksum, or the frame declared no
			// size (or a wrong one) and dst must grow.
			spare = d.small[:]
		}
		n, err := d.r.Read(spare)
		// Writing dst's spare space to itself only advances its length
		// (copy skips identical slices).
		dst.Write(spare[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("decompress %s: %w", what, err)
		}
	}
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
