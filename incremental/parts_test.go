package incremental

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/manifest"
)

// TestCRC32CCombine checks the combine against a CRC over the whole,
// for lengths around the byte and block boundaries.
func TestCRC32CCombine(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 20000)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, cut := range [][2]int{{0, 0}, {0, 5}, {5, 0}, {1, 1}, {100, 8192}, {8192, 8192}, {3, 19000}, {19000, 1000}} {
		a, b := data[:cut[0]], data[cut[0]:cut[0]+cut[1]]
		want := crc32.Checksum(append(bytes.Clone(a), b...), crcTable)
		if got := crc32cCombine(crc32.Checksum(a, crcTable), crc32.Checksum(b, crcTable), int64(len(b))); got != want {
			t.Errorf("combine(%d, %d): %08x, want %08x", len(a), len(b), got, want)
		}
	}
	for _, bs := range []int{1024, 8192, 32768} {
		c := newBlockCombiner(bs)
		var crc uint32
		n := len(data) / bs
		for i := range n {
			crc = c.add(crc, crc32.Checksum(data[i*bs:(i+1)*bs], crcTable))
		}
		if want := crc32.Checksum(data[:n*bs], crcTable); crc != want {
			t.Errorf("block size %d: combined %08x, want %08x", bs, crc, want)
		}
	}
}

// header encodes an INCREMENTAL header with the given fields.
func header(magic, n, trunc uint32, blocks ...uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, magic)
	b = binary.LittleEndian.AppendUint32(b, n)
	b = binary.LittleEndian.AppendUint32(b, trunc)
	for _, x := range blocks {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func TestParseIncrHeader(t *testing.T) {
	const bs, relseg = 8192, 131072
	for _, tc := range []struct {
		name string
		b    []byte
		size int64
		want string // error text; "" for success
		hl   int64
	}{
		{"unchanged", header(incrMagic, 0, 7), 12, "", 12},
		{"two blocks", header(incrMagic, 2, 9, 1, 8), bs + 2*bs, "", bs},
		{"bad magic", header(0xd3ae1f0e, 0, 7), 12, "magic", 0},
		{"short", []byte{1, 2, 3}, 3, "at least 12", 0},
		{"too many blocks", header(incrMagic, relseg+1, 0), 12, "more than a segment", 0},
		{"truncation over a segment", header(incrMagic, 0, relseg+1), 12, "truncation length", 0},
		{"unsorted", header(incrMagic, 2, 9, 8, 1), 3 * bs, "ascending", 0},
		{"duplicate", header(incrMagic, 2, 9, 8, 8), 3 * bs, "ascending", 0},
		{"out of range", header(incrMagic, 1, 9, relseg), 2 * bs, "beyond a segment", 0},
		{"size mismatch", header(incrMagic, 1, 9, 3), 2*bs + 1, "bytes, but", 0},
		{"numbers cut short", header(incrMagic, 2, 9, 3), 3 * bs, "block numbers need", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := parseIncrHeader(tc.b, tc.size, bs, relseg)
			if tc.want == "" {
				if err != nil || h.HeaderLen != tc.hl {
					t.Fatalf("got %+v, %v; want header length %d", h, err, tc.hl)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// FuzzParseIncrHeader checks that the parser never panics and that what
// it accepts is consistent.
func FuzzParseIncrHeader(f *testing.F) {
	f.Add(header(incrMagic, 0, 7), int64(12))
	f.Add(header(incrMagic, 2, 9, 1, 8), int64(3*1024))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		h, err := parseIncrHeader(b, size, 1024, 64)
		if err != nil {
			return
		}
		if h.HeaderLen+int64(len(h.Blocks))*1024 != size || h.TruncationBlocks > 64 {
			t.Fatalf("accepted an inconsistent header: %+v for %d bytes", h, size)
		}
		for i, x := range h.Blocks {
			if x >= 64 || (i > 0 && x <= h.Blocks[i-1]) {
				t.Fatalf("accepted block numbers %v", h.Blocks)
			}
		}
	})
}

func TestIsVMFork(t *testing.T) {
	for p, want := range map[string]bool{
		"base/5/16384_vm": true, "base/5/16384_vm.1": true, "global/1262_vm": true, "PG_17_1/5/16384_vm": true,
		"base/5/16384": false, "base/5/16384_fsm": false, "base/5/16384.1": false, "base/5/16384_init": false,
	} {
		if got := isVMFork(p); got != want {
			t.Errorf("isVMFork(%q) = %v", p, got)
		}
	}
}

func TestStripIncrementalLines(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"A: 1\nINCREMENTAL FROM LSN: 0/2\nINCREMENTAL FROM TLI: 1\nB: 2\n", "A: 1\nB: 2\n"},
		{"A: 1\nINCREMENTAL FROM TLI: 1", "A: 1\n"},
		{"A: 1\nLABEL: INCREMENTAL FROM LSN: x\n", "A: 1\nLABEL: INCREMENTAL FROM LSN: x\n"},
		{"", ""},
	} {
		if got := string(StripIncrementalLines([]byte(tc.in))); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// seal appends a Manifest-Checksum line as PostgreSQL does.
func seal(body string) []byte {
	sum := sha256.Sum256([]byte(body))
	return []byte(body + `"Manifest-Checksum": "` + hex.EncodeToString(sum[:]) + "\"}\n")
}

// pgCRC formats a CRC32C as a backup_manifest does.
func pgCRC(c uint32) string { return hex.EncodeToString(binary.LittleEndian.AppendUint32(nil, c)) }

const pgBody = `{ "PostgreSQL-Backup-Manifest-Version": 2,
"System-Identifier": 7441234567890123456,
"Files": [
{ "Path": "backup_label", "Size": 227, "Last-Modified": "2026-11-23 20:46:51 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "839206e3" },
{ "Path": "base/5/INCREMENTAL.16385", "Size": 12, "Last-Modified": "2026-11-23 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "01020304" },
{ "Path": "pg_tblspc/16384/PG_17_202406281/5/INCREMENTAL.16390", "Size": 12, "Last-Modified": "2026-11-23 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "01020304" },
{ "Path": "global/pg_control", "Size": 8192, "Last-Modified": "2026-11-23 20:46:51 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "0a0b0c0d" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/3000120" }
],
`

// TestRewritePGManifest rewrites entries and checks the result with the
// manifest package's parser, which verifies the Manifest-Checksum.
func TestRewritePGManifest(t *testing.T) {
	edits := map[string]Edit{
		"backup_label":             {Path: "backup_label", Size: 190, CRC32C: 0xdeadbeef},
		"base/5/INCREMENTAL.16385": {Path: "base/5/16385", Size: 3 * 8192, CRC32C: 0x01234567},
		"pg_tblspc/16384/PG_17_202406281/5/INCREMENTAL.16390": {Path: "pg_tblspc/16384/PG_17_202406281/5/16390", Size: 8192, CRC32C: 7},
	}
	var out bytes.Buffer
	if err := RewritePGManifest(&out, bytes.NewReader(seal(pgBody)), edits); err != nil {
		t.Fatal(err)
	}
	pg, err := manifest.ParsePGManifest(out.Bytes())
	if err != nil {
		t.Fatalf("rewritten manifest refused: %v\n%s", err, out.Bytes())
	}
	got := map[string]manifest.PGFile{}
	for _, f := range pg.Files {
		got[f.Path] = f
	}
	for _, e := range edits {
		f, ok := got[e.Path]
		if !ok || f.Size != e.Size || f.Checksum != pgCRC(e.CRC32C) || f.ChecksumAlgorithm != "CRC32C" {
			t.Errorf("%s: entry %+v, want size %d checksum %s", e.Path, f, e.Size, pgCRC(e.CRC32C))
		}
	}
	if len(pg.Files) != 4 || got["global/pg_control"].Checksum != "0a0b0c0d" || !strings.Contains(out.String(), `"Last-Modified": "2026-11-23 20:40:00 GMT"`) || len(pg.WALRanges) != 1 {
		t.Errorf("entries not edited changed:\n%s", out.Bytes())
	}
	for name, edits := range map[string]map[string]Edit{
		"missing entry": {"base/5/nothing": {Path: "x"}},
	} {
		if err := RewritePGManifest(&bytes.Buffer{}, bytes.NewReader(seal(pgBody)), edits); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("%s: error %v", name, err)
		}
	}
}
