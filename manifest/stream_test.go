package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// decodeWhole is Decode as it was before DecodeFrom: the whole document in
// memory, checksum, version peek, json.Unmarshal. The streaming decoder
// must accept and refuse exactly what it did.
func decodeWhole(data []byte) (*Backup, error) {
	covered, stored, err := splitChecksum(data, checksumKey)
	if err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	sum := sha256.Sum256(covered)
	if computed := hex.EncodeToString(sum[:]); !strings.EqualFold(stored, computed) {
		return nil, fmt.Errorf("manifest %w: stored %s, computed %s", ErrChecksumMismatch, stored, computed)
	}
	if err := peekVersion(data, checkVersion); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	var b Backup
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("decode manifest %s: %w", b.ID, err)
	}
	return &b, nil
}

// parsePGWhole is ParsePGManifest as it was before ParsePGManifestFrom,
// with one rule added that the streaming parser has: the Files member may
// appear once (json.Unmarshal merged a second list into the first one's
// entries, which a stream no longer holds; PostgreSQL never repeats it).
func parsePGWhole(data []byte) (*PGManifest, error) {
	covered, stored, err := splitChecksum(data, pgChecksumKey)
	if err != nil {
		return nil, fmt.Errorf("parse backup_manifest: %w", err)
	}
	sum := sha256.Sum256(covered)
	if computed := hex.EncodeToString(sum[:]); !strings.EqualFold(stored, computed) {
		return nil, fmt.Errorf("backup_manifest %w: stored %s, computed %s", ErrChecksumMismatch, stored, computed)
	}
	var doc struct {
		pgManifestJSON
		Files *[]pgFileJSON `json:"Files"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse backup_manifest: %w", err)
	}
	if n := countKeys(data, "Files"); n > 1 {
		return nil, errors.New("parse backup_manifest: the Files member appears twice")
	}
	m, err := doc.header()
	if err != nil {
		return nil, err
	}
	if doc.Files == nil {
		return nil, errors.New("parse backup_manifest: missing Files")
	}
	if doc.WALRanges == nil {
		return nil, errors.New("parse backup_manifest: missing WAL-Ranges")
	}
	if n := len(*doc.Files); n > maxCount {
		return nil, fmt.Errorf("parse backup_manifest: %d files", n)
	}
	m.Files = make([]PGFile, 0, len(*doc.Files))
	for i, jf := range *doc.Files {
		f, err := jf.file()
		if err != nil {
			return nil, fmt.Errorf("parse backup_manifest: file %d: %w", i, err)
		}
		m.Files = append(m.Files, f)
	}
	if n := len(*doc.WALRanges); n > maxCount {
		return nil, fmt.Errorf("parse backup_manifest: %d WAL ranges", n)
	}
	m.WALRanges = make([]PGWALRange, 0, len(*doc.WALRanges))
	for i, jr := range *doc.WALRanges {
		switch {
		case jr.Timeline == nil || jr.Start == nil || jr.End == nil:
			return nil, fmt.Errorf("parse backup_manifest: WAL range %d: incomplete", i)
		case *jr.Timeline == 0:
			return nil, fmt.Errorf("parse backup_manifest: WAL range %d: timeline 0", i)
		case *jr.Start > *jr.End:
			return nil, fmt.Errorf("parse backup_manifest: WAL range %d: backwards", i)
		}
		m.WALRanges = append(m.WALRanges, PGWALRange{Timeline: *jr.Timeline, Start: *jr.Start, End: *jr.End})
	}
	return m, nil
}

// countKeys counts the top-level members of a valid JSON object whose key
// json.Unmarshal would match to name.
func countKeys(data []byte, name string) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0
	}
	n := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return n
		}
		if k, _ := tok.(string); strings.EqualFold(k, name) {
			n++
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return n
		}
	}
	return n
}

// readers are the ways a document reaches the streaming decoders.
var readers = []struct {
	name string
	wrap func([]byte) io.Reader
}{
	{"whole", func(b []byte) io.Reader { return bytes.NewReader(b) }},
	{"one byte", func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
	{"data with EOF", func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) }},
}

// checkAgree fails unless the streaming and the whole-document results
// agree: both refuse (with the same sentinels) or both accept the same.
func checkAgree[T any](t *testing.T, data []byte, whole func([]byte) (T, error), stream func(io.Reader) (T, error)) {
	t.Helper()
	want, wantErr := whole(data)
	for _, r := range readers {
		got, err := stream(r.wrap(data))
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%s: streaming error %v, whole-document error %v\n%q", r.name, err, wantErr, data)
		}
		for _, sentinel := range []error{ErrChecksumMismatch, ErrUnsupportedVersion} {
			if errors.Is(err, sentinel) != errors.Is(wantErr, sentinel) {
				t.Fatalf("%s: streaming error %v, whole-document error %v: disagree on %v\n%q", r.name, err, wantErr, sentinel, data)
			}
		}
		if diff := cmp.Diff(want, got); err == nil && diff != "" {
			t.Fatalf("%s: streaming and whole-document results differ (-whole +stream):\n%s", r.name, diff)
		}
	}
}

// FuzzDecodeFrom: DecodeFrom accepts and refuses what the whole-document
// decoder did, and decodes the same. Inputs are also tried sealed, as in
// FuzzDecode.
func FuzzDecodeFrom(f *testing.F) {
	good, err := Encode(testBackup())
	if err != nil {
		f.Fatal(err)
	}
	covered := good[:bytes.LastIndex(good, []byte("\n \"manifest_sha256\""))+1]
	f.Add(good)
	f.Add(covered)
	f.Add(bytes.Replace(covered, []byte(`"files"`), []byte(`"Files": null, "files"`), 1))
	f.Add(bytes.Replace(covered, []byte(`"format_version": "`+FormatVersion+`"`), []byte(`"format_version": "2.0", "pg_version": "x"`), 1))
	f.Add(bytes.Replace(covered, []byte(`"id"`), []byte(`"files": [{"path": "a", "size": 3}], "id"`), 1))
	f.Add([]byte("{\n \"format_version\": \"1.0\"}\n{\n"))
	f.Add([]byte("[]\n"))
	incr, err := Encode(testIncrementalBackup())
	if err != nil {
		f.Fatal(err)
	}
	incrCovered := incr[:bytes.LastIndex(incr, []byte("\n \"manifest_sha256\""))+1]
	f.Add(incrCovered)
	f.Add(bytes.Replace(incrCovered, []byte(`"format_version": "2.0"`), []byte(`"format_version": "1.3"`), 1))
	f.Add(bytes.Replace(incrCovered, []byte(`"g5IG4w=="`), []byte(`"g5IG\r4w=="`), 1))
	f.Add(bytes.Replace(incrCovered, []byte(`"g5IG4w=="`), []byte(`null, "block_crc32c": ""`), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgree(t, data, decodeWhole, DecodeFrom)
		sealed := data
		if len(sealed) == 0 || sealed[len(sealed)-1] != '\n' {
			sealed = append(bytes.Clone(sealed), '\n')
		}
		checkAgree(t, seal(string(sealed)), decodeWhole, DecodeFrom)
		checkWithoutFiles(t, seal(string(sealed)))
	})
}

// FuzzParsePGManifestFrom is FuzzDecodeFrom for PostgreSQL's manifest.
func FuzzParsePGManifestFrom(f *testing.F) {
	f.Add(pgSeal(pgBodyV2))
	f.Add([]byte(pgBodyV2))
	f.Add([]byte(strings.Replace(pgBodyV2, `"Files"`, `"files": null, "Files"`, 1)))
	f.Add([]byte(strings.Replace(pgBodyV2, `"Size": 227`, `"Size": "227"`, 1)))
	f.Add([]byte(strings.Replace(pgBodyV2, `"CRC32C"`, `"crc32c"`, 1)))
	f.Add([]byte("{ \"PostgreSQL-Backup-Manifest-Version\": 3,\n\"Files\": {},\n\"WAL-Ranges\": [],\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgree(t, data, parsePGWhole, ParsePGManifestFrom)
		checkAgree(t, pgSeal(string(data)), parsePGWhole, ParsePGManifestFrom)
	})
}

// checkWithoutFiles: what DecodeFrom accepts, DecodeFromWithoutFiles
// accepts too, and returns the same but for the files.
func checkWithoutFiles(t *testing.T, data []byte) {
	t.Helper()
	want, err := DecodeFrom(bytes.NewReader(data))
	if err != nil {
		return
	}
	got, err := DecodeFromWithoutFiles(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("DecodeFrom accepts, DecodeFromWithoutFiles refuses: %v", err)
	}
	if got.Files != nil {
		t.Fatalf("DecodeFromWithoutFiles kept %d files", len(got.Files))
	}
	want.Files = nil
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("DecodeFromWithoutFiles (-DecodeFrom +got):\n%s", diff)
	}
}

// bigBackup has enough files that its encoding is several windows long.
func bigBackup(n int) *Backup {
	b := testBackup()
	for i := range n {
		b.Files = append(b.Files, File{Path: fmt.Sprintf("base/5/%d", 20000+i), Type: TypeFile, Mode: 0o600, MTime: 1795466811, Archive: 0, Offset: 1536})
	}
	b.Totals.Files = len(b.Files)
	return b
}

func TestDecodeFromLarge(t *testing.T) {
	want := bigBackup(5000)
	data, err := Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 4*tailWindowBytes {
		t.Fatalf("test manifest is %d bytes, want several windows", len(data))
	}
	for _, r := range readers {
		t.Run(r.name, func(t *testing.T) {
			got, err := DecodeFrom(r.wrap(data))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("DecodeFrom (-want +got):\n%s", diff)
			}
		})
	}
	checkWithoutFiles(t, data)
	// A flipped byte anywhere is a checksum mismatch, early or late, and
	// the files, though not kept, are checked as well.
	for _, at := range []int{10, len(data) / 2, len(data) - 200} {
		bad := bytes.Clone(data)
		bad[at] ^= 0x20
		if _, err := DecodeFrom(bytes.NewReader(bad)); !errors.Is(err, ErrChecksumMismatch) {
			t.Errorf("byte %d flipped: error %v, want ErrChecksumMismatch", at, err)
		}
		if _, err := DecodeFromWithoutFiles(bytes.NewReader(bad)); !errors.Is(err, ErrChecksumMismatch) {
			t.Errorf("byte %d flipped: DecodeFromWithoutFiles error %v, want ErrChecksumMismatch", at, err)
		}
	}
}

func TestParsePGManifestFromLarge(t *testing.T) {
	var body strings.Builder
	body.WriteString("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n")
	const n = 5000
	for i := range n {
		sep := ","
		if i == n-1 {
			sep = ""
		}
		fmt.Fprintf(&body, "{ \"Path\": \"base/5/%d\", \"Size\": 0, \"Last-Modified\": \"2026-11-23 20:40:00 GMT\", \"Checksum-Algorithm\": \"crc32c\", \"Checksum\": \"00000000\" }%s\n", i, sep)
	}
	body.WriteString("],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/3000028\", \"End-LSN\": \"0/3000120\" }\n],\n")
	data := pgSeal(body.String())
	m, err := ParsePGManifestFrom(iotest.HalfReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != n || m.Files[n-1].Path != fmt.Sprintf("base/5/%d", n-1) {
		t.Fatalf("got %d files, last %+v", len(m.Files), m.Files[len(m.Files)-1])
	}
	// The algorithm and a run of equal timestamps are shared, not copied.
	a, b := m.Files[0], m.Files[n-1]
	if a.ChecksumAlgorithm != "CRC32C" || unsafe.StringData(a.ChecksumAlgorithm) != unsafe.StringData(b.ChecksumAlgorithm) {
		t.Errorf("ChecksumAlgorithm %q and %q are separate copies", a.ChecksumAlgorithm, b.ChecksumAlgorithm)
	}
	if unsafe.StringData(a.LastModified) != unsafe.StringData(b.LastModified) {
		t.Errorf("Last-Modified %q is held once per file", a.LastModified)
	}
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0x20
	if _, err := ParsePGManifestFrom(bytes.NewReader(bad)); !errors.Is(err, ErrChecksumMismatch) {
		t.Errorf("a flipped byte: error %v, want ErrChecksumMismatch", err)
	}
}

// TestStreamReadError: a failing reader is reported as such, not as a
// corrupt manifest.
func TestStreamReadError(t *testing.T) {
	data, err := Encode(bigBackup(2000))
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("connection reset")
	for _, cut := range []int{0, 100, len(data) / 2, len(data) - 10} {
		r := io.MultiReader(bytes.NewReader(data[:cut]), iotest.ErrReader(boom))
		_, err := DecodeFrom(r)
		if !errors.Is(err, boom) || errors.Is(err, ErrChecksumMismatch) {
			t.Errorf("DecodeFrom cut at %d: error %v, want the read error", cut, err)
		}
		r = io.MultiReader(bytes.NewReader(pgSeal(pgBodyV2)[:min(cut, 200)]), iotest.ErrReader(boom))
		if _, err := ParsePGManifestFrom(r); !errors.Is(err, boom) {
			t.Errorf("ParsePGManifestFrom cut at %d: error %v, want the read error", cut, err)
		}
	}
}

// TestStreamRefusals covers what the fuzz targets find only by luck.
func TestStreamRefusals(t *testing.T) {
	good, err := Encode(testBackup())
	if err != nil {
		t.Fatal(err)
	}
	covered := string(good[:bytes.LastIndex(good, []byte("\n \"manifest_sha256\""))+1])
	pgCovered := pgBodyV2
	tests := []struct {
		name    string
		data    []byte
		pg      bool
		wantErr string
	}{
		{name: "second object after the first", data: seal("{\n \"format_version\": \"1.0\"}\n{\n"), wantErr: "after top-level value"},
		{name: "checksum line beyond the window", data: []byte(covered + strings.Repeat(" ", 2*tailWindowBytes) + ` "manifest_sha256": "` + strings.Repeat("0", 64) + "\"\n}\n"), wantErr: "in the last"},
		{name: "files repeated merges as json.Unmarshal does", data: seal(strings.Replace(covered, `"id"`, `"files": [{"path": "x", "mode": 7}], "id"`, 1))},
		{name: "PG Files twice", data: pgSeal(strings.Replace(pgCovered, `"WAL-Ranges"`, `"Files": [], "WAL-Ranges"`, 1)), pg: true, wantErr: "Files member appears twice"},
		{name: "PG Files not a list", data: pgSeal("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": {\"a\": [1, {}]},\n\"WAL-Ranges\": [],\n"), pg: true, wantErr: `"Files" is an object, want an array`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.pg {
				_, err = ParsePGManifestFrom(bytes.NewReader(tt.data))
			} else {
				_, err = DecodeFrom(bytes.NewReader(tt.data))
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("error %v, want none", err)
				}
				checkAgree(t, tt.data, decodeWhole, DecodeFrom)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// BenchmarkDecodeFrom reads the manifest of a backup of 66,177 files (the
// many-small-files benchmark cluster) whole and without its file records,
// which is what every backup does with the newest one before it starts.
func BenchmarkDecodeFrom(b *testing.B) {
	data, err := Encode(bigBackup(66177))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		decode func(io.Reader) (*Backup, error)
	}{{"whole", DecodeFrom}, {"without files", DecodeFromWithoutFiles}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.decode(bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
