package pgdata

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// incFile builds an INCREMENTAL.<name> file as PostgreSQL writes it, with
// the count given apart from the block numbers so tests can make them
// disagree, and blocks of blockSize filled with their number.
func incFile(magic, count, trunc uint32, blocks []uint32, blockSize int, images bool) []byte {
	b := binary.LittleEndian.AppendUint32(nil, magic)
	b = binary.LittleEndian.AppendUint32(b, count)
	b = binary.LittleEndian.AppendUint32(b, trunc)
	for _, blk := range blocks {
		b = binary.LittleEndian.AppendUint32(b, blk)
	}
	if len(blocks) > 0 && len(b)%blockSize != 0 {
		b = append(b, make([]byte, blockSize-len(b)%blockSize)...)
	}
	if images {
		for _, blk := range blocks {
			img := make([]byte, blockSize)
			for i := range img {
				img[i] = byte(blk)
			}
			b = append(b, img...)
		}
	}
	return b
}

func TestParseIncrementalHeader(t *testing.T) {
	const bs, seg = 8192, 131072
	manyBlocks := make([]uint32, 3000) // 12 KiB of numbers: two header blocks
	for i := range manyBlocks {
		manyBlocks[i] = uint32(2 * i)
	}
	tests := []struct {
		name      string
		data      []byte
		blockSize int
		relseg    int
		want      IncrementalHeader
		wantSize  int64 // the file's size for CheckSize; 0: len(data)
		wantErr   string
		wantShort bool
	}{
		{
			name: "no blocks, truncated to 0", data: incFile(IncrementalMagic, 0, 0, nil, bs, true),
			want: IncrementalHeader{Blocks: []uint32{}, HeaderLen: 12, ContentLen: 12},
		},
		{
			name: "no blocks, 10 kept", data: incFile(IncrementalMagic, 0, 10, nil, bs, true),
			want: IncrementalHeader{Blocks: []uint32{}, TruncationBlocks: 10, HeaderLen: 12, ContentLen: 12},
		},
		{
			name: "three blocks", data: incFile(IncrementalMagic, 3, 5, []uint32{0, 7, 131071}, bs, true),
			want: IncrementalHeader{Blocks: []uint32{0, 7, 131071}, TruncationBlocks: 5, HeaderLen: bs, ContentLen: 4 * bs},
		},
		{
			name: "header only, as an observer sees it", data: incFile(IncrementalMagic, 3, 5, []uint32{0, 7, 9}, bs, false)[:24],
			want:     IncrementalHeader{Blocks: []uint32{0, 7, 9}, TruncationBlocks: 5, HeaderLen: bs, ContentLen: 4 * bs},
			wantSize: 4 * bs,
		},
		{
			name: "header over two blocks", data: incFile(IncrementalMagic, 3000, 0, manyBlocks, bs, true),
			want: IncrementalHeader{Blocks: manyBlocks, HeaderLen: 2 * bs, ContentLen: (2 + 3000) * bs},
		},
		{
			name: "small blocks, small segments", data: incFile(IncrementalMagic, 2, 4, []uint32{1, 3}, 1024, true), blockSize: 1024, relseg: 4,
			want: IncrementalHeader{Blocks: []uint32{1, 3}, TruncationBlocks: 4, HeaderLen: 1024, ContentLen: 3 * 1024},
		},
		{name: "bad magic", data: incFile(0x0d1faed3, 0, 0, nil, bs, true), wantErr: "bad magic number 0x0d1faed3, want 0xd3ae1f0d"},
		{name: "empty", data: nil, wantErr: "0 bytes, want at least 12", wantShort: true},
		{name: "cut in the fixed part", data: incFile(IncrementalMagic, 0, 0, nil, bs, true)[:11], wantShort: true, wantErr: "short"},
		{name: "cut in the block numbers", data: incFile(IncrementalMagic, 3, 0, []uint32{1, 2, 3}, bs, false)[:20], wantShort: true, wantErr: "20 bytes, want 24"},
		{name: "count over the segment", data: incFile(IncrementalMagic, seg+1, 0, nil, bs, false), wantErr: "131073 blocks, more than the segment's 131072"},
		{name: "huge count", data: incFile(IncrementalMagic, 0xffffffff, 0, nil, bs, false), wantErr: "4294967295 blocks"},
		{name: "truncation over the segment", data: incFile(IncrementalMagic, 0, seg+1, nil, bs, false), wantErr: "truncation length 131073 blocks"},
		{name: "block beyond the segment", data: incFile(IncrementalMagic, 2, 0, []uint32{1, seg}, bs, true), wantErr: "block number 131072 (entry 1) beyond the segment"},
		{name: "unsorted", data: incFile(IncrementalMagic, 3, 0, []uint32{1, 5, 4}, bs, true), wantErr: "block number 4 (entry 2) not after 5"},
		{name: "duplicate", data: incFile(IncrementalMagic, 2, 0, []uint32{5, 5}, bs, true), wantErr: "block number 5 (entry 1) not after 5"},
		{
			name: "padding not zeros", wantErr: "byte 20 of the header's padding is 0x01",
			data: func() []byte { b := incFile(IncrementalMagic, 2, 0, []uint32{1, 2}, bs, true); b[20] = 1; return b }(),
		},
		{
			name: "one block short", data: incFile(IncrementalMagic, 2, 0, []uint32{1, 2}, bs, true), wantSize: 2 * bs,
			want:    IncrementalHeader{Blocks: []uint32{1, 2}, HeaderLen: bs, ContentLen: 3 * bs},
			wantErr: "incremental file of 16384 bytes, but its header describes 24576 (2 blocks after a 8192-byte header)",
		},
		{
			name: "bytes after the blocks", data: append(incFile(IncrementalMagic, 0, 3, nil, bs, true), 0),
			want:    IncrementalHeader{Blocks: []uint32{}, TruncationBlocks: 3, HeaderLen: 12, ContentLen: 12},
			wantErr: "incremental file of 13 bytes",
		},
		{name: "block size not a power of two", data: incFile(IncrementalMagic, 0, 0, nil, bs, true), blockSize: 3000, wantErr: "invalid block size 3000"},
		{name: "no segment size", data: incFile(IncrementalMagic, 0, 0, nil, bs, true), relseg: -1, wantErr: "more than the segment's -1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			blockSize, relseg := bs, seg
			if tc.blockSize != 0 {
				blockSize = tc.blockSize
			}
			if tc.relseg != 0 {
				relseg = tc.relseg
			}
			h, err := ParseIncrementalHeader(tc.data, blockSize, relseg)
			if err == nil {
				size := tc.wantSize
				if size == 0 {
					size = int64(len(tc.data))
				}
				if diff := cmp.Diff(tc.want, h); diff != "" {
					t.Errorf("header (-want +got):\n%s", diff)
				}
				err = h.CheckSize(size)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if got := errors.Is(err, ErrIncrementalShort); got != tc.wantShort {
				t.Fatalf("errors.Is(%v, ErrIncrementalShort) = %v, want %v", err, got, tc.wantShort)
			}
		})
	}
}

func TestIncrementalHeaderLen(t *testing.T) {
	n, err := IncrementalHeaderLen(incFile(IncrementalMagic, 3, 0, nil, 8192, false), 131072)
	if err != nil || n != 24 {
		t.Fatalf("IncrementalHeaderLen = %d, %v; want 24", n, err)
	}
}

func TestReconstructedBlocks(t *testing.T) {
	for _, tc := range []struct {
		h    IncrementalHeader
		want uint32
	}{
		{IncrementalHeader{}, 0},
		{IncrementalHeader{TruncationBlocks: 10}, 10},
		{IncrementalHeader{Blocks: []uint32{3}, TruncationBlocks: 10}, 10},
		{IncrementalHeader{Blocks: []uint32{3, 12}, TruncationBlocks: 10}, 13},
		{IncrementalHeader{Blocks: []uint32{0}}, 1},
	} {
		if got := tc.h.ReconstructedBlocks(); got != tc.want {
			t.Errorf("%+v: ReconstructedBlocks = %d, want %d", tc.h, got, tc.want)
		}
	}
}

func TestIsRelationFile(t *testing.T) {
	for _, tc := range []struct {
		tablespace bool
		path       string
		want       bool
	}{
		{false, "base/5/16384", true},
		{false, "base/5/16384_vm.3", true},
		{false, "global/1262", true},
		{false, "global/1262_fsm", true},
		{false, "global/1213.1", true},
		{true, "PG_17_202406281/16390/16391_init", true},
		{false, "global/pg_control", false},
		{false, "global/pg_filenode.map", false},
		{false, "global/", false},
		{false, "global/1/2", false},
		{true, "global/1262", false}, // a data directory path in a tablespace
		{false, "base/5/PG_VERSION", false},
		{false, "base/5/t3_16384", false},
		{false, "pg_xact/0000", false},
		{false, "base/5/INCREMENTAL.16384", false},
	} {
		if got := IsRelationFile(tc.tablespace, tc.path); got != tc.want {
			t.Errorf("IsRelationFile(%v, %q) = %v, want %v", tc.tablespace, tc.path, got, tc.want)
		}
	}
}

func TestIncrementalName(t *testing.T) {
	for _, tc := range []struct {
		path, want string
		ok         bool
	}{
		{"base/5/INCREMENTAL.16384", "base/5/16384", true},
		{"base/5/INCREMENTAL.16384_fsm.2", "base/5/16384_fsm.2", true},
		{"global/INCREMENTAL.1262", "global/1262", true},
		{"PG_17_202406281/16390/INCREMENTAL.16391", "PG_17_202406281/16390/16391", true},
		{"base/5/16384", "", false},
		{"base/5/INCREMENTAL.", "", false},
		{"base/5/INCREMENTAL.PG_VERSION", "", false},
		{"base/5/INCREMENTAL.INCREMENTAL.16384", "", false},
		{"base/5/incremental.16384", "", false},
		{"INCREMENTAL.16384", "", false},
		{"pg_stat/INCREMENTAL.16384", "", false},
		{"base/INCREMENTAL.5/16384", "", false},
		{"global/pg_control", "", false},
	} {
		got, ok := IncrementalName(tc.path)
		if got != tc.want || ok != tc.ok {
			t.Errorf("IncrementalName(%q) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzIncrementalHeader: any bytes parse without panicking, and an
// accepted header is one a reconstruction can trust: ascending block
// numbers within the segment, counts within it, an aligned header when
// there are blocks, and sizes that add up.
func FuzzIncrementalHeader(f *testing.F) {
	f.Add(incFile(IncrementalMagic, 0, 0, nil, 8192, true), uint8(13), uint8(17))
	f.Add(incFile(IncrementalMagic, 3, 5, []uint32{0, 7, 9}, 1024, false)[:24], uint8(10), uint8(4))
	f.Add(incFile(IncrementalMagic, 2, 0, []uint32{5, 5}, 8192, false)[:20], uint8(13), uint8(17))
	f.Add(incFile(IncrementalMagic, 1, 0, []uint32{1}, 1024, true), uint8(10), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, bsShift, segShift uint8) {
		blockSize := 1 << (10 + bsShift%6) // 1 KiB to 32 KiB
		relseg := 1 << (segShift % 18)
		h, err := ParseIncrementalHeader(data, blockSize, relseg)
		if err != nil {
			if h.Blocks != nil || h.HeaderLen != 0 {
				t.Fatalf("error %v with a header %+v", err, h)
			}
			return
		}
		n := len(h.Blocks)
		switch {
		case n > relseg || h.TruncationBlocks > uint32(relseg):
			t.Fatalf("counts beyond the segment of %d: %+v", relseg, h)
		case n > 0 && h.HeaderLen%int64(blockSize) != 0:
			t.Fatalf("header of %d bytes not aligned to %d", h.HeaderLen, blockSize)
		case h.HeaderLen < 12+4*int64(n) || h.ContentLen != h.HeaderLen+int64(n)*int64(blockSize):
			t.Fatalf("sizes do not add up: %+v", h)
		case h.ReconstructedBlocks() > uint32(relseg):
			t.Fatalf("reconstructs %d blocks, beyond the segment of %d", h.ReconstructedBlocks(), relseg)
		}
		for i, b := range h.Blocks {
			if b >= uint32(relseg) || (i > 0 && b <= h.Blocks[i-1]) {
				t.Fatalf("block numbers %v", h.Blocks)
			}
		}
		if h.CheckSize(h.ContentLen) != nil || h.CheckSize(h.ContentLen+1) == nil {
			t.Fatal("CheckSize disagrees with ContentLen")
		}
	})
}
