package manifest

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestCRC32CCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	lengths := []int{0, 1, 2, 3, 4, 7, 8, 31, 32, 33, 255, 256, 1000, 4096, 8191, 8192, 8193, 65536, 100003}
	buf := make([]byte, 2*100003)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for _, la := range lengths {
		for _, lb := range lengths {
			a, b := buf[:la], buf[la:la+lb]
			want := crc32.Checksum(buf[:la+lb], Castagnoli)
			got := CRC32CCombine(crc32.Checksum(a, Castagnoli), crc32.Checksum(b, Castagnoli), int64(lb))
			if got != want {
				t.Fatalf("CRC32CCombine of %d and %d bytes = %08x, want %08x", la, lb, got, want)
			}
		}
	}
	// Long B: the shift is computed by squaring, not byte by byte.
	zeros := make([]byte, 5<<20)
	want := crc32.Update(crc32.Checksum(buf[:10], Castagnoli), Castagnoli, zeros)
	if got := CRC32CCombine(crc32.Checksum(buf[:10], Castagnoli), crc32.Checksum(zeros, Castagnoli), int64(len(zeros))); got != want {
		t.Fatalf("CRC32CCombine past 5 MiB of zeros = %08x, want %08x", got, want)
	}
}

func TestCRC32CFolder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, blockLen := range []int{1, 3, 1024, 8192} {
		folder := NewCRC32CFolder(blockLen)
		for _, size := range []int{0, 1, blockLen - 1, blockLen, blockLen + 1, 2 * blockLen, 7*blockLen + 5, 40 * blockLen} {
			if size < 0 {
				continue
			}
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			var blocks []uint32
			for off := 0; off < size; off += blockLen {
				blocks = append(blocks, crc32.Checksum(data[off:min(off+blockLen, size)], Castagnoli))
			}
			got, err := folder.Fold(blocks, int64(size))
			if err != nil {
				t.Fatalf("block %d, size %d: %v", blockLen, size, err)
			}
			if want := crc32.Checksum(data, Castagnoli); got != want {
				t.Fatalf("block %d, size %d: Fold = %08x, want %08x", blockLen, size, got, want)
			}
		}
	}
	folder := NewCRC32CFolder(8192)
	for _, tc := range []struct {
		blocks int
		size   int64
	}{{1, 0}, {0, 1}, {1, 8193}, {3, 8192 * 2}, {1, -1}} {
		if _, err := folder.Fold(make([]uint32, tc.blocks), tc.size); err == nil {
			t.Errorf("Fold of %d CRCs for %d bytes succeeded", tc.blocks, tc.size)
		}
	}
}

// BenchmarkCRC32CFolder folds a 1 GiB segment's CRCs (131072 blocks).
func BenchmarkCRC32CFolder(b *testing.B) {
	folder := NewCRC32CFolder(8192)
	blocks := make([]uint32, 131072)
	for i := range blocks {
		blocks[i] = uint32(i) * 0x9e3779b9
	}
	for b.Loop() {
		if _, err := folder.Fold(blocks, 1<<30); err != nil {
			b.Fatal(err)
		}
	}
}
