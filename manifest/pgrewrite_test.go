package manifest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// pgBodyIncr is laid out as PostgreSQL 17 writes the backup_manifest of an
// incremental backup.
const pgBodyIncr = `{ "PostgreSQL-Backup-Manifest-Version": 2,
"System-Identifier": 7441234567890123456,
"Files": [
{ "Path": "backup_label", "Size": 285, "Last-Modified": "2026-11-24 20:46:51 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "01020304" },
{ "Path": "base/5/INCREMENTAL.16384", "Size": 16384, "Last-Modified": "2026-11-24 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "0a0b0c0d" },
{ "Path": "base/5/16385", "Size": 8192, "Last-Modified": "2026-11-24 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "11223344" },
{ "Path": "global/INCREMENTAL.1262", "Size": 12, "Last-Modified": "2026-11-24 20:41:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "55667788" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/5000028", "End-LSN": "0/5000120" }
],
`

// incrementalEdit is the edit an incremental backup makes: INCREMENTAL.<name>
// becomes <name> with a size and CRC from sizes, backup_label too.
func incrementalEdit(sizes map[string]int64) func(PGFile) (PGFileEdit, error) {
	return func(f PGFile) (PGFileEdit, error) {
		p := strings.Replace(f.Path, "INCREMENTAL.", "", 1)
		size, ok := sizes[p]
		if !ok {
			return PGFileEdit{}, nil
		}
		return PGFileEdit{Replace: true, Path: p, Size: size, CRC32C: crc32.Checksum([]byte(p), Castagnoli)}, nil
	}
}

func TestRewritePGManifest(t *testing.T) {
	keep := func(PGFile) (PGFileEdit, error) { return PGFileEdit{}, nil }
	drop := func(paths ...string) func(PGFile) (PGFileEdit, error) {
		return func(f PGFile) (PGFileEdit, error) {
			for _, p := range paths {
				if f.Path == p {
					return PGFileEdit{Drop: true}, nil
				}
			}
			return PGFileEdit{}, nil
		}
	}
	entry := func(path string, size int64, modified string) string {
		return fmt.Sprintf(`{ "Path": "%s", "Size": %d, "Last-Modified": "%s", "Checksum-Algorithm": "CRC32C", "Checksum": "%s" }`,
			path, size, modified, pgCRC(path))
	}
	compact := `{"PostgreSQL-Backup-Manifest-Version":2,"System-Identifier":1,"files":[{"Path":"a","Size":1} , {"Path":"b","Size":2},{"Path":"c","Size":3}],` + "\n" + `"WAL-Ranges":[],` + "\n"
	for _, tc := range []struct {
		name  string
		in    []byte
		edit  func(PGFile) (PGFileEdit, error)
		want  []byte
		files int
	}{
		{name: "nothing changed", in: pgSeal(pgBodyIncr), edit: keep, want: pgSeal(pgBodyIncr), files: 4},
		{name: "upper-case checksum", in: upperChecksum(pgSeal(pgBodyIncr)), edit: keep, want: pgSeal(pgBodyIncr), files: 4},
		{
			name: "incremental files made whole, backup_label rewritten",
			in:   pgSeal(pgBodyIncr),
			edit: incrementalEdit(map[string]int64{"backup_label": 227, "base/5/16384": 5 * 8192, "global/1262": 8192}),
			want: pgSeal(strings.NewReplacer(
				`{ "Path": "backup_label", "Size": 285, "Last-Modified": "2026-11-24 20:46:51 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "01020304" }`,
				entry("backup_label", 227, "2026-11-24 20:46:51 GMT"),
				`{ "Path": "base/5/INCREMENTAL.16384", "Size": 16384, "Last-Modified": "2026-11-24 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "0a0b0c0d" }`,
				entry("base/5/16384", 5*8192, "2026-11-24 20:40:00 GMT"),
				`{ "Path": "global/INCREMENTAL.1262", "Size": 12, "Last-Modified": "2026-11-24 20:41:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "55667788" }`,
				entry("global/1262", 8192, "2026-11-24 20:41:00 GMT"),
			).Replace(pgBodyIncr)),
			files: 4,
		},
		{
			name:  "first entry dropped: the next one loses its comma",
			in:    pgSeal(pgBodyIncr),
			edit:  drop("backup_label"),
			want:  pgSeal(strings.Replace(pgBodyIncr, `{ "Path": "backup_label", "Size": 285, "Last-Modified": "2026-11-24 20:46:51 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "01020304" },`+"\n", "", 1)),
			files: 3,
		},
		{
			name:  "middle and last dropped",
			in:    pgSeal(pgBodyIncr),
			edit:  drop("base/5/16385", "global/INCREMENTAL.1262"),
			want:  pgSeal(pgBodyIncr[:strings.Index(pgBodyIncr, ",\n{ \"Path\": \"base/5/16385\"")] + pgBodyIncr[strings.Index(pgBodyIncr, "\n],\n\"WAL-Ranges\""):]),
			files: 2,
		},
		{
			name:  "all dropped",
			in:    pgSeal(pgBodyIncr),
			edit:  drop("backup_label", "base/5/INCREMENTAL.16384", "base/5/16385", "global/INCREMENTAL.1262"),
			want:  pgSeal(pgBodyIncr[:strings.Index(pgBodyIncr, "\n{")] + pgBodyIncr[strings.Index(pgBodyIncr, "\n],\n\"WAL-Ranges\""):]),
			files: 0,
		},
		{
			name:  "another layout",
			in:    pgSeal(compact),
			edit:  drop("a"),
			want:  pgSeal(strings.Replace(compact, `{"Path":"a","Size":1} , `, "  ", 1)),
			files: 2,
		},
		{
			name: "a path PostgreSQL would hex-encode",
			in:   pgSeal(pgBodyIncr),
			edit: func(f PGFile) (PGFileEdit, error) {
				if f.Path != "base/5/16385" {
					return PGFileEdit{}, nil
				}
				return PGFileEdit{Replace: true, Path: "odd\xff\"\n", Size: 1, CRC32C: 0xe3069283}, nil
			},
			want: pgSeal(strings.Replace(pgBodyIncr, `{ "Path": "base/5/16385", "Size": 8192, "Last-Modified": "2026-11-24 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "11223344" }`,
				`{ "Encoded-Path": "6f6464ff220a", "Size": 1, "Last-Modified": "2026-11-24 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "839206e3" }`, 1)),
			files: 4,
		},
		{
			name: "escaped path",
			in:   pgSeal(pgBodyIncr),
			edit: func(f PGFile) (PGFileEdit, error) {
				if f.Path != "base/5/16385" {
					return PGFileEdit{}, nil
				}
				return PGFileEdit{Replace: true, Path: "a\"\\\t\x01é", Size: 1, CRC32C: 0xe3069283}, nil
			},
			want: pgSeal(strings.Replace(pgBodyIncr, `{ "Path": "base/5/16385", "Size": 8192, "Last-Modified": "2026-11-24 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "11223344" }`,
				`{ "Path": "a\"\\\t\u0001é", "Size": 1, "Last-Modified": "2026-11-24 20:40:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "839206e3" }`, 1)),
			files: 4,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			// One byte at a time: the decoder's read-ahead must not matter.
			n, err := RewritePGManifest(iotest.OneByteReader(bytes.NewReader(tc.in)), &out, tc.edit)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(tc.want), out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if n != tc.files {
				t.Errorf("%d entries, want %d", n, tc.files)
			}
			m, err := ParsePGManifest(out.Bytes())
			if err != nil {
				t.Fatalf("the output does not parse: %v", err)
			}
			if len(m.Files) != tc.files {
				t.Errorf("the output parses with %d entries, want %d", len(m.Files), tc.files)
			}
		})
	}
}

// The CRC32C written for a replaced entry reads back as the CRC given, in
// the cross-check's reading.
func TestRewritePGManifestChecksum(t *testing.T) {
	var out bytes.Buffer
	if _, err := RewritePGManifest(strings.NewReader(string(pgSeal(pgBodyIncr))), &out, incrementalEdit(map[string]int64{"base/5/16384": 40960})); err != nil {
		t.Fatal(err)
	}
	m, err := ParsePGManifest(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	f := m.Files[1]
	crc, err := PGChecksumCRC32C(f.Checksum)
	if f.Path != "base/5/16384" || f.Size != 40960 || err != nil || crc != crc32.Checksum([]byte("base/5/16384"), Castagnoli) {
		t.Fatalf("entry %+v (CRC %08x, %v)", f, crc, err)
	}
}

func TestRewritePGManifestErrors(t *testing.T) {
	keep := func(PGFile) (PGFileEdit, error) { return PGFileEdit{}, nil }
	boom := errors.New("no such file")
	replaceAll := func(f PGFile) (PGFileEdit, error) {
		return PGFileEdit{Replace: true, Path: f.Path, Size: 1}, nil
	}
	for _, tc := range []struct {
		name      string
		in        []byte
		edit      func(PGFile) (PGFileEdit, error)
		wantErr   string
		wantIs    error
		wantEmpty bool // nothing but an incomplete copy may be written
	}{
		{name: "wrong checksum", in: flipChecksumDigit(pgSeal(pgBodyIncr)), edit: keep, wantErr: "checksum mismatch", wantIs: ErrChecksumMismatch},
		{name: "damaged body", in: bytes.Replace(pgSeal(pgBodyIncr), []byte(`"Size": 8192`), []byte(`"Size": 8193`), 1), edit: keep, wantIs: ErrChecksumMismatch},
		{name: "SHA256 entry replaced", in: pgSeal(pgBodyV2), edit: replaceAll, wantErr: `file 2 (pg_tblspc/16384/PG_17_202406281/5/16385): checksum algorithm "SHA256", want CRC32C`},
		{name: "entry without checksum replaced", in: pgSeal(strings.Replace(pgBodyV2, `"Checksum-Algorithm": "SHA256", `, `"Checksum-Algorithm": "CRC32C", `, 1)), edit: replaceAll, wantErr: "file 2"},
		{name: "SHA256 entry dropped", in: pgSeal(pgBodyV2), edit: func(f PGFile) (PGFileEdit, error) { return PGFileEdit{Drop: f.ChecksumAlgorithm == "SHA256"}, nil }},
		{name: "edit fails", in: pgSeal(pgBodyIncr), edit: func(PGFile) (PGFileEdit, error) { return PGFileEdit{}, boom }, wantIs: boom, wantErr: "file 0 (backup_label)"},
		{name: "negative size", in: pgSeal(pgBodyIncr), edit: func(f PGFile) (PGFileEdit, error) {
			return PGFileEdit{Replace: true, Path: f.Path, Size: -1}, nil
		}, wantErr: "size -1"},
		{name: "no checksum", in: []byte(pgBodyIncr), edit: keep, wantErr: "Manifest-Checksum"},
		{name: "version 3", in: pgSeal(strings.Replace(pgBodyIncr, `Version": 2`, `Version": 3`, 1)), edit: keep, wantIs: ErrUnsupportedVersion},
		{name: "Files twice", in: pgSeal(strings.Replace(pgBodyIncr, `"WAL-Ranges"`, `"Files": [], "WAL-Ranges"`, 1)), edit: keep, wantErr: "twice"},
		{name: "no Files", in: pgSeal("{ \"PostgreSQL-Backup-Manifest-Version\": 2, \"System-Identifier\": 1,\n\"WAL-Ranges\": [],\n"), edit: keep, wantErr: "no Files"},
		{name: "bad entry", in: pgSeal(strings.Replace(pgBodyIncr, `"Size": 8192`, `"Size": -1`, 1)), edit: keep, wantErr: "negative Size"},
		{name: "not JSON", in: pgSeal("[1,\n"), edit: keep, wantErr: "not a JSON object"},
		{name: "checksum not last", in: []byte(strings.Replace(string(pgSeal(pgBodyIncr)), "\"}\n", "\", \"x\": 1}\n", 1)), edit: keep, wantErr: "not the last member"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := RewritePGManifest(bytes.NewReader(tc.in), &out, tc.edit)
			if tc.wantErr == "" && tc.wantIs == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || (tc.wantIs != nil && !errors.Is(err, tc.wantIs)) {
				t.Fatalf("error = %v, want one containing %q (is %v)", err, tc.wantErr, tc.wantIs)
			}
			if bytes.Contains(out.Bytes(), []byte(pgChecksumKey)) {
				t.Fatalf("a refused manifest was sealed:\n%s", out.Bytes())
			}
		})
	}
}

// TestRewritePGManifestLarge rewrites a manifest of 100,000 entries,
// longer than the sealed reader's window, holding little of it.
func TestRewritePGManifestLarge(t *testing.T) {
	var body strings.Builder
	body.WriteString("{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 1,\n\"Files\": [")
	const n = 100000
	for i := range n {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, "\n{ \"Path\": \"base/5/INCREMENTAL.%d\", \"Size\": 12, \"Last-Modified\": \"2026-11-24 20:40:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" }", 16384+i)
	}
	body.WriteString("\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/5000028\", \"End-LSN\": \"0/5000120\" }\n],\n")
	in := pgSeal(body.String())
	edit := func(f PGFile) (PGFileEdit, error) {
		p, _ := strings.CutPrefix(f.Path, "base/5/INCREMENTAL.")
		return PGFileEdit{Replace: true, Path: "base/5/" + p, Size: 8192, CRC32C: 7}, nil
	}
	var out bytes.Buffer
	r := &maxReadTracker{r: bytes.NewReader(in)}
	got, err := RewritePGManifest(r, &out, edit)
	if err != nil || got != n {
		t.Fatalf("RewritePGManifest = %d, %v", got, err)
	}
	m, err := ParsePGManifest(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != n || m.Files[n-1].Path != fmt.Sprintf("base/5/%d", 16384+n-1) || m.Files[0].Size != 8192 {
		t.Fatalf("%d files, last %+v", len(m.Files), m.Files[len(m.Files)-1])
	}
}

// maxReadTracker is a reader that passes reads through; it exists so the
// large test reads through an io.Reader that is not a *bytes.Reader.
type maxReadTracker struct{ r io.Reader }

func (m *maxReadTracker) Read(p []byte) (int, error) { return m.r.Read(p) }

// FuzzRewritePGManifest: a rewrite succeeds only on a manifest the parser
// accepts, and its output parses as the input's entries with the edits
// made. Inputs are also tried sealed.
func FuzzRewritePGManifest(f *testing.F) {
	f.Add([]byte(pgBodyIncr))
	f.Add([]byte(pgBodyV2))
	f.Add([]byte(pgBodyMap))
	f.Add([]byte(`{"PostgreSQL-Backup-Manifest-Version":2,"System-Identifier":1,"files":[{"Path":"a","Size":1} , {"Path":"b","Size":2}],` + "\n" + `"WAL-Ranges":[],` + "\n"))
	// edit drops entries whose path ends in "1", makes INCREMENTAL.<x> <x>
	// (if checksummed with CRC32C) and keeps the rest.
	edit := func(f PGFile) PGFileEdit {
		switch {
		case strings.HasSuffix(f.Path, "1"):
			return PGFileEdit{Drop: true}
		case strings.Contains(f.Path, "INCREMENTAL.") && f.ChecksumAlgorithm == "CRC32C":
			return PGFileEdit{Replace: true, Path: strings.Replace(f.Path, "INCREMENTAL.", "", 1), Size: int64(len(f.Path)), CRC32C: uint32(len(f.Path))}
		}
		return PGFileEdit{}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, pgSeal(string(data))} {
			var out bytes.Buffer
			n, err := RewritePGManifest(bytes.NewReader(in), &out, func(f PGFile) (PGFileEdit, error) { return edit(f), nil })
			if err != nil {
				continue
			}
			before, err := ParsePGManifest(in)
			if err != nil {
				t.Fatalf("rewrote a manifest the parser refuses (%v):\n%q", err, in)
			}
			after, err := ParsePGManifest(out.Bytes())
			if err != nil {
				t.Fatalf("the rewrite does not parse (%v):\n%q\nfrom\n%q", err, out.Bytes(), in)
			}
			var want []PGFile
			for _, f := range before.Files {
				e := edit(f)
				switch {
				case e.Drop:
					continue
				case e.Replace:
					f.Path, f.Size = e.Path, e.Size
					f.Checksum = hex.EncodeToString(binary.LittleEndian.AppendUint32(nil, e.CRC32C))
				}
				want = append(want, f)
			}
			if want == nil {
				want = []PGFile{}
			}
			before.Files = want
			if diff := cmp.Diff(before, after); diff != "" || n != len(want) {
				t.Fatalf("rewrite of %q: %d entries (-want +got):\n%s", in, n, diff)
			}
		}
	})
}

// TestRewritePGManifestRealPG17 starts from a backup_manifest PostgreSQL
// 17 wrote (testdata), turns some entries into what an incremental backup's
// manifest lists (INCREMENTAL.<name> with other sizes and checksums) and
// rewrites them back with the original sizes and CRCs: the result must be
// the server's manifest byte for byte, checksum included. (PostgreSQL 17
// also accepted a rewritten manifest in UPLOAD_MANIFEST when this was
// written; no client here can run that in a unit test.)
func TestRewritePGManifestRealPG17(t *testing.T) {
	zr, err := os.Open("testdata/pg17-backup_manifest.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	gz, err := gzip.NewReader(zr)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ParsePGManifest(orig)
	if err != nil {
		t.Fatal(err)
	}
	byPath := make(map[string]PGFile)
	for _, f := range want.Files {
		byPath[f.Path] = f
	}
	// The incremental-looking input: every relation file of database 5
	// as INCREMENTAL.<name> of 12 bytes, resealed.
	body := string(orig[:bytes.LastIndex(orig, []byte("\"Manifest-Checksum\""))])
	var renamed int
	for _, f := range want.Files {
		dir, name, ok := strings.Cut(f.Path, "base/5/")
		if !ok || dir != "" || strings.ContainsAny(name, "_.") || name[0] < '1' || name[0] > '9' {
			continue
		}
		old := fmt.Sprintf(`"Path": %q, "Size": %d,`, f.Path, f.Size)
		if strings.Count(body, old) != 1 {
			t.Fatalf("%s: %d entries", f.Path, strings.Count(body, old))
		}
		body = strings.Replace(body, old, fmt.Sprintf(`"Path": "base/5/INCREMENTAL.%s", "Size": 12,`, name), 1)
		renamed++
	}
	if renamed < 100 {
		t.Fatalf("only %d relation files of database 5 in the fixture", renamed)
	}
	in := pgSeal(body)
	var out bytes.Buffer
	var edited int
	n, err := RewritePGManifest(bytes.NewReader(in), &out, func(f PGFile) (PGFileEdit, error) {
		p := strings.Replace(f.Path, "INCREMENTAL.", "", 1)
		if p == f.Path {
			return PGFileEdit{}, nil
		}
		o, ok := byPath[p]
		if !ok {
			return PGFileEdit{}, fmt.Errorf("%s not in the original", p)
		}
		crc, err := PGChecksumCRC32C(o.Checksum)
		if err != nil {
			return PGFileEdit{}, err
		}
		edited++
		return PGFileEdit{Replace: true, Path: p, Size: o.Size, CRC32C: crc}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(want.Files) || edited != renamed {
		t.Errorf("%d entries written, %d edited; want %d and %d", n, edited, len(want.Files), renamed)
	}
	if !bytes.Equal(out.Bytes(), orig) {
		t.Fatalf("the rewrite differs from PostgreSQL's manifest:\n%s", cmp.Diff(string(orig), out.String()))
	}
}
