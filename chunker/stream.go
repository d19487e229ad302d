package chunker

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/pierrec/lz4/v4"

	"github.com/pgstow/pgstow/manifest"
)

// Streaming seals and opens frames too large to hold in memory (WAL
// segments of up to 1 GiB). The frames are the ones Compress writes: the
// same options, the same 4 MB blocks, the content size in the header, so
// `lz4 -d` reads them and Decompress opens them. Memory is a block or two
// (the lz4 Writer's or Reader's own buffers, or liblz4's input and output
// block), not the frame.

// ErrFrame marks a frame that cannot be trusted: not LZ4, truncated,
// corrupt, without a content checksum, or larger than allowed. Errors
// reading the source or writing the destination are returned as they
// came, without it, so a caller can tell a bad object from a failing disk
// or network.
var ErrFrame = errors.New("bad lz4 frame")

// CompressStream writes one LZ4 frame holding the first size bytes of src
// to dst and returns the frame's length and its CRC32C. The frame records
// size as its content size; a src that ends before size bytes fails with
// io.ErrUnexpectedEOF. For the same bytes the frame is identical to the
// one Compress appends.
func (c *Compressor) CompressStream(dst io.Writer, src io.Reader, size int64) (frameSize int64, crc uint32, err error) {
	if c.err != nil {
		return 0, 0, c.err
	}
	if size < 0 {
		return 0, 0, fmt.Errorf("lz4 compress: negative size %d", size)
	}
	cw := &crcWriter{w: dst}
	if err := c.enc.writeFrame(cw, src, size); err != nil {
		return 0, 0, err
	}
	return cw.n, cw.crc, nil
}

// crcWriter counts and checksums what passes through it.
type crcWriter struct {
	w   io.Writer
	n   int64
	crc uint32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.crc = crc32.Update(c.crc, manifest.Castagnoli, p[:n])
	return n, err
}

// DecompressStream decodes the one LZ4 frame src holds into dst and
// returns the number of raw bytes written. It refuses a frame without a
// content checksum: the raw bytes reach dst before the frame's end is
// read, and that checksum is what proves them right. maxRaw >= 0 bounds
// the raw size, checked against the size the header declares before
// anything is decoded and against what is written; maxRaw < 0 means no
// bound. Frame errors wrap ErrFrame; when it returns an error, dst may
// hold part of the content, which the caller must discard.
func (d *Decompressor) DecompressStream(dst io.Writer, src io.Reader, maxRaw int64) (int64, error) {
	in := &recordingReader{r: src}
	out := &limitedWriter{w: dst, max: maxRaw}
	if d.r == nil {
		d.r = lz4.NewReader(&d.none)
	}
	d.r.Reset(in)
	// Drop the references to src and dst.
	defer d.r.Reset(&d.none)
	frameErr := func(err error) error {
		switch {
		case out.over:
			return fmt.Errorf("%w: more than the %d bytes allowed", ErrFrame, maxRaw)
		case in.err != nil:
			return in.err
		case out.err != nil:
			return out.err
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: %w", ErrFrame, err)
	}
	// Reading nothing makes the Reader parse the header, so its flags and
	// declared size can be checked before any block is decoded.
	if _, err := d.r.Read(nil); err != nil {
		return 0, frameErr(err)
	}
	if !hasContentChecksum(in.head[:in.nhead]) {
		return 0, fmt.Errorf("%w: no content checksum", ErrFrame)
	}
	if size := int64(d.r.Size()); maxRaw >= 0 && size > maxRaw {
		return 0, fmt.Errorf("%w: declares %d bytes, more than the %d allowed", ErrFrame, size, maxRaw)
	}
	if _, err := d.r.WriteTo(out); err != nil {
		return out.n, frameErr(err)
	}
	return out.n, nil
}

// hasContentChecksum reports whether head starts an LZ4 frame whose
// content checksum flag is set.
func hasContentChecksum(head []byte) bool {
	const magic = "\x04\x22\x4d\x18" // 0x184D2204, little-endian
	const flagContentChecksum = 0x04
	return len(head) >= 5 && string(head[:4]) == magic && head[4]&flagContentChecksum != 0
}

// recordingReader keeps the first bytes read (the frame's magic and
// flags) and the first error other than io.EOF, so a failing source is
// not mistaken for a bad frame.
type recordingReader struct {
	r     io.Reader
	head  [5]byte
	nhead int
	err   error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if r.nhead < len(r.head) {
		r.nhead += copy(r.head[r.nhead:], p[:n])
	}
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// limitedWriter writes at most max bytes (max < 0: no limit) and keeps
// the first error of the writer beneath, for the same reason.
type limitedWriter struct {
	w    io.Writer
	max  int64
	n    int64
	over bool
	err  error
}

// errTooLarge stops the lz4 Reader when the limit is passed; it never
// reaches the caller (DecompressStream reports the limit instead).
var errTooLarge = errors.New("raw size limit passed")

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.max >= 0 && l.n+int64(len(p)) > l.max {
		l.over = true
		return 0, errTooLarge
	}
	n, err := l.w.Write(p)
	l.n += int64(n)
	if err != nil && l.err == nil {
		l.err = err
	}
	return n, err
}
