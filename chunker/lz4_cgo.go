//go:build lz4cgo && cgo

package chunker

/*
#cgo LDFLAGS: -llz4
#include <stdlib.h>
#include <string.h>
#include <lz4.h>
#include <lz4frame.h>

// pgstow_prefs fills pgstow's frame preferences: 4 MB independent
// blocks, content checksum, no block checksums, the content size, the
// default (fast) level, autoFlush.
static void pgstow_prefs(LZ4F_preferences_t *p, unsigned long long n) {
	memset(p, 0, sizeof *p);
	p->frameInfo.blockSizeID = LZ4F_max4MB;
	p->frameInfo.blockMode = LZ4F_blockIndependent;
	p->frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	p->frameInfo.blockChecksumFlag = LZ4F_noBlockChecksum;
	p->frameInfo.contentSize = n;
	p->compressionLevel = 0;
	p->autoFlush = 1;
}

// pgstow_frame writes one whole frame of src into dst with the stable
// streaming API on a reused context: begin (header), one update (every
// block, compressed straight from src thanks to autoFlush), end (end mark
// and content checksum). It returns the frame's size, or an LZ4F error
// code (test with LZ4F_isError).
static size_t pgstow_frame(LZ4F_cctx *cctx, char *dst, size_t cap, const char *src, size_t n) {
	LZ4F_preferences_t p;
	pgstow_prefs(&p, n);
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

static size_t pgstow_begin(LZ4F_cctx *cctx, char *dst, size_t cap, unsigned long long n) {
	LZ4F_preferences_t p;
	pgstow_prefs(&p, n);
	return LZ4F_compressBegin(cctx, dst, cap, &p);
}

static size_t pgstow_block_bound(void) {
	LZ4F_preferences_t p;
	pgstow_prefs(&p, 0);
	return LZ4F_compressBound(4 << 20, &p);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"unsafe"
)

// cEncoder writes frames with the system's liblz4 (LZ4F, the reference
// implementation), about twice as fast as the Go encoder here. Its
// context is allocated once and freed when the encoder is collected.
type cEncoder struct {
	cctx *C.LZ4F_cctx
	// in and out are writeFrame's block buffers, made on first use.
	in, out []byte
}

func newFrameEncoder() (frameEncoder, error) {
	var p *C.LZ4F_cctx
	if code := C.LZ4F_createCompressionContext(&p, C.LZ4F_VERSION); C.LZ4F_isError(code) != 0 {
		return nil, errors.New(C.GoString(C.LZ4F_getErrorName(code)))
	}
	e := &cEncoder{cctx: p}
	runtime.AddCleanup(e, func(p *C.LZ4F_cctx) { C.LZ4F_freeCompressionContext(p) }, p)
	return e, nil
}

func encoderName() string {
	v := int(C.LZ4_versionNumber())
	return fmt.Sprintf("liblz4 %d.%d.%d", v/10000, v/100%100, v%100)
}

func (e *cEncoder) appendFrame(dst, raw []byte) ([]byte, error) {
	start := len(dst)
	spare := dst[start:cap(dst)]
	var src *C.char
	if len(raw) > 0 {
		src = (*C.char)(unsafe.Pointer(&raw[0]))
	}
	n := C.pgstow_frame(e.cctx, (*C.char)(unsafe.Pointer(&spare[0])), C.size_t(len(spare)), src, C.size_t(len(raw)))
	runtime.KeepAlive(e)
	if C.LZ4F_isError(n) != 0 {
		return dst, errors.New(C.GoString(C.LZ4F_getErrorName(n)))
	}
	return dst[:start+int(n)], nil
}

// writeFrame compresses src a 4 MB block at a time with the same context
// and preferences as appendFrame: with independent blocks and autoFlush,
// liblz4 compresses each whole block the same way in both, so the frames
// are identical.
func (e *cEncoder) writeFrame(w io.Writer, src io.Reader, size int64) error {
	if e.in == nil {
		e.in = make([]byte, lz4BlockSize)
		e.out = make([]byte, max(int(C.pgstow_block_bound()), 64))
	}
	defer runtime.KeepAlive(e)
	out := unsafe.Pointer(&e.out[0])
	emit := func(n C.size_t) error {
		if C.LZ4F_isError(n) != 0 {
			return fmt.Errorf("lz4 compress: %s", C.GoString(C.LZ4F_getErrorName(n)))
		}
		if _, err := w.Write(e.out[:int(n)]); err != nil {
			return err
		}
		return nil
	}
	if err := emit(C.pgstow_begin(e.cctx, (*C.char)(out), C.size_t(len(e.out)), C.ulonglong(size))); err != nil {
		return err
	}
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
		n := C.LZ4F_compressUpdate(e.cctx, out, C.size_t(len(e.out)), unsafe.Pointer(&e.in[0]), C.size_t(k), nil)
		if err := emit(n); err != nil {
			return err
		}
	}
	return emit(C.LZ4F_compressEnd(e.cctx, out, C.size_t(len(e.out)), nil))
}
