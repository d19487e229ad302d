package incremental

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/manifest"
)

func TestRelationParts(t *testing.T) {
	for _, tc := range []struct {
		p, rel, fork string
		seg          uint32
		ok           bool
	}{
		{"base/5/16384_vm", "base/5/16384", "_vm", 0, true},
		{"base/5/16384_vm.1", "base/5/16384", "_vm", 1, true},
		{"global/1262_vm", "global/1262", "_vm", 0, true},
		{"PG_17_202406281/5/16384.3", "PG_17_202406281/5/16384", "", 3, true},
		{"base/5/16384", "base/5/16384", "", 0, true},
		{"base/5/16384_fsm", "base/5/16384", "_fsm", 0, true},
		{"base/5/16384_init", "base/5/16384", "_init", 0, true},
		{"base/5/PG_VERSION", "", "", 0, false},
		{"base/5/INCREMENTAL.16384", "", "", 0, false},
		{"pg_xact/0000", "", "", 0, false},
	} {
		rel, fork, seg, ok := relationParts(tc.p)
		if rel != tc.rel || fork != tc.fork || seg != tc.seg || ok != tc.ok {
			t.Errorf("relationParts(%q) = %q, %q, %d, %v; want %q, %q, %d, %v", tc.p, rel, fork, seg, ok, tc.rel, tc.fork, tc.seg, tc.ok)
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
	edits := map[string]manifest.PGFileEdit{
		"backup_label":             {Replace: true, Path: "backup_label", Size: 190, CRC32C: 0xdeadbeef},
		"base/5/INCREMENTAL.16385": {Replace: true, Path: "base/5/16385", Size: 3 * 8192, CRC32C: 0x01234567},
		"pg_tblspc/16384/PG_17_202406281/5/INCREMENTAL.16390": {Replace: true, Path: "pg_tblspc/16384/PG_17_202406281/5/16390", Size: 8192, CRC32C: 7},
	}
	var out bytes.Buffer
	if err := (&Result{Edits: edits}).RewritePGManifest(bytes.NewReader(seal(pgBody)), &out); err != nil {
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
	for name, edits := range map[string]map[string]manifest.PGFileEdit{
		"missing entry": {"base/5/nothing": {Replace: true, Path: "x"}},
	} {
		if err := (&Result{Edits: edits}).RewritePGManifest(bytes.NewReader(seal(pgBody)), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("%s: error %v", name, err)
		}
	}
}
