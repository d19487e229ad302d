//go:build lz4cgo && cgo

package chunker

/*
#cgo LDFLAGS: -llz4
#include <stdlib.h>
#include <string.h>
#include <lz4.h>
#include <lz4frame.h>

// pgstow_frame writes one whole frame of src into dst with the stable
// streaming API on a reused context: begin (header), one update (every
// block, compressed straight from src thanks to autoFlush), end (end mark
// and content checksum). It returns the frame's size, or an LZ4F error
// code (test with LZ4F_isError).
static size_t pgstow_frame(LZ4F_cctx *cctx, char *dst, size_t cap, const char *src, size_t n) {
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
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"
)

// cEncoder writes frames with the system's liblz4 (LZ4F, the reference
// implementation), about twice as fast as the Go encoder here. Its
// context is allocated once and freed when the encoder is collected.
type cEncoder struct {
	cctx *C.LZ4F_cctx
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
