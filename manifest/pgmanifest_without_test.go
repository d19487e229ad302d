package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// pgBodyMap is laid out as PostgreSQL 15 writes a backup_manifest for a
// backup taken with TABLESPACE_MAP.
const pgBodyMap = `{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "backup_label", "Size": 225, "Last-Modified": "2026-11-23 20:46:51 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "839206e3" },
{ "Path": "tablespace_map", "Size": 25, "Last-Modified": "2026-11-23 20:46:51 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "0a1b2c3d" },
{ "Path": "pg_tblspc/16384/PG_15_202209061/5/16385", "Size": 8192, "Last-Modified": "2026-11-23 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "00000000" },
{ "Path": "global/pg_control", "Size": 8192, "Last-Modified": "2026-11-23 20:46:51 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "11223344" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/3000100" }
],
`

func TestCopyPGManifestWithout(t *testing.T) {
	// cut removes text from body, which must hold it once.
	cut := func(body, text string) string {
		if strings.Count(body, text) != 1 {
			panic(fmt.Sprintf("test body holds %q %d times", text, strings.Count(body, text)))
		}
		return strings.Replace(body, text, "", 1)
	}
	one := "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{ \"Path\": \"tablespace_map\", \"Size\": 25 }\n],\n\"WAL-Ranges\": [\n],\n"
	compact := `{"PostgreSQL-Backup-Manifest-Version":1,"files":[{"Path":"a","Size":1} , {"Path":"tablespace_map","Size":2},{"Path":"b","Size":3}],` + "\n" + `"WAL-Ranges":[],` + "\n"
	for _, tc := range []struct {
		name string
		in   []byte
		path string
		// want is the exact output; wantFiles its entry count.
		want      []byte
		wantFiles int
	}{
		{
			name:      "an entry in the middle takes the comma before it",
			in:        pgSeal(pgBodyMap),
			path:      "tablespace_map",
			want:      pgSeal(cut(pgBodyMap, ",\n{ \"Path\": \"tablespace_map\", \"Size\": 25, \"Last-Modified\": \"2026-11-23 20:46:51 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"0a1b2c3d\" }")),
			wantFiles: 3,
		},
		{
			name:      "the first entry takes the comma after it",
			in:        pgSeal(pgBodyMap),
			path:      "backup_label",
			want:      pgSeal(cut(pgBodyMap, "\n{ \"Path\": \"backup_label\", \"Size\": 225, \"Last-Modified\": \"2026-11-23 20:46:51 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"839206e3\" },")),
			wantFiles: 3,
		},
		{
			name:      "the last entry",
			in:        pgSeal(pgBodyMap),
			path:      "global/pg_control",
			want:      pgSeal(cut(pgBodyMap, ",\n{ \"Path\": \"global/pg_control\", \"Size\": 8192, \"Last-Modified\": \"2026-11-23 20:46:51 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"11223344\" }")),
			wantFiles: 3,
		},
		{
			name:      "an Encoded-Path entry, version 2",
			in:        pgSeal(pgBodyV2),
			path:      "file\xff\n",
			want:      pgSeal(cut(pgBodyV2, ",\n{ \"Encoded-Path\": \"66696c65ff0a\", \"Size\": 0, \"Last-Modified\": \"2026-11-23 20:40:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" }")),
			wantFiles: 3,
		},
		{
			name:      "the only entry",
			in:        pgSeal(one),
			path:      "tablespace_map",
			want:      pgSeal(cut(one, "\n{ \"Path\": \"tablespace_map\", \"Size\": 25 }")),
			wantFiles: 0,
		},
		{
			name:      "another layout, a key in another case",
			in:        pgSeal(compact),
			path:      "tablespace_map",
			want:      pgSeal(cut(compact, ` , {"Path":"tablespace_map","Size":2}`)),
			wantFiles: 2,
		},
		{
			name:      "upper-case stored checksum",
			in:        upperChecksum(pgSeal(pgBodyMap)),
			path:      "tablespace_map",
			want:      pgSeal(cut(pgBodyMap, ",\n{ \"Path\": \"tablespace_map\", \"Size\": 25, \"Last-Modified\": \"2026-11-23 20:46:51 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"0a1b2c3d\" }")),
			wantFiles: 3,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			n, err := CopyPGManifestWithout(&out, bytes.NewReader(tc.in), int64(len(tc.in)), tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(tc.want), out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if n != tc.wantFiles {
				t.Errorf("%d entries, want %d", n, tc.wantFiles)
			}
			checkWithout(t, tc.in, out.Bytes(), tc.path)
		})
	}
}

// upperChecksum upper-cases the digest of a sealed manifest.
func upperChecksum(data []byte) []byte {
	s := string(data)
	return []byte(s[:len(s)-68] + strings.ToUpper(s[len(s)-68:]))
}

// checkWithout checks that out parses and is in with every entry for path
// removed and nothing else changed.
func checkWithout(t *testing.T, in, out []byte, path string) {
	t.Helper()
	before, err := ParsePGManifest(in)
	if err != nil {
		t.Fatalf("input: %v", err)
	}
	after, err := ParsePGManifest(out)
	if err != nil {
		t.Fatalf("output does not parse: %v\n%s", err, out)
	}
	before.Files = slices.DeleteFunc(before.Files, func(f PGFile) bool { return f.Path == path })
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("output differs from the input less %q (-want +got):\n%s", path, diff)
	}
}

// TestCopyPGManifestWithoutLarge: with more than the tail window, the
// checksum line is found at the right offset.
func TestCopyPGManifestWithoutLarge(t *testing.T) {
	var body strings.Builder
	body.WriteString("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [")
	for i := range 3000 {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, "\n{ \"Path\": \"base/5/%d\", \"Size\": 8192, \"Last-Modified\": \"2026-11-23 20:40:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"%08x\" }", i, i)
	}
	body.WriteString("\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/3000028\", \"End-LSN\": \"0/3000100\" }\n],\n")
	in := pgSeal(body.String())
	if len(in) < 2*tailWindowBytes {
		t.Fatalf("test manifest of %d bytes is not larger than the window", len(in))
	}
	var out bytes.Buffer
	n, err := CopyPGManifestWithout(&out, bytes.NewReader(in), int64(len(in)), "base/5/1500")
	if err != nil {
		t.Fatal(err)
	}
	if n != 2999 {
		t.Errorf("%d entries, want 2999", n)
	}
	checkWithout(t, in, out.Bytes(), "base/5/1500")
}

func TestCopyPGManifestWithoutErrors(t *testing.T) {
	sealed := pgSeal(pgBodyMap)
	tamper := func(old, new string) []byte {
		if !bytes.Contains(sealed, []byte(old)) {
			panic("test input lacks " + old)
		}
		return bytes.Replace(sealed, []byte(old), []byte(new), 1)
	}
	for _, tc := range []struct {
		name         string
		in           []byte
		path         string
		wantErr      string
		wantMismatch bool
	}{
		{name: "not listed", in: sealed, path: "PG_VERSION", wantErr: `"PG_VERSION" is not listed`},
		{name: "listed twice", in: pgSeal(strings.Replace(pgBodyMap, `"backup_label"`, `"tablespace_map"`, 1)), path: "tablespace_map", wantErr: "listed twice"},
		// A manifest damaged after it was checked must not be sealed
		// anew, whether the damage is in what is kept or what is cut.
		{name: "damage in a kept entry", in: tamper(`"Size": 225`, `"Size": 226`), path: "tablespace_map", wantErr: "checksum mismatch", wantMismatch: true},
		{name: "damage in the cut entry", in: tamper(`"Size": 25,`, `"Size": 26,`), path: "tablespace_map", wantErr: "checksum mismatch", wantMismatch: true},
		{name: "damage after Files", in: tamper(`"0/3000100"`, `"0/3000101"`), path: "tablespace_map", wantErr: "checksum mismatch", wantMismatch: true},
		{name: "no checksum line", in: []byte(pgBodyMap), path: "tablespace_map", wantErr: `no "Manifest-Checksum"`},
		{name: "no Files", in: pgSeal("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"WAL-Ranges\": [\n],\n"), path: "tablespace_map", wantErr: "no Files member"},
		{name: "Files not an array", in: pgSeal("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": {},\n"), path: "tablespace_map", wantErr: "not an array"},
		{name: "bad entry", in: pgSeal(strings.Replace(pgBodyMap, `"Size": 225, `, ``, 1)), path: "tablespace_map", wantErr: "file 0: backup_label: missing Size"},
		{name: "not JSON", in: pgSeal("garbage\n"), path: "tablespace_map", wantErr: "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := CopyPGManifestWithout(&out, bytes.NewReader(tc.in), int64(len(tc.in)), tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if got := errors.Is(err, ErrChecksumMismatch); got != tc.wantMismatch {
				t.Errorf("errors.Is(err, ErrChecksumMismatch) = %v, want %v", got, tc.wantMismatch)
			}
			if tc.wantMismatch && bytes.Contains(out.Bytes(), []byte("Manifest-Checksum")) {
				t.Error("a damaged manifest was sealed anew")
			}
		})
	}
}

// FuzzCopyPGManifestWithout checks, for any backup_manifest that parses,
// that leaving out one of its entries gives one that parses and differs
// only by that entry.
func FuzzCopyPGManifestWithout(f *testing.F) {
	f.Add([]byte(pgBodyMap), uint16(1))
	f.Add([]byte(pgBodyV2), uint16(0))
	f.Add([]byte("{\"Files\":[{\"Path\":\"a\",\"Size\":0}],\"WAL-Ranges\":[],\"PostgreSQL-Backup-Manifest-Version\":1}\n"), uint16(0))
	f.Fuzz(func(t *testing.T, body []byte, pick uint16) {
		if len(body) == 0 || body[len(body)-1] != '\n' {
			body = append(bytes.Clone(body), '\n')
		}
		in := pgSeal(string(body))
		m, err := ParsePGManifest(in)
		if err != nil || len(m.Files) == 0 {
			return
		}
		path := m.Files[int(pick)%len(m.Files)].Path
		var out bytes.Buffer
		n, err := CopyPGManifestWithout(&out, bytes.NewReader(in), int64(len(in)), path)
		if err != nil {
			if strings.Contains(err.Error(), "listed twice") {
				return
			}
			t.Fatalf("CopyPGManifestWithout(%q): %v", path, err)
		}
		checkWithout(t, in, out.Bytes(), path)
		if n != len(m.Files)-1 {
			t.Errorf("%d entries, want %d", n, len(m.Files)-1)
		}
	})
}
