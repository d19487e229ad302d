package chunker

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
)

const benchChunkSize = 16 << 20 // the uploader's default

// benchArchive is a 64 MiB tar shaped like a small data directory: three
// 16 MiB relation segments and 2,000 8 KiB files (catalog relations, free
// space maps), all of table-like data that lz4 compresses about 2.4×.
func benchArchive(tb testing.TB) []byte {
	benchOnce.Do(func() {
		var members []member
		for i := range 2000 {
			members = append(members, file(fmt.Sprintf("base/16384/%d_fsm", 20000+i), tableData(uint64(i), 8<<10)))
		}
		for i := range 3 {
			members = append(members, file(fmt.Sprintf("base/16384/%d", 16400+i), tableData(uint64(100+i), 16<<20)))
		}
		benchData = makeTar(tb, tar.FormatUnknown, members...)
	})
	return benchData
}

var (
	benchOnce sync.Once
	benchData []byte
)

// BenchmarkSplitter measures cutting alone: the copy from the reader into
// the chunk buffers, header parsing and the per-file CRC32C, with buffers
// recycled as the uploader does.
func BenchmarkSplitter(b *testing.B) {
	data := benchArchive(b)
	free := make([][]byte, 0, 2)
	get := func() []byte {
		if n := len(free); n > 0 {
			buf := free[n-1]
			free = free[:n-1]
			return buf[:0]
		}
		return make([]byte, 0, benchChunkSize)
	}
	r := bytes.NewReader(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(data)
		s := NewSplitter(r, benchChunkSize, 0, get)
		for {
			c, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			free = append(free, c.Data)
		}
	}
}

// BenchmarkCompress measures sealing: LZ4 compression with its content
// checksum and the CRC32C of the frame, one 16 MiB chunk after another on
// one reused Compressor and output buffer, as one worker does.
func BenchmarkCompress(b *testing.B) {
	data := benchArchive(b)
	dst := bytes.NewBuffer(make([]byte, 0, CompressBound(benchChunkSize)))
	comp := NewCompressor()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var stored int
	for b.Loop() {
		stored = 0
		for off := 0; off < len(data); off += benchChunkSize {
			dst.Reset()
			if _, err := comp.Compress(dst, data[off:min(off+benchChunkSize, len(data))]); err != nil {
				b.Fatal(err)
			}
			stored += dst.Len()
		}
	}
	b.ReportMetric(float64(len(data))/float64(stored), "ratio")
}

// BenchmarkDecompress measures the restore side: decoding and checking
// both the frame's content checksum and the chunk ID.
func BenchmarkDecompress(b *testing.B) {
	data := benchArchive(b)
	comp := NewCompressor()
	var frames [][]byte
	var ids []string
	for off := 0; off < len(data); off += benchChunkSize {
		raw := data[off:min(off+benchChunkSize, len(data))]
		var buf bytes.Buffer
		if _, err := comp.Compress(&buf, raw); err != nil {
			b.Fatal(err)
		}
		frames = append(frames, buf.Bytes())
		ids = append(ids, ID(raw))
	}
	dec := NewDecompressor()
	dst := bytes.NewBuffer(make([]byte, 0, benchChunkSize+lz4BlockSize))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		for i, f := range frames {
			dst.Reset()
			if err := dec.Decompress(dst, f, ids[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkID measures the content hash, for comparison with the rest of
// the CPU budget.
func BenchmarkID(b *testing.B) {
	data := benchArchive(b)[:benchChunkSize]
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		ID(data)
	}
}

// BenchmarkSplitterObserved is BenchmarkSplitter with an observer of
// every file, as an incremental-capable backup of PostgreSQL 17 runs it.
func BenchmarkSplitterObserved(b *testing.B) {
	data := benchArchive(b)
	free := make([][]byte, 0, 2)
	get := func() []byte {
		if n := len(free); n > 0 {
			buf := free[n-1]
			free = free[:n-1]
			return buf[:0]
		}
		return make([]byte, 0, benchChunkSize)
	}
	o := &nopObserver{}
	r := bytes.NewReader(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(data)
		s := NewSplitter(r, benchChunkSize, 0, get)
		s.Observe(func(string, int64, int64, int64) MemberObserver { return o })
		for {
			c, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			free = append(free, c.Data)
		}
	}
}
