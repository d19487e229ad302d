package manifest

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

func TestValidSegmentSize(t *testing.T) {
	tests := []struct {
		n    uint64
		want bool
	}{
		{0, false},
		{1, false},
		{512 * 1024, false},
		{mib, true},
		{2 * mib, true},
		{16 * mib, true},
		{3 * mib, false},
		{16*mib + 1, false},
		{gib, true},
		{2 * gib, false},
		{1 << 63, false},
	}
	for _, tt := range tests {
		if got := ValidSegmentSize(tt.n); got != tt.want {
			t.Errorf("ValidSegmentSize(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
}

func TestSegmentArithmetic(t *testing.T) {
	tests := []struct {
		name      string
		lsn       LSN
		segSize   uint64
		wantSeg   uint64
		wantPrev  uint64
		wantName  string // SegmentName(1, wantSeg)
		wantPName string // SegmentName(1, wantPrev)
	}{
		{"mid segment 3", 0x3000028, 16 * mib, 3, 3, "000000010000000000000003", "000000010000000000000003"},
		{"boundary 0/4000000", 0x4000000, 16 * mib, 4, 3, "000000010000000000000004", "000000010000000000000003"},
		{"1/0 on 16MiB", 1 << 32, 16 * mib, 256, 255, "000000010000000100000000", "0000000100000000000000FF"},
		{"1/0 on 1GiB", 1 << 32, gib, 4, 3, "000000010000000100000000", "000000010000000000000003"},
		{"2/C0000001 on 1GiB", 0x2C0000001, gib, 11, 11, "000000010000000200000003", "000000010000000200000003"},
		{"1/0 on 1MiB", 1 << 32, mib, 4096, 4095, "000000010000000100000000", "000000010000000000000FFF"},
		{"0/1 on 16MiB", 1, 16 * mib, 0, 0, "000000010000000000000000", "000000010000000000000000"},
		{"max LSN", ^LSN(0), 16 * mib, 1<<40 - 1, 1<<40 - 1, "00000001FFFFFFFF000000FF", "00000001FFFFFFFF000000FF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seg, prev := SegmentNo(tt.lsn, tt.segSize), PrevSegmentNo(tt.lsn, tt.segSize)
			if seg != tt.wantSeg || prev != tt.wantPrev {
				t.Errorf("SegmentNo, PrevSegmentNo(%v) = %d, %d, want %d, %d", tt.lsn, seg, prev, tt.wantSeg, tt.wantPrev)
			}
			if got := SegmentName(1, seg, tt.segSize); got != tt.wantName {
				t.Errorf("SegmentName(1, %d) = %q, want %q", seg, got, tt.wantName)
			}
			if got := SegmentName(1, prev, tt.segSize); got != tt.wantPName {
				t.Errorf("SegmentName(1, %d) = %q, want %q", prev, got, tt.wantPName)
			}
			tli, segno, err := ParseSegmentName(tt.wantName, tt.segSize)
			if err != nil || tli != 1 || segno != seg {
				t.Errorf("ParseSegmentName(%q) = %d, %d, %v, want 1, %d, nil", tt.wantName, tli, segno, err, seg)
			}
		})
	}
}

func TestSegmentsPerID(t *testing.T) {
	tests := []struct {
		segSize uint64
		want    uint64
	}{
		{mib, 4096},
		{16 * mib, 256},
		{64 * mib, 64},
		{gib, 4},
	}
	for _, tt := range tests {
		if got := segmentsPerID(tt.segSize); got != tt.want {
			t.Errorf("segmentsPerID(%d) = %d, want %d", tt.segSize, got, tt.want)
		}
	}
}

func TestParseSegmentName(t *testing.T) {
	tests := []struct {
		name      string
		segSize   uint64
		wantTLI   uint32
		wantSegno uint64
		wantErr   string
	}{
		{name: "000000010000000000000003", segSize: 16 * mib, wantTLI: 1, wantSegno: 3},
		{name: "0000000A00000002000000FF", segSize: 16 * mib, wantTLI: 10, wantSegno: 2*256 + 255},
		{name: "000000020000000100000003", segSize: gib, wantTLI: 2, wantSegno: 7},
		{name: "000000010000000000000FFF", segSize: mib, wantTLI: 1, wantSegno: 4095},
		{name: "FFFFFFFFFFFFFFFF00000FFF", segSize: mib, wantTLI: 0xFFFFFFFF, wantSegno: 0xFFFFFFFF*4096 + 4095},
		{name: "000000010000000000000100", segSize: 16 * mib, wantErr: "low part"},
		{name: "000000010000000000000004", segSize: gib, wantErr: "low part"},
		{name: "000000010000000000001000", segSize: mib, wantErr: "low part"},
		{name: "0000000100000000000000ff", segSize: 16 * mib, wantErr: "upper-case"},
		{name: "00000001000000000000003", segSize: 16 * mib, wantErr: "24 hex"},
		{name: "0000000100000000000000033", segSize: 16 * mib, wantErr: "24 hex"},
		{name: "000000000000000000000003", segSize: 16 * mib, wantErr: "timeline 0"},
		{name: "00000001.history", segSize: 16 * mib, wantErr: "24 hex"},
		{name: "00000001000000000000000G", segSize: 16 * mib, wantErr: "invalid character"},
		{name: "000000010000000000000003", segSize: 3 * mib, wantErr: "segment size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tli, segno, err := ParseSegmentName(tt.name, tt.segSize)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSegmentName(%q) error = %v, want one containing %q", tt.name, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSegmentName(%q): %v", tt.name, err)
			}
			if tli != tt.wantTLI || segno != tt.wantSegno {
				t.Errorf("ParseSegmentName(%q) = %d, %d, want %d, %d", tt.name, tli, segno, tt.wantTLI, tt.wantSegno)
			}
			if back := SegmentName(tli, segno, tt.segSize); back != tt.name {
				t.Errorf("SegmentName(%d, %d) = %q, want %q", tli, segno, back, tt.name)
			}
		})
	}
}

func TestRequiredSegments(t *testing.T) {
	tests := []struct {
		name       string
		tli        uint32
		start, end LSN
		segSize    uint64
		want       []string
		wantErr    string
	}{
		{
			name: "one segment", tli: 1, start: 0x3000028, end: 0x3000100, segSize: 16 * mib,
			want: []string{"000000010000000000000003"},
		},
		{
			name: "end on a boundary", tli: 1, start: 0x2000028, end: 0x4000000, segSize: 16 * mib,
			want: []string{"000000010000000000000002", "000000010000000000000003"},
		},
		{
			name: "end just past a boundary", tli: 1, start: 0x2000028, end: 0x4000001, segSize: 16 * mib,
			want: []string{"000000010000000000000002", "000000010000000000000003", "000000010000000000000004"},
		},
		{
			name: "across a log id", tli: 3, start: 0xFF000028, end: 0x100000128, segSize: 16 * mib,
			want: []string{"0000000300000000000000FF", "000000030000000100000000"},
		},
		{
			name: "1GiB segments", tli: 1, start: 0xC0000028, end: 0x140000000, segSize: gib,
			want: []string{"000000010000000000000003", "000000010000000100000000"},
		},
		{
			name: "start equals end", tli: 1, start: 0x3000028, end: 0x3000028, segSize: 16 * mib,
			want: []string{"000000010000000000000003"},
		},
		{
			name: "start equals end on a boundary", tli: 1, start: 0x4000000, end: 0x4000000, segSize: 16 * mib,
			want: []string{"000000010000000000000004"},
		},
		{name: "end before start", tli: 1, start: 0x4000000, end: 0x3000000, segSize: 16 * mib, wantErr: "before start"},
		{name: "end zero", tli: 1, start: 0, end: 0, segSize: 16 * mib, wantErr: "0/0"},
		{name: "bad size", tli: 1, start: 1, end: 2, segSize: 1000, wantErr: "segment size"},
		{name: "timeline 0", tli: 0, start: 1, end: 2, segSize: 16 * mib, wantErr: "timeline 0"},
		{name: "absurd span", tli: 1, start: 0, end: ^LSN(0), segSize: mib, wantErr: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RequiredSegments(tt.tli, tt.start, tt.end, tt.segSize)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("RequiredSegments error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("RequiredSegments: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("RequiredSegments (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHistoryFileName(t *testing.T) {
	tests := []struct {
		tli  uint32
		want string
	}{
		{1, "00000001.history"},
		{2, "00000002.history"},
		{0x1A, "0000001A.history"},
	}
	for _, tt := range tests {
		got := HistoryFileName(tt.tli)
		if got != tt.want {
			t.Errorf("HistoryFileName(%d) = %q, want %q", tt.tli, got, tt.want)
		}
		if back, err := parseHistoryFileName(got); err != nil || back != tt.tli {
			t.Errorf("parseHistoryFileName(%q) = %d, %v, want %d", got, back, err, tt.tli)
		}
	}
	for _, bad := range []string{"00000000.history", "0000000a.history", "00000001.historyx", "0000001.history", "000000010000000000000003"} {
		if _, err := parseHistoryFileName(bad); err == nil {
			t.Errorf("parseHistoryFileName(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseWALHeader(t *testing.T) {
	long := func(info uint16, sysid uint64, seg uint32) []byte {
		b := make([]byte, 8192)
		binary.LittleEndian.PutUint16(b[0:], 0xD110)
		binary.LittleEndian.PutUint16(b[2:], info)
		binary.LittleEndian.PutUint64(b[24:], sysid)
		binary.LittleEndian.PutUint32(b[32:], seg)
		return b
	}
	tests := []struct {
		name string
		data []byte
		want WALHeader
		ok   bool
	}{
		{"segment start", long(0x0002, 7711555592564339516, 16<<20), WALHeader{7711555592564339516, 16 << 20}, true},
		{"other info bits too", long(0x0006, 42, 64<<20), WALHeader{42, 64 << 20}, true},
		{"short page header", long(0x0000, 42, 16<<20), WALHeader{}, false},
		{"no system id", long(0x0002, 0, 16<<20), WALHeader{}, false},
		{"bad segment size", long(0x0002, 42, 3<<20), WALHeader{}, false},
		{"history file", []byte("1\t0/3000000\tno recovery target specified\n"), WALHeader{}, false},
		{"too short", make([]byte, 39), WALHeader{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseWALHeader(tt.data)
		if ok != tt.ok || got != tt.want {
			t.Errorf("%s: ParseWALHeader = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestPartialSegmentName(t *testing.T) {
	const seg = 16 << 20
	name := PartialSegmentName("00000001000000000000003F", 0x27018)
	if name != "00000001000000000000003F.00027018.partial" {
		t.Fatalf("PartialSegmentName = %q", name)
	}
	segName, tli, segno, size, err := ParsePartialSegmentName(name, seg)
	if err != nil || segName != "00000001000000000000003F" || tli != 1 || segno != 0x3F || size != 0x27018 {
		t.Fatalf("ParsePartialSegmentName(%q) = %q, %d, %d, %d, %v", name, segName, tli, segno, size, err)
	}
	for _, bad := range []string{
		"00000001000000000000003F.partial",          // wal-receive's, size unknown
		"00000001000000000000003F.00000000.partial", // empty
		"00000001000000000000003F.01000000.partial", // a whole 16 MiB segment
		"00000001000000000000003F.0002701a.partial", // lower-case hex
		"00000001000000000000003F.00027018.partia",
		"00000001000000000000003F-00027018.partial",
		"00000000000000000000003F.00027018.partial", // timeline 0
		"000000010000000000000003.00000028.backup",
	} {
		if _, _, _, _, err := ParsePartialSegmentName(bad, seg); err == nil {
			t.Errorf("ParsePartialSegmentName(%q) succeeded, want an error", bad)
		}
	}
}

func FuzzParsePartialSegmentName(f *testing.F) {
	f.Add("00000001000000000000003F.00027018.partial", uint64(16<<20))
	f.Add("000000010000000000000003.00000028.backup", uint64(1<<30))
	f.Fuzz(func(t *testing.T, name string, segSize uint64) {
		segName, _, _, size, err := ParsePartialSegmentName(name, segSize)
		if err != nil {
			return
		}
		if size == 0 || size >= segSize {
			t.Fatalf("%q: size %d out of range for %d", name, size, segSize)
		}
		if back := PartialSegmentName(segName, size); back != name {
			t.Fatalf("round trip: %q became %q", name, back)
		}
	})
}

func TestValidWALName(t *testing.T) {
	tests := []struct {
		name            string
		valid, archived bool
	}{
		{"000000010000000000000003", true, true},
		{"000000010000000000000003.partial", true, true},
		{"000000010000000000000003.00000028.partial", true, false},
		{"00000002.history", true, true},
		{"000000010000000000000002.00000028.backup", true, true},
		{"00000001000000000000000g", false, false},
		{"00000001000000000000000a", false, false},
		{"../000000010000000000000003", false, false},
		{"0000000100000000000000031", false, false},
		{"000000010000000000000003.partial.lz4", false, false},
		{"000000010000000000000003.0000002.partial", false, false},
		{"000000010000000000000003.00000028.history", false, false},
		{"0000000g.history", false, false},
		{"00000002.History", false, false},
		{"00000002/history", false, false},
		{"foo_bar-baz", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		if got := ValidWALName(tt.name); got != tt.valid {
			t.Errorf("ValidWALName(%q) = %v, want %v", tt.name, got, tt.valid)
		}
		if got := ArchivedWALName(tt.name); got != tt.archived {
			t.Errorf("ArchivedWALName(%q) = %v, want %v", tt.name, got, tt.archived)
		}
	}
}
