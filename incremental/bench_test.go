package incremental

import "testing"

// BenchmarkBlockCRCs measures the per-block CRC32C a backup of
// PostgreSQL 17+ adds for relation files, fed in the splitter's 256 KiB
// reads.
func BenchmarkBlockCRCs(b *testing.B) {
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	out := make([]uint32, 0, len(data)/8192)
	for b.Loop() {
		h := blockCRCs{blockSize: 8192, out: out[:0]}
		for off := 0; off < len(data); off += 256 << 10 {
			h.write(data[off : off+256<<10])
		}
		h.finish()
	}
}
