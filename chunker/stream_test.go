package chunker

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"os/exec"
	"testing"
	"testing/iotest"

	"github.com/pgstow/pgstow/manifest"
)

// TestCompressStreamMatchesCompress: a streamed frame is byte for byte the
// frame Compress makes, whatever the block boundaries and however the
// source splits its reads, and both decoders open it.
func TestCompressStreamMatchesCompress(t *testing.T) {
	const block = lz4BlockSize
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"one byte", []byte{7}},
		{"zeros, a block", make([]byte, block)},
		{"zeros, a block and a byte", make([]byte, block+1)},
		{"table data, 2.5 blocks", tableData(1, block*5/2)},
		{"incompressible", content(3, block+12345)},
	}
	comp := NewCompressor() // reused across cases, as callers do
	dec := NewDecompressor()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want bytes.Buffer
			wantCRC, err := NewCompressor().Compress(&want, tc.data)
			if err != nil {
				t.Fatal(err)
			}
			for _, src := range []struct {
				name string
				r    io.Reader
			}{
				{"whole", bytes.NewReader(tc.data)},
				{"byte at a time", iotest.OneByteReader(bytes.NewReader(tc.data))},
				{"half reads", iotest.HalfReader(bytes.NewReader(tc.data))},
			} {
				if src.name == "byte at a time" && len(tc.data) > 1<<20 {
					continue // slow, and "half reads" splits them too
				}
				var got bytes.Buffer
				n, crc, err := comp.CompressStream(&got, src.r, int64(len(tc.data)))
				if err != nil {
					t.Fatalf("%s: %v", src.name, err)
				}
				if !bytes.Equal(got.Bytes(), want.Bytes()) || n != int64(got.Len()) || crc != wantCRC {
					t.Fatalf("%s: frame of %d bytes (reported %d, crc %08x) differs from Compress's %d bytes (crc %08x)",
						src.name, got.Len(), n, crc, want.Len(), wantCRC)
				}
			}
			var raw bytes.Buffer
			n, err := dec.DecompressStream(&raw, bytes.NewReader(want.Bytes()), int64(len(tc.data)))
			if err != nil || n != int64(len(tc.data)) || !bytes.Equal(raw.Bytes(), tc.data) {
				t.Fatalf("DecompressStream: %d bytes, %v; equal %v", n, err, bytes.Equal(raw.Bytes(), tc.data))
			}
		})
	}
}

// TestCompressStreamShortSource: a source that ends early fails, and the
// Compressor is fine for the next frame.
func TestCompressStreamShortSource(t *testing.T) {
	comp := NewCompressor()
	_, _, err := comp.CompressStream(io.Discard, bytes.NewReader(make([]byte, 100)), 101)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short source: %v", err)
	}
	data := tableData(2, 10000)
	var got, want bytes.Buffer
	if _, _, err := comp.CompressStream(&got, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	NewCompressor().Compress(&want, data)
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatal("the frame after a failed one differs")
	}
	if _, _, err := comp.CompressStream(io.Discard, bytes.NewReader(nil), -1); err == nil {
		t.Fatal("a negative size was accepted")
	}
}

// errAfter fails every write after n bytes.
type errAfter struct {
	n   int
	err error
}

func (w *errAfter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

func TestDecompressStreamErrors(t *testing.T) {
	data := tableData(4, lz4BlockSize+5000)
	var frame bytes.Buffer
	if _, err := NewCompressor().Compress(&frame, data); err != nil {
		t.Fatal(err)
	}
	f := frame.Bytes()
	flipped := bytes.Clone(f)
	flipped[len(f)/2] ^= 0x40
	noChecksum := bytes.Clone(f)
	noChecksum[4] &^= 0x04 // the header checksum then fails too: a bad frame either way
	errDisk := errors.New("disk full")
	errNet := errors.New("connection reset")
	tests := []struct {
		name      string
		src       io.Reader
		dst       io.Writer
		maxRaw    int64
		frameErr  bool  // wraps ErrFrame
		wantErr   error // or is exactly this error
		wantBytes int64 // when it succeeds
	}{
		{name: "ok", src: bytes.NewReader(f), maxRaw: -1, wantBytes: int64(len(data))},
		{name: "ok at the limit", src: bytes.NewReader(f), maxRaw: int64(len(data)), wantBytes: int64(len(data))},
		{name: "declared size over the limit", src: bytes.NewReader(f), maxRaw: int64(len(data)) - 1, frameErr: true},
		{name: "empty", src: bytes.NewReader(nil), maxRaw: -1, frameErr: true},
		{name: "not lz4", src: bytes.NewReader([]byte("hello, this is not a frame")), maxRaw: -1, frameErr: true},
		{name: "truncated", src: bytes.NewReader(f[:len(f)-3]), maxRaw: -1, frameErr: true},
		{name: "truncated in a block", src: bytes.NewReader(f[:len(f)/2]), maxRaw: -1, frameErr: true},
		{name: "bit flipped", src: bytes.NewReader(flipped), maxRaw: -1, frameErr: true},
		{name: "no content checksum", src: bytes.NewReader(noChecksum), maxRaw: -1, frameErr: true},
		{name: "trailing garbage", src: bytes.NewReader(append(bytes.Clone(f), "garbage"...)), maxRaw: -1, frameErr: true},
		{name: "source fails", src: io.MultiReader(bytes.NewReader(f[:1000]), iotest.ErrReader(errNet)), maxRaw: -1, wantErr: errNet},
		{name: "destination fails", src: bytes.NewReader(f), dst: &errAfter{n: 100, err: errDisk}, maxRaw: -1, wantErr: errDisk},
	}
	dec := NewDecompressor()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := tc.dst
			var out bytes.Buffer
			if dst == nil {
				dst = &out
			}
			n, err := dec.DecompressStream(dst, tc.src, tc.maxRaw)
			switch {
			case tc.frameErr:
				if !errors.Is(err, ErrFrame) {
					t.Fatalf("got %v, want an ErrFrame", err)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) || errors.Is(err, ErrFrame) {
					t.Fatalf("got %v, want %v and no ErrFrame", err, tc.wantErr)
				}
			default:
				if err != nil || n != tc.wantBytes || !bytes.Equal(out.Bytes(), data) {
					t.Fatalf("got %d bytes, %v", n, err)
				}
			}
		})
	}
	// The Decompressor is fine after all of that.
	var out bytes.Buffer
	if _, err := dec.DecompressStream(&out, bytes.NewReader(f), -1); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("after the errors: %v", err)
	}
}

// TestDecompressStreamUndeclaredSize: a frame without a content size (as
// `lz4 -c` writes) is bounded by what is written.
func TestDecompressStreamUndeclaredSize(t *testing.T) {
	lz4, err := exec.LookPath("lz4")
	if err != nil {
		t.Fatalf("the lz4 CLI is needed (apt-get install lz4, or scripts/install-deps.sh): %v", err)
	}
	data := tableData(5, 3<<20)
	cmd := exec.CommandContext(t.Context(), lz4, "-1", "-c", "--content-size") // checksum on by default
	cmd.Stdin = bytes.NewReader(data)
	withSize, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.CommandContext(t.Context(), lz4, "-1", "-c", "--no-content-size")
	cmd.Stdin = bytes.NewReader(data)
	noSize, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	dec := NewDecompressor()
	for _, frame := range [][]byte{withSize, noSize} {
		var out bytes.Buffer
		if n, err := dec.DecompressStream(&out, bytes.NewReader(frame), int64(len(data))); err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("lz4 CLI frame: %d bytes, %v", n, err)
		}
	}
	if _, err := dec.DecompressStream(io.Discard, bytes.NewReader(noSize), int64(len(data))-1); !errors.Is(err, ErrFrame) {
		t.Fatalf("undeclared size over the limit: %v", err)
	}
}

// TestCompressStreamLZ4CLI: the reference tool reads a streamed frame and
// agrees on its CRC32C-covered bytes.
func TestCompressStreamLZ4CLI(t *testing.T) {
	lz4, err := exec.LookPath("lz4")
	if err != nil {
		t.Fatalf("the lz4 CLI is needed (apt-get install lz4, or scripts/install-deps.sh): %v", err)
	}
	data := append(tableData(6, 5<<20), make([]byte, 3<<20)...) // WAL-like: data, then zeros
	var frame bytes.Buffer
	_, crc, err := NewCompressor().CompressStream(&frame, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if crc != crc32.Checksum(frame.Bytes(), manifest.Castagnoli) {
		t.Fatal("CRC32C does not cover the frame")
	}
	cmd := exec.CommandContext(t.Context(), lz4, "-dc")
	cmd.Stdin = &frame
	out, err := cmd.Output()
	if err != nil || !bytes.Equal(out, data) {
		t.Fatalf("lz4 -dc: %v, %d bytes, equal %v", err, len(out), bytes.Equal(out, data))
	}
}

// FuzzDecompressStream: any input either decodes to what Decompress
// gives (within the limit) or fails with ErrFrame; it never panics, never
// writes past the limit, and never reports a source or destination error
// it did not get.
func FuzzDecompressStream(f *testing.F) {
	for _, data := range [][]byte{nil, []byte("x"), tableData(7, 70000), make([]byte, 100000)} {
		var frame bytes.Buffer
		NewCompressor().Compress(&frame, data)
		f.Add(frame.Bytes(), uint32(len(data)))
		f.Add(frame.Bytes()[:frame.Len()/2], uint32(len(data)))
	}
	dec := NewDecompressor()
	f.Fuzz(func(t *testing.T, frame []byte, limit uint32) {
		maxRaw := int64(limit % (1 << 20))
		var out bytes.Buffer
		n, err := dec.DecompressStream(&out, bytes.NewReader(frame), maxRaw)
		if n != int64(out.Len()) || n > maxRaw {
			t.Fatalf("reported %d bytes, wrote %d, limit %d", n, out.Len(), maxRaw)
		}
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error without ErrFrame from an in-memory source: %v", err)
			}
			return
		}
		var want bytes.Buffer
		if err := NewDecompressor().Decompress(&want, frame, ""); err != nil {
			t.Fatalf("DecompressStream accepted what Decompress refuses (%v)", err)
		}
		if !bytes.Equal(out.Bytes(), want.Bytes()) {
			t.Fatal("DecompressStream and Decompress disagree")
		}
	})
}
