//go:build !(lz4cgo && cgo)

package chunker

import (
	"fmt"
	"io"

	"github.com/pierrec/lz4/v4"
)

// goEncoder writes frames with pierrec/lz4's Writer, reused across frames
// (Reset keeps its options and its block buffer). With concurrency 1 the
// Writer compresses each full block straight from the input; only the
// compressed bytes are copied, into dst.
type goEncoder struct {
	w   *lz4.Writer
	out appendWriter
}

func newFrameEncoder() (frameEncoder, error) {
	e := &goEncoder{w: lz4.NewWriter(nil)}
	err := e.w.Apply(
		lz4.BlockSizeOption(lz4BlockSize),
		lz4.ChecksumOption(true),
		lz4.BlockChecksumOption(false),
		lz4.CompressionLevelOption(lz4.Fast),
		// pgstow compresses many chunks in parallel, one per worker,
		// which scales better than splitting one chunk over goroutines.
		lz4.ConcurrencyOption(1),
	)
	return e, err
}

func encoderName() string { return "pierrec/lz4" }

func (e *goEncoder) appendFrame(dst, raw []byte) ([]byte, error) {
	e.out.b = dst
	e.w.Reset(&e.out)
	// Drop the reference to dst, so an idle encoder does not keep the
	// caller's buffer alive.
	defer func() { e.out.b = nil; e.w.Reset(nil) }()
	// Reset keeps the options but not the size: it is per frame.
	if err := e.w.Apply(lz4.SizeOption(uint64(len(raw)))); err != nil {
		return dst, err
	}
	if _, err := e.w.Write(raw); err != nil {
		return dst, err
	}
	if err := e.w.Close(); err != nil {
		return dst, err
	}
	return e.out.b, nil
}

// appendWriter appends to a slice whose capacity the caller sized.
type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// writeFrame feeds src to the Writer in small writes, which it gathers
// into its own block buffer and compresses a whole block at a time: the
// block boundaries, and thus the frame, do not depend on how src splits
// its reads. (The Writer's ReadFrom would read into a second block-sized
// buffer.)
func (e *goEncoder) writeFrame(w io.Writer, src io.Reader, size int64) error {
	e.w.Reset(w)
	defer e.w.Reset(nil)
	if err := e.w.Apply(lz4.SizeOption(uint64(size))); err != nil {
		return fmt.Errorf("lz4 compress: %w", err)
	}
	buf := make([]byte, streamReadBytes)
	var n int64
	for n < size {
		k, rerr := src.Read(buf[:min(int64(len(buf)), size-n)])
		if k > 0 {
			if _, err := e.w.Write(buf[:k]); err != nil {
				return fmt.Errorf("lz4 compress: %w", err)
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("lz4 compress: read: %w", rerr)
		}
	}
	if n != size {
		return fmt.Errorf("lz4 compress: the source ended after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	if err := e.w.Close(); err != nil {
		return fmt.Errorf("lz4 compress: %w", err)
	}
	return nil
}

// streamReadBytes is the size of writeFrame's reads: large enough that
// reading a file costs few system calls, small beside the 4 MB block.
const streamReadBytes = 256 << 10
