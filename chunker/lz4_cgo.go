//go:build lz4cgo && cgo

package chunker

/*
#cgo LDFLAGS: -llz4
#include <stdlib.h>
#include <string.h>
#include <lz4.h>
#include <lz4frame.h>

// pgstow_frame writes one whole frame of src into dst with liblz4's frame
// API on a reused context: begin (header), one update (every block,
// compressed straight from src thanks to autoFlush), end (end mark and
// content checksum). It returns the frame's size, or an LZ4F error code
// (test with LZ4F_isError). pgstow writes its frames itself (see
// cEncoder); this is the reference they are tested against.
static size_t pgstow_frame(LZ4F_cctx *cctx, char *dst, size_t cap, const char *src, size_t n) {
	// pgstow's preferences: 4 MB independent blocks, content checksum,
	// no block checksums, the content size, the default (fast) level,
	// autoFlush.
	LZ4F_preferences_t p;
	memset(&p, 0, sizeof p);
	p.frameInfo.blockSizeID = LZ4F_max4MB;
	p.frameInfo.blockMode = LZ4F_blockIndependent;
	p.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	p.frameInfo.blockChecksumFlag = LZ4F_noBlockChecksum;
	p.frameInfo.contentSize = n;
	p.compressionLevel = 0;
	p.autoFlush = 1;
	size_t off = LZ4F_compressBegin(cctx, dst, cap, &p);
	if (LZ4F_isError(off)) return off;
	if (n > 0) {
		size_t k = LZ4F_compressUpdate(cctx, dst + off, cap - off, src, n, NULL);
		if (LZ4F_isError(k)) return k;
		off += k;
	}
	size_t k = LZ4F_compressEnd(cctx, dst + off, cap - off, NULL);
	if (LZ4F_isError(k)) return k;
	return off + k;
}

// pgstow_block compresses one block into dst the way LZ4F does for
// independent blocks at the default level (acceleration 1, a table
// cleared for each block), capped at cap bytes: 0 means it did not fit.
static int pgstow_block(void *state, const char *src, char *dst, int n, int cap) {
	return LZ4_compress_fast_extState(state, src, dst, n, cap, 1);
}

*/
import "C"

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"unsafe"
)

// cEncoder writes frames with the system's liblz4, about twice as fast as
// the Go encoder here. liblz4 compresses the blocks; the frame around them
// (header, block sizes, end mark, content checksum) is written here, as
// LZ4F would write it, because Debian's liblz4 computes the content
// checksum (xxh32) at about 1.4 GB/s, nearly half the cost of the
// compression itself, where the xxh32 in this package runs at over 6 GB/s
// (measured with the lz4 CLI on 1 GB of the benchmark's base.tar: 1.44
// user-s with the checksum, 0.75 without). The frames are the ones LZ4F
// writes with pgstow's preferences (TestFramesMatchLZ4F). The block
// state is allocated once and freed when the encoder is collected.
type cEncoder struct {
	state unsafe.Pointer
	// in and out are writeFrame's block buffers, made on first use.
	in, out []byte
}

func newFrameEncoder() (frameEncoder, error) {
	state := C.malloc(C.size_t(C.LZ4_sizeofState()))
	if state == nil {
		return nil, errors.New("cannot allocate liblz4's compression state")
	}
	e := &cEncoder{state: state}
	runtime.AddCleanup(e, func(s unsafe.Pointer) { C.free(s) }, state)
	return e, nil
}

func encoderName() string {
	v := int(C.LZ4_versionNumber())
	return fmt.Sprintf("liblz4 %d.%d.%d", v/10000, v/100%100, v%100)
}

// appendFrame writes the frame of raw into dst's spare capacity, which
// must hold CompressBound(len(raw)) bytes (Compressor.Append sees to it):
// the pooled buffer dst is must never be swapped for a new one.
func (e *cEncoder) appendFrame(dst, raw []byte) ([]byte, error) {
	if cap(dst)-len(dst) < CompressBound(len(raw)) {
		return dst, fmt.Errorf("frame buffer has %d spare bytes, %d needed", cap(dst)-len(dst), CompressBound(len(raw)))
	}
	dst = appendFrameHeader(dst, int64(len(raw)))
	for off := 0; off < len(raw); off += lz4BlockSize {
		dst = e.appendBlock(dst, raw[off:min(off+lz4BlockSize, len(raw))])
	}
	dst = binary.LittleEndian.AppendUint32(dst, 0) // end mark
	return binary.LittleEndian.AppendUint32(dst, xxh32Sum(raw)), nil
}

// appendBlock appends one block, its size first, into dst's spare
// capacity (at least 4 + len(blk) bytes). Like LZ4F, it stores a block as
// is (size with the high bit set) unless it compresses to fewer bytes.
func (e *cEncoder) appendBlock(dst, blk []byte) []byte {
	at := len(dst)
	spare := dst[at+4 : at+4+len(blk)]
	n := C.pgstow_block(e.state, (*C.char)(unsafe.Pointer(&blk[0])), (*C.char)(unsafe.Pointer(&spare[0])), C.int(len(blk)), C.int(len(blk)-1))
	runtime.KeepAlive(e)
	if n <= 0 || int(n) >= len(blk) {
		binary.LittleEndian.PutUint32(dst[at:at+4], uint32(len(blk))|lz4Uncompressed)
		copy(spare, blk)
		return dst[:at+4+len(blk)]
	}
	binary.LittleEndian.PutUint32(dst[at:at+4], uint32(n))
	return dst[:at+4+int(n)]
}

// appendFrameHeader appends the header LZ4F writes with pgstow's
// preferences: version 1, independent blocks, content checksum, the
// content size (left out, as LZ4F does, when it is 0), 4 MB blocks, and
// the descriptor's checksum byte.
func appendFrameHeader(dst []byte, size int64) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, lz4Magic)
	desc := len(dst)
	flg := byte(lz4FlagVersion | lz4FlagIndep | lz4FlagSum)
	if size > 0 {
		flg |= lz4FlagSize
	}
	dst = append(dst, flg, 7<<4) // block size code 7: 4 MB
	if size > 0 {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(size))
	}
	return append(dst, byte(xxh32Sum(dst[desc:])>>8))
}

// lz4fFrame is the frame liblz4's own frame API writes for raw with
// pgstow's preferences: the reference appendFrame is tested against. Only
// tests call it, so it makes and frees its own context.
func lz4fFrame(raw []byte) ([]byte, error) {
	var cctx *C.LZ4F_cctx
	if code := C.LZ4F_createCompressionContext(&cctx, C.LZ4F_VERSION); C.LZ4F_isError(code) != 0 {
		return nil, errors.New(C.GoString(C.LZ4F_getErrorName(code)))
	}
	defer C.LZ4F_freeCompressionContext(cctx)
	out := make([]byte, CompressBound(len(raw))+64)
	var src *C.char
	if len(raw) > 0 {
		src = (*C.char)(unsafe.Pointer(&raw[0]))
	}
	n := C.pgstow_frame(cctx, (*C.char)(unsafe.Pointer(&out[0])), C.size_t(len(out)), src, C.size_t(len(raw)))
	if C.LZ4F_isError(n) != 0 {
		return nil, errors.New(C.GoString(C.LZ4F_getErrorName(n)))
	}
	return out[:int(n)], nil
}

// writeFrame writes the frame appendFrame would write for the first size
// bytes of src, reading and compressing one 4 MB block at a time.
func (e *cEncoder) writeFrame(w io.Writer, src io.Reader, size int64) error {
	if e.in == nil {
		e.in = make([]byte, lz4BlockSize)
		e.out = make([]byte, 0, 4+lz4BlockSize)
	}
	if _, err := w.Write(appendFrameHeader(e.out[:0], size)); err != nil {
		return err
	}
	var sum xxh32State
	sum.reset()
	var done int64
	for done < size {
		k, err := io.ReadFull(src, e.in[:min(int64(len(e.in)), size-done)])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("lz4 compress: the source ended after %d of %d bytes: %w", done+int64(k), size, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("lz4 compress: read: %w", err)
		}
		done += int64(k)
		sum.write(e.in[:k])
		if _, err := w.Write(e.appendBlock(e.out[:0], e.in[:k])); err != nil {
			return err
		}
	}
	tail := binary.LittleEndian.AppendUint32(e.out[:0], 0)
	_, err := w.Write(binary.LittleEndian.AppendUint32(tail, sum.sum()))
	return err
}
