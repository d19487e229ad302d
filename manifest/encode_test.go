package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func chunkID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// testBackup returns a valid manifest with one tablespace, two archives and
// every kind of file.
func testBackup() *Backup {
	return &Backup{
		FormatVersion:  FormatVersion,
		ID:             "20261123T204651Z",
		Label:          "nightly <&> \"quoted\"",
		ToolVersion:    "0.1.0",
		PGVersion:      170002,
		SystemID:       "7441234567890123456",
		StartTimeline:  1,
		EndTimeline:    1,
		StartLSN:       0x3000028,
		EndLSN:         0x4000000,
		WALSegmentSize: 16 * mib,
		WAL: []WALSegment{
			{Name: "000000010000000000000003", SHA256: chunkID("wal3"), StoredSize: 123456},
		},
		Tablespaces: []Tablespace{{OID: 16384, Location: "/srv/ts1"}},
		Archives: []Archive{
			{
				Name: "base.tar", RawSize: 16384, StoredSize: 3000,
				Chunks: []ChunkRef{
					// a was uploaded by this backup, b deduplicated
					// without a known CRC (or from an older manifest).
					{ID: chunkID("a"), RawSize: 8192, StoredSize: 2000, Codec: "lz4", StoredCRC32C: crcOf(0x8badf00d)},
					{ID: chunkID("b"), RawSize: 8192, StoredSize: 1000, Codec: "lz4"},
				},
			},
			{
				Name: "16384.tar", TablespaceOID: 16384, RawSize: 3072, StoredSize: 200,
				Chunks: []ChunkRef{{ID: chunkID("c"), RawSize: 3072, StoredSize: 200, Codec: "lz4", StoredCRC32C: crcOf(0)}},
			},
		},
		Files: []File{
			{Path: "backup_label", Type: TypeFile, Mode: 0o600, MTime: 1795466811, Size: 227, CRC32C: 0xdeadbeef, Archive: 0, Offset: 512},
			{Path: "global/", Type: TypeDir, Mode: 0o700, MTime: 1795466811, Archive: 0, Offset: 1024},
			{Path: "global/pg_control", Type: TypeFile, Mode: 0o600, MTime: 1795466811, Size: 8192, CRC32C: 1, SHA256: chunkID("pg_control"), Archive: 0, Offset: 1536},
			{Path: "pg_tblspc/16384", Type: TypeSymlink, Mode: 0o777, LinkTarget: "/srv/ts1", Archive: 0, Offset: 9728},
			{Path: "PG_17_202406281/5/16385", Type: TypeFile, Mode: 0o600, Size: 2048, Archive: 1, Offset: 512},
		},
		PGManifestSHA256: chunkID("backup_manifest"),
		Totals: Totals{
			RawBytes: 16384 + 3072, StoredBytes: 3200, NewBytes: 200,
			Chunks: 3, NewChunks: 1, Files: 5, WALBytes: 123456,
		},
		Timings: Timings{
			Started:  time.Date(2026, 11, 23, 20, 46, 51, 0, time.UTC),
			Finished: time.Date(2026, 11, 23, 20, 50, 2, 123456789, time.UTC),
		},
	}
}

// testIncrementalBackup is testBackup as an incremental backup writes it:
// format 2, block CRCs, and base.tar made of slices, one chunk twice.
func testIncrementalBackup() *Backup {
	b := testBackup()
	b.FormatVersion = FormatVersionIncremental
	b.BlockSize = 8192
	a := &b.Archives[0]
	a.Chunks = []ChunkRef{
		{ID: chunkID("a"), RawSize: 8192, StoredSize: 2000, Codec: "lz4", StoredCRC32C: crcOf(0x8badf00d), Length: 4096},
		{ID: chunkID("b"), RawSize: 8192, StoredSize: 1000, Codec: "lz4"},
		{ID: chunkID("a"), RawSize: 8192, StoredSize: 2000, Codec: "lz4", StoredCRC32C: crcOf(0x8badf00d), Offset: 4096, Length: 4096},
	}
	a.StoredSize = 5000
	b.Files[2].BlockCRC32C = BlockCRCs{0xe3069283}
	b.Files[4].BlockCRC32C = BlockCRCs{0x01020304}
	b.Incremental = &Incremental{
		Parent: "20261122T204651Z", ParentStartLSN: 0x2000028,
		FullStarted: time.Date(2026, 11, 20, 20, 46, 51, 0, time.UTC),
		SentBytes:   12345, IncrementalFiles: 1, ChangedBlocks: 3,
	}
	return b
}

// crcOf returns a pointer to a stored-bytes CRC, for literals.
func crcOf(v uint32) *uint32 { return &v }

// reseal applies edit to the part of an encoded manifest the checksum
// covers and writes a fresh checksum, so tests can build documents that
// pass the checksum but differ in content.
func reseal(t *testing.T, data []byte, edit func(string) string) []byte {
	t.Helper()
	i := bytes.LastIndex(data, []byte("\n \"manifest_sha256\""))
	if i < 0 {
		t.Fatalf("no checksum line in %s", data)
	}
	return seal(edit(string(data[:i+1])))
}

func seal(covered string) []byte {
	sum := sha256.Sum256([]byte(covered))
	return []byte(covered + ` "manifest_sha256": "` + hex.EncodeToString(sum[:]) + "\"\n}\n")
}

// A chunk's stored-bytes CRC is written only when known, 0 included,
// and a manifest without it (every one before the field) reads as
// unknown.
func TestChunkCRCEncoding(t *testing.T) {
	data, err := Encode(testBackup())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\"stored_crc32c\": 2343432205\n", "\"stored_crc32c\": 0\n"} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("encoding lacks %q:\n%s", want, data)
		}
	}
	if n := bytes.Count(data, []byte("stored_crc32c")); n != 2 {
		t.Errorf("stored_crc32c appears %d times, want 2 (chunk b has none)", n)
	}
	b, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if c := b.Archives[0].Chunks; c[0].StoredCRC32C == nil || *c[0].StoredCRC32C != 0x8badf00d || c[1].StoredCRC32C != nil {
		t.Errorf("decoded chunk CRCs %v and %v, want 8badf00d and none", c[0].StoredCRC32C, c[1].StoredCRC32C)
	}
	if c := b.Archives[1].Chunks[0].StoredCRC32C; c == nil || *c != 0 {
		t.Errorf("decoded CRC 0 as %v", c)
	}
	old := reseal(t, data, func(s string) string {
		return regexp.MustCompile(`,\n *"stored_crc32c": \d+`).ReplaceAllString(s, "")
	})
	if bytes.Contains(old, []byte("stored_crc32c")) {
		t.Fatalf("could not remove the field:\n%s", old)
	}
	b, err = Decode(old)
	if err != nil {
		t.Fatalf("a manifest without chunk CRCs: %v", err)
	}
	for _, a := range b.Archives {
		for _, c := range a.Chunks {
			if c.StoredCRC32C != nil {
				t.Errorf("chunk %s of a manifest without CRCs decoded with CRC %d", c.ID[:8], *c.StoredCRC32C)
			}
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	b := testBackup()
	data, err := Encode(b)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	lines := strings.Split(string(data), "\n")
	if n := len(lines); n < 4 || lines[n-1] != "" || lines[n-2] != "}" || !strings.HasPrefix(lines[n-3], ` "manifest_sha256": "`) {
		t.Fatalf("Encode: want the checksum as the last member on its own line, got tail %q", lines[max(0, len(lines)-4):])
	}
	covered := strings.Join(lines[:len(lines)-3], "\n") + "\n"
	sum := sha256.Sum256([]byte(covered))
	if want := ` "manifest_sha256": "` + hex.EncodeToString(sum[:]) + `"`; lines[len(lines)-3] != want {
		t.Errorf("checksum line = %q, want %q", lines[len(lines)-3], want)
	}
	if !strings.Contains(string(data), `"start_lsn": "0/03000028"`) {
		t.Errorf("Encode: LSN not written as a string:\n%s", data)
	}

	got, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if diff := cmp.Diff(b, got); diff != "" {
		t.Errorf("Decode(Encode(b)) (-want +got):\n%s", diff)
	}
	again, err := Encode(got)
	if err != nil {
		t.Fatalf("Encode again: %v", err)
	}
	if !bytes.Equal(data, again) {
		t.Errorf("Encode(Decode(data)) differs from data:\n%s\n---\n%s", data, again)
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	if _, err := Encode(nil); err == nil {
		t.Error("Encode(nil) succeeded")
	}
	b := testBackup()
	b.ID = "yesterday"
	if _, err := Encode(b); err == nil || !strings.Contains(err.Error(), "backup id") {
		t.Errorf("Encode with a bad ID: error = %v, want one naming the backup id", err)
	}
}

func TestDecodeChecksum(t *testing.T) {
	good, err := Encode(testBackup())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		data         []byte
		wantMismatch bool
		wantErr      string
	}{
		{
			name:         "content changed",
			data:         bytes.Replace(good, []byte(`"pg_version": 170002`), []byte(`"pg_version": 170003`), 1),
			wantMismatch: true,
			wantErr:      "the manifest is corrupt",
		},
		{
			name:         "checksum changed",
			data:         flipChecksumDigit(good),
			wantMismatch: true,
		},
		{
			name:         "whitespace changed",
			data:         bytes.Replace(good, []byte("{\n \""), []byte("{\n  \""), 1),
			wantMismatch: true,
		},
		{name: "empty", data: nil, wantErr: "no \"manifest_sha256\""},
		{name: "truncated", data: good[:len(good)/2], wantErr: "no \"manifest_sha256\""},
		{name: "no closing brace", data: good[:len(good)-2], wantErr: "last member"},
		{name: "trailing data", data: append(bytes.Clone(good), "{}"...), wantErr: "after the end"},
		{name: "member after checksum", data: bytes.Replace(good, []byte("\"\n}\n"), []byte("\",\n \"x\": 1\n}\n"), 1), wantErr: "last member"},
		{name: "not on its own line", data: bytes.Replace(good, []byte(",\n \"manifest_sha256\""), []byte(", \"manifest_sha256\""), 1), wantErr: "line of its own"},
		{name: "short digest", data: bytes.Replace(good, []byte("\"\n}\n"), []byte("0\"\n}\n"), 1), wantErr: "not a hex SHA-256"},
		{name: "single line", data: []byte(`{"manifest_sha256": "` + strings.Repeat("0", 64) + `"}`), wantErr: "line of its own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Decode(tt.data)
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", b)
			}
			if tt.wantMismatch {
				if !errors.Is(err, ErrChecksumMismatch) {
					t.Errorf("Decode error = %v, want ErrChecksumMismatch", err)
				}
				if !strings.HasPrefix(err.Error(), "manifest checksum mismatch: stored ") {
					t.Errorf("Decode error = %q, want it to start with \"manifest checksum mismatch: stored \"", err)
				}
			}
			if tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Decode error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// flipChecksumDigit changes the first digit of the stored checksum.
func flipChecksumDigit(data []byte) []byte {
	out := bytes.Clone(data)
	i := bytes.LastIndex(out, []byte(`"manifest_sha256": "`)) + len(`"manifest_sha256": "`)
	if out[i] == '0' {
		out[i] = '1'
	} else {
		out[i] = '0'
	}
	return out
}

func TestDecodeVersion(t *testing.T) {
	good, err := Encode(testBackup())
	if err != nil {
		t.Fatal(err)
	}
	setVersion := func(v string) func(string) string {
		return func(s string) string {
			return strings.Replace(s, `"format_version": "`+FormatVersion+`"`, `"format_version": `+v, 1)
		}
	}
	tests := []struct {
		name            string
		edit            func(string) string
		wantErr         string
		wantUnsupported bool
	}{
		{name: "same", edit: func(s string) string { return s }},
		{
			name: "newer minor with unknown fields",
			edit: func(s string) string {
				s = setVersion(`"1.7"`)(s)
				s = strings.Replace(s, "{\n", "{\n \"future_field\": {\"a\": [1, 2]},\n", 1)
				return strings.Replace(s, `"codec": "lz4"`, `"codec": "lz4", "dictionary": "x"`, 1)
			},
		},
		{name: "major 2 (incremental backups)", edit: setVersion(`"2.0"`)},
		{name: "newer major", edit: setVersion(`"3.0"`), wantErr: "a newer pgstow is needed", wantUnsupported: true},
		{name: "far newer major", edit: setVersion(`"12.3"`), wantErr: "12.3", wantUnsupported: true},
		{name: "major 0", edit: setVersion(`"0.9"`), wantErr: "reads formats 1.x and 2.x only", wantUnsupported: true},
		{name: "no minor", edit: setVersion(`"1"`), wantErr: "malformed format_version"},
		{name: "empty", edit: setVersion(`""`), wantErr: "malformed format_version"},
		{name: "number", edit: setVersion(`1.0`), wantErr: "format_version"},
		{name: "missing", edit: func(s string) string { return strings.Replace(s, `"format_version": "`+FormatVersion+`",`, "", 1) }, wantErr: "missing format_version"},
		{
			// A newer major may change field types; the version error must
			// win over the decode error.
			name: "newer major with changed types",
			edit: func(s string) string {
				s = setVersion(`"3.0"`)(s)
				return strings.Replace(s, `"pg_version": 170002`, `"pg_version": "17.2"`, 1)
			},
			wantErr: "a newer pgstow is needed", wantUnsupported: true,
		},
		{name: "not JSON", edit: func(s string) string { return strings.Replace(s, "{", "[", 1) }, wantErr: "format_version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Decode(reseal(t, good, tt.edit))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if diff := cmp.Diff(testBackup(), b, cmp.FilterPath(func(p cmp.Path) bool {
					return p.Last().String() == ".FormatVersion"
				}, cmp.Ignore())); diff != "" {
					t.Errorf("Decode (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Decode error = %v, want one containing %q", err, tt.wantErr)
			}
			if got := errors.Is(err, ErrUnsupportedVersion); got != tt.wantUnsupported {
				t.Errorf("errors.Is(err, ErrUnsupportedVersion) = %v, want %v (err: %v)", got, tt.wantUnsupported, err)
			}
		})
	}
}

func TestDecodeValidates(t *testing.T) {
	good, err := Encode(testBackup())
	if err != nil {
		t.Fatal(err)
	}
	data := reseal(t, good, func(s string) string {
		return strings.Replace(s, `"path": "global/pg_control"`, `"path": "../../etc/passwd"`, 1)
	})
	if _, err := Decode(data); err == nil || !strings.Contains(err.Error(), `".." element`) {
		t.Errorf("Decode of a hostile path: error = %v, want one naming the \"..\" element", err)
	}
	data = reseal(t, good, func(s string) string {
		return strings.Replace(s, `"pg_version": 170002`, `"pg_version": "x"`, 1)
	})
	if _, err := Decode(data); err == nil || !strings.Contains(err.Error(), "pg_version") {
		t.Errorf("Decode of a mistyped field: error = %v, want one naming pg_version", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(b *Backup)
		wantErr string // "" means valid
	}{
		{name: "valid", edit: func(b *Backup) {}},
		{name: "empty backup lists", edit: func(b *Backup) {
			b.WAL, b.Tablespaces, b.Archives, b.Files = nil, nil, nil, nil
		}},
		{name: "history file in WAL", edit: func(b *Backup) {
			b.WAL = append(b.WAL, WALSegment{Name: "00000002.history"})
		}},
		{name: "partial last segment", edit: func(b *Backup) {
			b.WAL[len(b.WAL)-1].Name = PartialSegmentName(b.WAL[len(b.WAL)-1].Name, 4096)
		}},
		{name: "empty system id", edit: func(b *Backup) { b.SystemID = "" }},
		{name: "start equals end", edit: func(b *Backup) { b.EndLSN = b.StartLSN }},
		{name: "file ends at archive end", edit: func(b *Backup) { b.Files[4].Size = 3072 - 512 }},
		{name: "zero-length file at archive end", edit: func(b *Backup) { b.Files[4].Size, b.Files[4].Offset = 0, 3072 }},

		{name: "bad id", edit: func(b *Backup) { b.ID = "20261123" }, wantErr: "invalid backup id"},
		{name: "hostile id", edit: func(b *Backup) { b.ID = "../20261123T2046" }, wantErr: "invalid backup id"},
		{name: "no version", edit: func(b *Backup) { b.FormatVersion = "" }, wantErr: "format_version"},
		{name: "newer version", edit: func(b *Backup) { b.FormatVersion = "3.0" }, wantErr: "newer pgstow"},
		{name: "bad system id", edit: func(b *Backup) { b.SystemID = "-1" }, wantErr: "system_id"},
		{name: "start after end", edit: func(b *Backup) { b.StartLSN = b.EndLSN + 1 }, wantErr: "start_lsn 0/04000001 is after end_lsn 0/04000000"},
		{name: "zero segment size", edit: func(b *Backup) { b.WALSegmentSize = 0 }, wantErr: "wal_segment_size"},
		{name: "odd segment size", edit: func(b *Backup) { b.WALSegmentSize = 3 * mib }, wantErr: "wal_segment_size"},
		{name: "bad pg manifest sha", edit: func(b *Backup) { b.PGManifestSHA256 = "abc" }, wantErr: "pg_manifest_sha256"},
		{name: "WAL name lower case", edit: func(b *Backup) { b.WAL[0].Name = "0000000100000000000000aa" }, wantErr: "wal 0"},
		{name: "WAL name beyond segments per id", edit: func(b *Backup) { b.WAL[0].Name = "000000010000000000000100" }, wantErr: "low part"},
		{name: "WAL name garbage", edit: func(b *Backup) { b.WAL[0].Name = "../../x" }, wantErr: "wal 0"},
		{name: "WAL bad sha", edit: func(b *Backup) { b.WAL[0].SHA256 = "ABC" }, wantErr: "sha256"},
		{name: "partial segment before the last", edit: func(b *Backup) {
			b.WAL = append([]WALSegment{{Name: PartialSegmentName(b.WAL[0].Name, 4096)}}, b.WAL...)
		}, wantErr: "is not the last"},
		{name: "partial segment of a whole segment's size", edit: func(b *Backup) {
			b.WAL[len(b.WAL)-1].Name = PartialSegmentName(b.WAL[len(b.WAL)-1].Name, b.WALSegmentSize)
		}, wantErr: "wal"},
		{name: "WAL negative size", edit: func(b *Backup) { b.WAL[0].StoredSize = -1 }, wantErr: "negative stored_size"},
		{name: "chunk id upper case", edit: func(b *Backup) { b.Archives[0].Chunks[1].ID = strings.ToUpper(chunkID("b")) }, wantErr: "archive 0 (base.tar): chunk 1: invalid chunk id"},
		{name: "chunk id short", edit: func(b *Backup) { b.Archives[1].Chunks[0].ID = "ab" }, wantErr: "invalid chunk id"},
		{name: "codec", edit: func(b *Backup) { b.Archives[0].Chunks[0].Codec = "zstd" }, wantErr: `unknown codec "zstd"`},
		{name: "empty codec", edit: func(b *Backup) { b.Archives[0].Chunks[0].Codec = "" }, wantErr: "unknown codec"},
		{name: "negative chunk size", edit: func(b *Backup) {
			b.Archives[0].Chunks[0].RawSize = -8192
			b.Archives[0].Chunks[1].RawSize = 8192 * 3
		}, wantErr: "negative size"},
		{name: "negative archive size", edit: func(b *Backup) { b.Archives[0].StoredSize = -1 }, wantErr: "negative size"},
		{name: "raw size mismatch", edit: func(b *Backup) { b.Archives[0].RawSize++ }, wantErr: "raw_size 16385, but its chunks add up to 16384"},
		{name: "stored size mismatch", edit: func(b *Backup) { b.Archives[1].StoredSize = 1 }, wantErr: "stored_size 1, but its chunks add up to 200"},
		{name: "chunk sizes overflow", edit: func(b *Backup) {
			b.Archives[0].Chunks[0].RawSize = 1<<63 - 1
		}, wantErr: "overflow"},
		{name: "archive name with slash", edit: func(b *Backup) { b.Archives[0].Name = "../base.tar" }, wantErr: "invalid archive name"},
		{name: "archive name empty", edit: func(b *Backup) { b.Archives[0].Name = "" }, wantErr: "invalid archive name"},
		{name: "file sha256 upper case", edit: func(b *Backup) { b.Files[2].SHA256 = strings.ToUpper(b.Files[2].SHA256) }, wantErr: "file 2 (global/pg_control): invalid sha256"},
		{name: "file sha256 short", edit: func(b *Backup) { b.Files[2].SHA256 = b.Files[2].SHA256[:63] }, wantErr: "invalid sha256"},
		{name: "file sha256 not hex", edit: func(b *Backup) { b.Files[2].SHA256 = strings.Repeat("g", 64) }, wantErr: "invalid sha256"},
		{name: "file sha256 on a directory", edit: func(b *Backup) { b.Files[1].SHA256 = chunkID("dir") }, wantErr: "file 1 (global/): invalid sha256"},
		{name: "file sha256 on a symlink", edit: func(b *Backup) { b.Files[3].SHA256 = chunkID("link") }, wantErr: "on a regular file"},
		{name: "archive index negative", edit: func(b *Backup) { b.Files[0].Archive = -1 }, wantErr: "archive index -1 out of range"},
		{name: "archive index too large", edit: func(b *Backup) { b.Files[0].Archive = 2 }, wantErr: "archive index 2 out of range (2 archives)"},
		{name: "file beyond archive", edit: func(b *Backup) { b.Files[4].Size = 3072 - 511 }, wantErr: "beyond the end of 16384.tar"},
		{name: "offset beyond archive", edit: func(b *Backup) { b.Files[1].Offset = 16385 }, wantErr: "beyond the end"},
		{name: "offset plus size overflows", edit: func(b *Backup) { b.Files[0].Offset, b.Files[0].Size = 1<<62, 1<<62 }, wantErr: "beyond the end"},
		{name: "negative file size", edit: func(b *Backup) { b.Files[0].Size = -1 }, wantErr: "negative size"},
		{name: "negative offset", edit: func(b *Backup) { b.Files[0].Offset = -1 }, wantErr: "negative size"},
		{name: "absolute path", edit: func(b *Backup) { b.Files[0].Path = "/etc/passwd" }, wantErr: "absolute"},
		{name: "dotdot path", edit: func(b *Backup) { b.Files[0].Path = "base/../../x" }, wantErr: `".." element`},
		{name: "dotdot alone", edit: func(b *Backup) { b.Files[0].Path = ".." }, wantErr: `".." element`},
		{name: "dot element", edit: func(b *Backup) { b.Files[0].Path = "./backup_label" }, wantErr: `"." element`},
		{name: "empty element", edit: func(b *Backup) { b.Files[0].Path = "global//pg_control" }, wantErr: "empty element"},
		{name: "file with trailing slash", edit: func(b *Backup) { b.Files[0].Path = "backup_label/" }, wantErr: "empty element"},
		{name: "dir with two trailing slashes", edit: func(b *Backup) { b.Files[1].Path = "global//" }, wantErr: "empty element"},
		{name: "dir slash only", edit: func(b *Backup) { b.Files[1].Path = "/" }, wantErr: "absolute"},
		{name: "empty path", edit: func(b *Backup) { b.Files[0].Path = "" }, wantErr: "empty path"},
		{name: "backslash", edit: func(b *Backup) { b.Files[0].Path = `..\..\x` }, wantErr: "backslash"},
		{name: "NUL", edit: func(b *Backup) { b.Files[0].Path = "backup_label\x00x" }, wantErr: "NUL"},
		{name: "symlink without target", edit: func(b *Backup) { b.Files[3].LinkTarget = "" }, wantErr: "symlink with an empty target"},
		{name: "symlink target NUL", edit: func(b *Backup) { b.Files[3].LinkTarget = "/srv\x00" }, wantErr: "NUL"},
		{name: "unknown type", edit: func(b *Backup) { b.Files[0].Type = "fifo" }, wantErr: `unknown type "fifo"`},
		{name: "empty type", edit: func(b *Backup) { b.Files[0].Type = "" }, wantErr: "unknown type"},
		{name: "negative totals", edit: func(b *Backup) { b.Totals.NewBytes = -1 }, wantErr: "totals"},
		{name: "format 2 without slices", edit: func(b *Backup) { b.FormatVersion = FormatVersionIncremental }},
		{name: "whole reference spelt as a slice", edit: func(b *Backup) {
			b.FormatVersion = FormatVersionIncremental
			b.Archives[1].Chunks[0].Length = 3072
		}},
		{name: "slice in a format 1 manifest", edit: func(b *Backup) {
			b.Archives[1].Chunks[0].Length = 3072
		}, wantErr: "slices need format 2"},
		{name: "slice in a format 1 manifest, sizes matching", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.FormatVersion = "1.3"
		}, wantErr: "archive 0 (base.tar): chunk 0"},
		{name: "negative slice offset", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.Archives[0].Chunks[2].Offset = -1
		}, wantErr: "negative offset -1"},
		{name: "negative slice length", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.Archives[0].Chunks[2].Length = -1
		}, wantErr: "negative offset"},
		{name: "offset without a length", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.Archives[0].Chunks[2].Length = 0
		}, wantErr: "offset 4096 without a length"},
		{name: "slice beyond its chunk", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.Archives[0].Chunks[2].Offset = 4097
		}, wantErr: "beyond the chunk's 8192 bytes"},
		{name: "slice offset overflows", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.Archives[0].Chunks[2].Offset = 1<<63 - 1
		}, wantErr: "beyond the chunk"},
		{name: "slices counted whole", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.Archives[0].RawSize = 8192 * 3
		}, wantErr: "raw_size 24576, but its chunks add up to 16384"},
		{name: "slices' stored size counted once per reference", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.Archives[0].StoredSize = 3000
		}, wantErr: "stored_size 3000, but its chunks add up to 5000"},
		{name: "incremental as tested", edit: func(b *Backup) { *b = *testIncrementalBackup() }},
		{name: "block CRCs of a full backup (1.3)", edit: func(b *Backup) {
			b.BlockSize = 8192
			b.Files[4].BlockCRC32C = BlockCRCs{1}
		}},
		{name: "block CRCs, short last block", edit: func(b *Backup) {
			b.BlockSize = 1024
			b.Files[4].Size = 2049
			b.Files[4].BlockCRC32C = BlockCRCs{1, 2, 3}
		}},
		{name: "block CRCs without block size", edit: func(b *Backup) {
			b.Files[4].BlockCRC32C = BlockCRCs{1}
		}, wantErr: "file 4 (PG_17_202406281/5/16385): block_crc32c without the backup's block_size"},
		{name: "block CRCs too few", edit: func(b *Backup) {
			b.BlockSize = 1024
			b.Files[4].BlockCRC32C = BlockCRCs{1}
		}, wantErr: "1 block_crc32c values for 2048 bytes: want 2"},
		{name: "block CRCs too many", edit: func(b *Backup) {
			b.BlockSize = 1024
			b.Files[4].BlockCRC32C = BlockCRCs{1, 2, 3}
		}, wantErr: "want 2"},
		{name: "block CRCs on an empty file", edit: func(b *Backup) {
			b.BlockSize = 8192
			b.Files[4].Size = 0
			b.Files[4].BlockCRC32C = BlockCRCs{0}
		}, wantErr: "want 0"},
		{name: "block CRCs on a directory", edit: func(b *Backup) {
			b.BlockSize = 8192
			b.Files[1].BlockCRC32C = BlockCRCs{0}
		}, wantErr: "block_crc32c on a dir"},
		{name: "block size not a power of two", edit: func(b *Backup) { b.BlockSize = 3000 }, wantErr: "invalid block_size 3000"},
		{name: "block size too large", edit: func(b *Backup) { b.BlockSize = 65536 }, wantErr: "invalid block_size"},
		{name: "block size negative", edit: func(b *Backup) { b.BlockSize = -8192 }, wantErr: "invalid block_size"},
		{name: "incremental bad parent", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.Incremental.Parent = "../x"
		}, wantErr: "incremental: invalid parent backup id"},
		{name: "incremental negative", edit: func(b *Backup) {
			*b = *testIncrementalBackup()
			b.Incremental.ChangedBlocks = -1
		}, wantErr: "incremental: negative value"},
		{name: "too many files", edit: func(b *Backup) {
			b.Files = make([]File, maxCount+1)
		}, wantErr: "more than the limit"},
		{name: "too many chunks", edit: func(b *Backup) {
			b.Archives[1].Chunks = make([]ChunkRef, maxCount)
		}, wantErr: "more than 10000000 chunks"},
		{name: "too many WAL", edit: func(b *Backup) {
			b.WAL = make([]WALSegment, maxCount+1)
		}, wantErr: "more than the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBackup()
			tt.edit(b)
			err := b.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	var nilBackup *Backup
	if err := nilBackup.Validate(); err == nil {
		t.Error("Validate of a nil *Backup succeeded")
	}
}

func TestRepo(t *testing.T) {
	r := &Repo{
		FormatVersion:  FormatVersion,
		SystemID:       "18446744073709551615",
		WALSegmentSize: 16 * mib,
		Created:        time.Date(2026, 11, 23, 20, 46, 51, 0, time.UTC),
	}
	data, err := EncodeRepo(r)
	if err != nil {
		t.Fatalf("EncodeRepo: %v", err)
	}
	got, err := DecodeRepo(data)
	if err != nil {
		t.Fatalf("DecodeRepo: %v", err)
	}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Errorf("DecodeRepo(EncodeRepo(r)) (-want +got):\n%s", diff)
	}

	tests := []struct {
		name            string
		data            string
		wantErr         string
		wantUnsupported bool
	}{
		{name: "newer minor, unknown field", data: `{"format_version":"1.3","system_id":"1","wal_segment_size":1048576,"created":"2026-11-23T20:46:51Z","kms":"x"}`},
		{name: "newer major", data: `{"format_version":"3.0","system_id":"1","wal_segment_size":1048576}`, wantErr: "newer pgstow", wantUnsupported: true},
		{name: "immutable", data: `{"format_version":"2.0","system_id":"1","wal_segment_size":1048576,"immutability":{"mode":"compliance","retention":"720h"}}`},
		{name: "immutable at 1.x", data: `{"format_version":"1.3","system_id":"1","wal_segment_size":1048576,"immutability":{"mode":"compliance","retention":"720h"}}`, wantErr: "want 2.0"},
		{name: "bad lock mode", data: `{"format_version":"2.0","system_id":"1","wal_segment_size":1048576,"immutability":{"mode":"legal","retention":"720h"}}`, wantErr: "governance or compliance"},
		{name: "bad retention", data: `{"format_version":"2.0","system_id":"1","wal_segment_size":1048576,"immutability":{"mode":"governance","retention":"30d"}}`, wantErr: "retention"},
		{name: "short retention", data: `{"format_version":"2.0","system_id":"1","wal_segment_size":1048576,"immutability":{"mode":"governance","retention":"10ms"}}`, wantErr: "at least 1s"},
		{name: "missing version", data: `{"system_id":"1","wal_segment_size":1048576}`, wantErr: "missing format_version"},
		{name: "bad segment size", data: `{"format_version":"1.0","system_id":"1","wal_segment_size":1000}`, wantErr: "wal_segment_size"},
		{name: "missing system id", data: `{"format_version":"1.0","wal_segment_size":1048576}`, wantErr: "system_id"},
		{name: "numeric system id", data: `{"format_version":"1.0","system_id":1,"wal_segment_size":1048576}`, wantErr: "system_id"},
		{name: "not JSON", data: `pgstow`, wantErr: "format_version"},
		{name: "trailing data", data: `{"format_version":"1.0","system_id":"1","wal_segment_size":1048576} {}`, wantErr: "format_version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRepo([]byte(tt.data))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("DecodeRepo: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("DecodeRepo error = %v, want one containing %q", err, tt.wantErr)
			}
			if got := errors.Is(err, ErrUnsupportedVersion); got != tt.wantUnsupported {
				t.Errorf("errors.Is(err, ErrUnsupportedVersion) = %v, want %v", got, tt.wantUnsupported)
			}
		})
	}
	if _, err := EncodeRepo(&Repo{FormatVersion: FormatVersion, SystemID: "1"}); err == nil {
		t.Error("EncodeRepo without a segment size succeeded")
	}
	if _, err := EncodeRepo(nil); err == nil {
		t.Error("EncodeRepo(nil) succeeded")
	}
}

// A manifest written before format 1.2 has no file sha256: it decodes,
// and its files carry none, which a restore reads as "not known".
func TestDecodeWithoutFileSHA256(t *testing.T) {
	for _, v := range []string{"1.0", "1.1"} {
		b := testBackup()
		b.FormatVersion = v
		for i := range b.Files {
			b.Files[i].SHA256 = ""
		}
		data, err := Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(data, []byte(`"sha256"`)); n != len(b.WAL) { // the WAL segments'
			t.Fatalf("format %s: %d sha256 members, want %d (a file's written though none is set):\n%s", v, n, len(b.WAL), data)
		}
		got, err := Decode(data)
		if err != nil {
			t.Fatalf("format %s: %v", v, err)
		}
		if diff := cmp.Diff(b, got); diff != "" {
			t.Errorf("format %s: decoded differs (-want +got):\n%s", v, diff)
		}
	}
}

// The sha256 of a file is written after its crc32c and read back.
func TestFileSHA256RoundTrip(t *testing.T) {
	b := testBackup()
	data, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	want := "\"crc32c\": 1,\n   \"sha256\": \"" + chunkID("pg_control") + "\",\n"
	if !bytes.Contains(data, []byte(want)) {
		t.Fatalf("encoding lacks %q:\n%s", want, data)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Files[2].SHA256 != chunkID("pg_control") || got.Files[0].SHA256 != "" {
		t.Errorf("decoded sha256 %q and %q; want %q and none", got.Files[2].SHA256, got.Files[0].SHA256, chunkID("pg_control"))
	}
	// A malformed one in a stored manifest is refused on reading.
	bad := reseal(t, data, func(s string) string {
		return strings.Replace(s, chunkID("pg_control"), strings.ToUpper(chunkID("pg_control")), 1)
	})
	if _, err := Decode(bad); err == nil || !strings.Contains(err.Error(), "invalid sha256") {
		t.Errorf("Decode of an upper-case file sha256: error = %v, want invalid sha256", err)
	}
}
