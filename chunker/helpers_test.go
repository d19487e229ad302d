package chunker

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pgstow/pgstow/manifest"
)

// member describes one tar member for makeTar.
type member struct {
	name string
	typ  byte // tar.TypeReg (default), tar.TypeDir, tar.TypeSymlink, tar.TypeXGlobalHeader…
	body []byte
	link string
	mode int64
	pax  map[string]string // PAX records, for TypeXGlobalHeader
}

func file(name string, body []byte) member { return member{name: name, body: body} }
func dir(name string) member               { return member{name: name, typ: tar.TypeDir} }
func symlink(name, target string) member {
	return member{name: name, typ: tar.TypeSymlink, link: target}
}

// testMTime is the mtime of every member makeTar writes.
var testMTime = time.Unix(1700000000, 0)

// makeTar writes members with archive/tar in the given format
// (tar.FormatUnknown lets archive/tar choose, as it does by default).
func makeTar(tb testing.TB, format tar.Format, members ...member) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := &tar.Header{
			Name:     m.name,
			Typeflag: m.typ,
			Size:     int64(len(m.body)),
			Mode:     m.mode,
			ModTime:  testMTime,
			Linkname: m.link,
			Format:   format,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o600
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			h = &tar.Header{Name: m.name, Typeflag: m.typ, PAXRecords: m.pax, Format: format}
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatalf("write header %q: %v", m.name, err)
		}
		if _, err := tw.Write(m.body); err != nil {
			tb.Fatalf("write %q: %v", m.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// content returns n deterministic pseudo-random bytes.
func content(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// splitResult is everything a Splitter produced from one archive.
type splitResult struct {
	chunks []Chunk // Data copied out of the pooled buffers
	files  []manifest.File
	size   int64
}

// split runs a Splitter over data to the end. Buffers come from a small
// pool, and each chunk's bytes are copied out and its buffer scribbled
// over and recycled at once, so a Splitter that kept using a buffer after
// handing it over would produce wrong results.
func split(tb testing.TB, data []byte, target int, wrap func(io.Reader) io.Reader) (splitResult, error) {
	tb.Helper()
	var r io.Reader = bytes.NewReader(data)
	if wrap != nil {
		r = wrap(r)
	}
	var pool [][]byte
	get := func() []byte {
		if n := len(pool); n > 0 {
			b := pool[n-1]
			pool = pool[:n-1]
			return b[:0]
		}
		return make([]byte, 0, target)
	}
	s := NewSplitter(r, target, 3, get)
	var res splitResult
	for {
		c, err := s.Next()
		if errors.Is(err, io.EOF) {
			res.files, res.size = s.Files(), s.Size()
			return res, nil
		}
		if err != nil {
			return res, err
		}
		res.chunks = append(res.chunks, Chunk{Seq: c.Seq, Offset: c.Offset, Data: bytes.Clone(c.Data)})
		b := c.Data[:cap(c.Data)]
		for i := range b {
			b[i] = 0xA5
		}
		pool = append(pool, b[:0])
	}
}

// checkChunks checks the invariants every successful split must meet:
// chunks in sequence, contiguous, non-empty, at most target bytes, and
// together exactly the input.
func checkChunks(tb testing.TB, data []byte, target int, res splitResult) {
	tb.Helper()
	var off int64
	var all []byte
	for i, c := range res.chunks {
		if c.Seq != i || c.Offset != off {
			tb.Fatalf("chunk %d: Seq %d Offset %d, want Seq %d Offset %d", i, c.Seq, c.Offset, i, off)
		}
		if len(c.Data) == 0 || len(c.Data) > target {
			tb.Fatalf("chunk %d: %d bytes, want 1..%d", i, len(c.Data), target)
		}
		off += int64(len(c.Data))
		all = append(all, c.Data...)
	}
	if !bytes.Equal(all, data) {
		tb.Fatalf("concatenated chunks (%d bytes) differ from the input (%d bytes)", len(all), len(data))
	}
	if res.size != int64(len(data)) {
		tb.Fatalf("Size() = %d, want %d", res.size, len(data))
	}
}

func chunkSizes(cs []Chunk) []int {
	out := make([]int, len(cs))
	for i, c := range cs {
		out[i] = len(c.Data)
	}
	return out
}

func chunkIDs(cs []Chunk) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = ID(c.Data)
	}
	return out
}

// countingReader counts the bytes read through it, which tells where
// archive/tar is in the archive.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// reference reads data with archive/tar, an implementation independent of
// ours, and returns the sizes of the records (as the cutting rule defines
// them), the size of the trailer, and the File each member should yield.
func reference(tb testing.TB, data []byte, archive int) (records []int64, trailer int64, files []manifest.File) {
	tb.Helper()
	cr := &countingReader{r: bytes.NewReader(data)}
	tr := tar.NewReader(cr)
	var end int64 // end of the previous record
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatalf("archive/tar: %v", err)
		}
		contentStart := cr.n // archive/tar has read exactly the headers
		f := manifest.File{
			Mode:    uint32(h.Mode & 0o7777),
			MTime:   h.ModTime.Unix(),
			Archive: archive,
			Offset:  contentStart - blockSize,
		}
		var size int64
		switch h.Typeflag {
		case tar.TypeReg:
			size = h.Size
			body, err := io.ReadAll(tr)
			if err != nil {
				tb.Fatal(err)
			}
			f.Type, f.Path, f.Size = manifest.TypeFile, strings.TrimPrefix(h.Name, "./"), h.Size
			f.CRC32C = crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli))
			f.Offset = contentStart
		case tar.TypeDir:
			f.Type, f.Path = manifest.TypeDir, strings.TrimPrefix(strings.TrimSuffix(h.Name, "/"), "./")
		case tar.TypeSymlink:
			f.Type, f.Path, f.LinkTarget = manifest.TypeSymlink, strings.TrimPrefix(h.Name, "./"), h.Linkname
		default:
			tb.Fatalf("reference: unexpected type %q", h.Typeflag)
		}
		files = append(files, f)
		recEnd := contentStart + int64(padded(int(size)))
		records = append(records, recEnd-end)
		end = recEnd
	}
	return records, int64(len(data)) - end, files
}

// modelCuts applies the cutting rule to record sizes, in the simplest way
// it can be written, and returns the chunk sizes it implies.
func modelCuts(records []int64, trailer int64, target int) []int {
	t := int64(target)
	var out []int
	var cur int64
	closeChunk := func() {
		if cur > 0 {
			out = append(out, int(cur))
			cur = 0
		}
	}
	place := func(r int64) {
		switch {
		case r > t:
			closeChunk()
			for ; r > t; r -= t {
				out = append(out, int(t))
			}
			cur = r
			closeChunk()
		case cur+r > t:
			closeChunk()
			cur = r
		default:
			cur += r
		}
	}
	for _, r := range records {
		place(r)
	}
	place(trailer)
	closeChunk()
	return out
}

// setField overwrites a header field and fixes the block's checksum.
func setField(blk []byte, off int, val []byte) {
	copy(blk[off:], val)
	fixChecksum(blk)
}

func fixChecksum(blk []byte) {
	sum, _ := headerChecksums(blk)
	copy(blk[offChksum:offChksum+8], fmt.Sprintf("%06o\x00 ", sum))
}

// rawHeader builds a POSIX ustar header block by hand.
func rawHeader(name string, typeflag byte, size int64) []byte {
	blk := make([]byte, blockSize)
	copy(blk[offName:], name)
	copy(blk[offMode:], "0000644\x00")
	copy(blk[offSize:], fmt.Sprintf("%011o\x00", size))
	copy(blk[offMTime:], fmt.Sprintf("%011o\x00", testMTime.Unix()))
	blk[offTypeflag] = typeflag
	copy(blk[offMagic:], "ustar\x0000")
	fixChecksum(blk)
	return blk
}

// paxRecord formats one PAX record, whose length counts itself.
func paxRecord(key, val string) string {
	n := len(key) + len(val) + 3
	for {
		s := fmt.Sprintf("%d %s=%s\n", n, key, val)
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// pad returns b padded with zeros to whole blocks.
func pad(b []byte) []byte {
	return append(b, make([]byte, padded(len(b))-len(b))...)
}

var endMarker = make([]byte, 2*blockSize)
