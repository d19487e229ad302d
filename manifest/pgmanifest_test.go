package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// pgSeal appends a Manifest-Checksum line the way PostgreSQL's
// SendBackupManifest does: the SHA-256 of everything written before it.
func pgSeal(body string) []byte {
	sum := sha256.Sum256([]byte(body))
	return []byte(body + `"Manifest-Checksum": "` + hex.EncodeToString(sum[:]) + "\"}\n")
}

// pgCRC formats a CRC32C as PostgreSQL writes it in a manifest.
func pgCRC(data string) string {
	c := crc32.Checksum([]byte(data), crc32.MakeTable(crc32.Castagnoli))
	b := []byte{byte(c), byte(c >> 8), byte(c >> 16), byte(c >> 24)}
	return hex.EncodeToString(b)
}

// pgBodyV2 is laid out as PostgreSQL 17 writes a backup_manifest.
const pgBodyV2 = `{ "PostgreSQL-Backup-Manifest-Version": 2,
"System-Identifier": 7441234567890123456,
"Files": [
{ "Path": "backup_label", "Size": 227, "Last-Modified": "2026-11-23 20:46:51 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "839206e3" },
{ "Encoded-Path": "66696c65ff0a", "Size": 0, "Last-Modified": "2026-11-23 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "00000000" },
{ "Path": "pg_tblspc/16384/PG_17_202406281/5/16385", "Size": 8192, "Last-Modified": "2026-11-23 20:40:00 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" },
{ "Path": "global/pg_control", "Size": 8192, "Last-Modified": "2026-11-23 20:46:51 GMT" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/3000120" },
{ "Timeline": 2, "Start-LSN": "0/3000120", "End-LSN": "0/0400A028" }
],
`

func TestParsePGManifest(t *testing.T) {
	got, err := ParsePGManifest(pgSeal(pgBodyV2))
	if err != nil {
		t.Fatalf("ParsePGManifest: %v", err)
	}
	want := &PGManifest{
		Version:  2,
		SystemID: 7441234567890123456,
		Files: []PGFile{
			{Path: "backup_label", Size: 227, LastModified: "2026-11-23 20:46:51 GMT", ChecksumAlgorithm: "CRC32C", Checksum: "839206e3"},
			{Path: "file\xff\n", Size: 0, LastModified: "2026-11-23 20:40:00 GMT", ChecksumAlgorithm: "CRC32C", Checksum: "00000000"},
			{Path: "pg_tblspc/16384/PG_17_202406281/5/16385", Size: 8192, LastModified: "2026-11-23 20:40:00 GMT", ChecksumAlgorithm: "SHA256", Checksum: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
			{Path: "global/pg_control", Size: 8192, LastModified: "2026-11-23 20:46:51 GMT"},
		},
		WALRanges: []PGWALRange{
			{Timeline: 1, Start: 0x3000028, End: 0x3000120},
			{Timeline: 2, Start: 0x3000120, End: 0x400A028},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParsePGManifest (-want +got):\n%s", diff)
	}
}

func TestParsePGManifestErrors(t *testing.T) {
	v1 := strings.Replace(pgBodyV2, "\"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 7441234567890123456,\n", "\"PostgreSQL-Backup-Manifest-Version\": 1,\n", 1)
	replace := func(old, new string) []byte {
		if !strings.Contains(pgBodyV2, old) {
			panic("test input lacks " + old)
		}
		return pgSeal(strings.Replace(pgBodyV2, old, new, 1))
	}
	sealed := string(pgSeal(pgBodyV2))
	tests := []struct {
		name            string
		data            []byte
		wantErr         string // "" means it must parse
		wantMismatch    bool
		wantUnsupported bool
	}{
		{name: "version 1", data: pgSeal(v1)},
		{name: "upper-case stored checksum", data: []byte(sealed[:len(sealed)-68] + strings.ToUpper(sealed[len(sealed)-68:]))},
		{name: "lower-case algorithm", data: replace(`"Checksum-Algorithm": "SHA256"`, `"Checksum-Algorithm": "sha256"`)},
		{name: "algorithm NONE", data: replace(`"Size": 8192, "Last-Modified": "2026-11-23 20:46:51 GMT" }`, `"Size": 8192, "Checksum-Algorithm": "NONE" }`)},
		{name: "no files, no ranges", data: pgSeal("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n],\n\"WAL-Ranges\": [\n],\n")},

		{name: "tampered", data: []byte(strings.Replace(sealed, `"Size": 227`, `"Size": 228`, 1)), wantErr: "backup_manifest checksum mismatch: stored", wantMismatch: true},
		{name: "no checksum", data: []byte(pgBodyV2), wantErr: `no "Manifest-Checksum"`},
		{name: "checksum not last", data: []byte(strings.TrimSuffix(sealed, "}\n") + ",\n\"X\": 1}\n"), wantErr: "last member"},
		{name: "checksum on the first line", data: []byte(`{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [], "WAL-Ranges": [], "Manifest-Checksum": "` + strings.Repeat("0", 64) + "\"}\n"), wantErr: "line of its own"},
		{name: "checksum not hex", data: []byte("{\"PostgreSQL-Backup-Manifest-Version\": 1, \"Files\": [],\n\"Manifest-Checksum\": \"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz01234567890-\"}\n"), wantErr: "not a hex SHA-256"},
		{name: "checksum null", data: []byte("{\"PostgreSQL-Backup-Manifest-Version\": 1, \"Files\": [],\n\"Manifest-Checksum\": null}\n"), wantErr: "want a string"},
		{name: "version 3", data: replace(`"PostgreSQL-Backup-Manifest-Version": 2`, `"PostgreSQL-Backup-Manifest-Version": 3`), wantErr: "unsupported format version 3", wantUnsupported: true},
		{name: "version missing", data: replace(`"PostgreSQL-Backup-Manifest-Version": 2,`, ``), wantErr: "missing PostgreSQL-Backup-Manifest-Version"},
		{name: "version 2 without system id", data: replace("\"System-Identifier\": 7441234567890123456,\n", ""), wantErr: "without System-Identifier"},
		{name: "system id negative", data: replace(`7441234567890123456`, `-1`), wantErr: "System-Identifier"},
		{name: "files missing", data: pgSeal("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"WAL-Ranges\": [\n],\n"), wantErr: "missing Files"},
		{name: "WAL ranges missing", data: pgSeal("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n],\n"), wantErr: "missing WAL-Ranges"},
		{name: "path and encoded path", data: replace(`{ "Path": "backup_label",`, `{ "Path": "backup_label", "Encoded-Path": "00",`), wantErr: "both Path and Encoded-Path"},
		{name: "no path", data: replace(`{ "Path": "backup_label",`, `{`), wantErr: "file 0: missing Path"},
		{name: "empty path", data: replace(`"Path": "backup_label"`, `"Path": ""`), wantErr: "empty path"},
		{name: "bad encoded path", data: replace(`"66696c65ff0a"`, `"6g"`), wantErr: "Encoded-Path"},
		{name: "no size", data: replace(`"Size": 227, `, ``), wantErr: "backup_label: missing Size"},
		{name: "negative size", data: replace(`"Size": 227`, `"Size": -1`), wantErr: "negative Size"},
		{name: "size not a number", data: replace(`"Size": 227`, `"Size": "227"`), wantErr: "Size"},
		{name: "checksum without algorithm", data: replace(`"Checksum-Algorithm": "CRC32C", "Checksum": "839206e3"`, `"Checksum": "839206e3"`), wantErr: "without Checksum-Algorithm"},
		{name: "algorithm without checksum", data: replace(`, "Checksum": "839206e3"`, ``), wantErr: "want 8 hex digits"},
		{name: "unknown algorithm", data: replace(`"Checksum-Algorithm": "SHA256"`, `"Checksum-Algorithm": "MD5"`), wantErr: `unknown Checksum-Algorithm "MD5"`},
		{name: "short CRC", data: replace(`"839206e3"`, `"839206e"`), wantErr: "want 8 hex digits"},
		{name: "CRC not hex", data: replace(`"839206e3"`, `"839206ex"`), wantErr: "want 8 hex digits"},
		{name: "short SHA256", data: replace(`"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"`, `"9f86d081"`), wantErr: "want 64 hex digits"},
		{name: "timeline missing", data: replace(`{ "Timeline": 1, `, `{ `), wantErr: "WAL range 0: want Timeline"},
		{name: "timeline 0", data: replace(`"Timeline": 2`, `"Timeline": 0`), wantErr: "WAL range 1: timeline 0"},
		{name: "start after end", data: replace(`"End-LSN": "0/3000120" }`, `"End-LSN": "0/3000000" }`), wantErr: "Start-LSN 0/03000028 is after End-LSN 0/03000000"},
		{name: "bad LSN", data: replace(`"0/3000028"`, `"3000028"`), wantErr: "parse LSN"},
		{name: "not JSON", data: pgSeal("garbage\n"), wantErr: "parse backup_manifest"},
		{name: "empty", data: nil, wantErr: "Manifest-Checksum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParsePGManifest(tt.data)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParsePGManifest: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParsePGManifest = %+v, %v, want an error containing %q", m, err, tt.wantErr)
			}
			if got := errors.Is(err, ErrChecksumMismatch); got != tt.wantMismatch {
				t.Errorf("errors.Is(err, ErrChecksumMismatch) = %v, want %v", got, tt.wantMismatch)
			}
			if got := errors.Is(err, ErrUnsupportedVersion); got != tt.wantUnsupported {
				t.Errorf("errors.Is(err, ErrUnsupportedVersion) = %v, want %v", got, tt.wantUnsupported)
			}
		})
	}
}

func TestPGChecksumCRC32C(t *testing.T) {
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	tests := []struct {
		name    string
		hex     string
		want    uint32
		wantErr bool
	}{
		{name: "empty input", hex: "00000000", want: crc32.Checksum(nil, castagnoli)},
		{name: "check value", hex: "839206e3", want: 0xE3069283},
		{name: "check value upper case", hex: "839206E3", want: 0xE3069283},
		{name: "byte order", hex: "78563412", want: 0x12345678},
		{name: "short", hex: "839206e", wantErr: true},
		{name: "long", hex: "839206e300", wantErr: true},
		{name: "not hex", hex: "839206ez", wantErr: true},
		{name: "empty", hex: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PGChecksumCRC32C(tt.hex)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("PGChecksumCRC32C(%q) = %#x, want an error", tt.hex, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("PGChecksumCRC32C(%q): %v", tt.hex, err)
			}
			if got != tt.want {
				t.Errorf("PGChecksumCRC32C(%q) = %#08x, want %#08x", tt.hex, got, tt.want)
			}
		})
	}
	// The check value itself, computed rather than quoted.
	if got := crc32.Checksum([]byte("123456789"), castagnoli); got != 0xE3069283 {
		t.Errorf("CRC32C(123456789) = %#x, want 0xe3069283", got)
	}
	if got := pgCRC("123456789"); got != "839206e3" {
		t.Errorf("PostgreSQL form of CRC32C(123456789) = %q, want 839206e3", got)
	}
	if got := pgCRC(""); got != "00000000" {
		t.Errorf("PostgreSQL form of CRC32C(\"\") = %q, want 00000000", got)
	}
}
