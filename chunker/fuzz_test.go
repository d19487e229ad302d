package chunker

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pierrec/lz4/v4"
)

// FuzzSplitter feeds arbitrary bytes to the Splitter: it must never panic,
// and whenever it accepts an input its chunks must be in bounds and
// reproduce the input exactly, and its files must point inside it.
func FuzzSplitter(f *testing.F) {
	f.Add(makeTar(f, tar.FormatUnknown), uint16(1))
	f.Add(makeTar(f, tar.FormatUnknown, file("PG_VERSION", []byte("15\n")), dir("base"), symlink("pg_tblspc/1", "/ts")), uint16(1025))
	f.Add(makeTar(f, tar.FormatPAX, file(strings.Repeat("p", 150), content(1, 700)), file("b", nil)), uint16(201))
	f.Add(makeTar(f, tar.FormatGNU, file(strings.Repeat("g", 150), content(1, 700)), symlink("l", strings.Repeat("t", 120))), uint16(2001))
	f.Add(makeTar(f, tar.FormatUSTAR, file(strings.Repeat("d", 90)+"/"+strings.Repeat("f", 90), content(2, 3000))), uint16(4001))
	f.Add(makeTar(f, tar.FormatPAX, member{typ: tar.TypeXGlobalHeader, name: "g", pax: map[string]string{"comment": "x"}}, file("a", []byte("x"))), uint16(15))
	f.Fuzz(func(t *testing.T, data []byte, target uint16) {
		size := blockSize + int(target>>1)%4096
		if target&1 != 0 {
			// Make every block's header checksum valid, so mutations
			// reach the parsing behind the checksum instead of being
			// rejected by it.
			data = bytes.Clone(data)
			for off := 0; off+blockSize <= len(data); off += blockSize {
				if blk := data[off : off+blockSize]; !isZeroBlock(blk) {
					fixChecksum(blk)
				}
			}
		}
		res, err := split(t, data, size, nil)
		if err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatalf("io.EOF leaked as an error: %v", err)
			}
			return
		}
		checkChunks(t, data, size, res)
		for _, f := range res.files {
			if f.Offset < 0 || f.Offset+f.Size > int64(len(data)) {
				t.Fatalf("%q: Offset %d Size %d outside the %d-byte input", f.Path, f.Offset, f.Size, len(data))
			}
		}
		// The same input read a byte at a time gives the same result.
		res2, err := split(t, data, size, iotest.OneByteReader)
		if err != nil {
			t.Fatalf("byte-at-a-time read failed where a whole read succeeded: %v", err)
		}
		if len(res2.chunks) != len(res.chunks) || len(res2.files) != len(res.files) {
			t.Fatalf("byte-at-a-time read gave %d chunks and %d files, not %d and %d", len(res2.chunks), len(res2.files), len(res.chunks), len(res.files))
		}
		for i := range res.chunks {
			if !bytes.Equal(res.chunks[i].Data, res2.chunks[i].Data) {
				t.Fatalf("chunk %d differs when read a byte at a time", i)
			}
		}
	})
}

// FuzzDecompress feeds arbitrary frames to the Decompressor: it must never
// panic nor grow its output past what the input can expand to, and
// whatever it accepts must be what pierrec/lz4's own Reader reads from the
// same bytes when that one accepts them too.
func FuzzDecompress(f *testing.F) {
	comp := NewCompressor()
	for _, raw := range [][]byte{nil, []byte("x"), tableData(1, 5000), content(3, 70000)} {
		var b bytes.Buffer
		if _, err := comp.Compress(&b, raw); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		var out bytes.Buffer
		err := NewDecompressor().Decompress(&out, src, "")
		if err != nil {
			return
		}
		if out.Len() > 255*len(src)+(64<<10) {
			t.Fatalf("%d bytes out of a %d-byte frame", out.Len(), len(src))
		}
		ref, rerr := io.ReadAll(lz4.NewReader(bytes.NewReader(src)))
		if rerr == nil && !bytes.Equal(ref, out.Bytes()) {
			t.Fatalf("decoded %d bytes, pierrec/lz4 reads %d different ones", out.Len(), len(ref))
		}
	})
}

func TestXXH32(t *testing.T) {
	long := content(9, 1000)
	tests := []struct {
		in   []byte
		want uint32
	}{
		{nil, 0x02CC5D05},
		{[]byte("abc"), 0x32D153FF},
	}
	for _, tc := range tests {
		if got := xxh32Sum(tc.in); got != tc.want {
			t.Errorf("xxh32(%q) = %08x, want %08x", tc.in, got, tc.want)
		}
	}
	// Written in pieces of every size up to 40, the sum is the same.
	whole := xxh32Sum(long)
	for step := 1; step <= 40; step++ {
		var x xxh32State
		x.reset()
		for p := long; len(p) > 0; {
			n := min(step, len(p))
			x.write(p[:n])
			p = p[n:]
		}
		if got := x.sum(); got != whole {
			t.Fatalf("in pieces of %d: %08x, want %08x", step, got, whole)
		}
	}
}
