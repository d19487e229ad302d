package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// wholeEncode is the encoding as it was before EncodeTo streamed it:
// MarshalIndent of the whole backup. EncodeTo must write the same bytes,
// so manifests stay byte-for-byte what earlier versions wrote.
func wholeEncode(b *Backup) ([]byte, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	body, err := json.MarshalIndent(b, "", " ")
	if err != nil {
		return nil, err
	}
	body, ok := bytes.CutSuffix(body, []byte("\n}"))
	if !ok {
		return nil, errors.New("unexpected JSON layout")
	}
	out := append(bytes.Clone(body), ",\n"...)
	sum := sha256.Sum256(out)
	return fmt.Appendf(out, " %q: %q\n}\n", checksumKey, hex.EncodeToString(sum[:])), nil
}

func TestEncodeToMatchesWholeEncoding(t *testing.T) {
	odd := func(b *Backup) {
		b.Files[0].Path = "base/1/<&>\"q\"\u2028\x01é\xff"
		b.Files[3].LinkTarget = "/srv/ts \u00e9"
		b.Label = "\t\n"
	}
	for _, tc := range []struct {
		name string
		edit func(*Backup)
	}{
		{"as tested", func(*Backup) {}},
		{"odd strings", odd},
		{"one file", func(b *Backup) { b.Files = b.Files[2:3]; b.Totals.Files = 1 }},
		{"many files", func(b *Backup) {
			for i := range 1000 {
				f := b.Files[4]
				f.Path = fmt.Sprintf("PG_17_202406281/5/%d", 20000+i)
				b.Files = append(b.Files, f)
			}
			b.Totals.Files = len(b.Files)
		}},
		{"no tablespaces, no WAL", func(b *Backup) { b.Tablespaces = nil; b.WAL = []WALSegment{} }},
		{"no chunk CRCs (older manifests)", func(b *Backup) {
			for i := range b.Archives {
				for j := range b.Archives[i].Chunks {
					b.Archives[i].Chunks[j].StoredCRC32C = nil
				}
			}
		}},
		{"every chunk CRC", func(b *Backup) { b.Archives[0].Chunks[1].StoredCRC32C = crcOf(0xffffffff) }},
		{"no file sha256 (older manifests)", func(b *Backup) { b.Files[2].SHA256 = "" }},
		{"file sha256 without crc32c", func(b *Backup) { b.Files[4].SHA256 = chunkID("zero crc") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := testBackup()
			tc.edit(b)
			want, err := wholeEncode(b)
			if err != nil {
				t.Fatalf("reference encoding: %v", err)
			}
			var buf bytes.Buffer
			n, sum, err := EncodeTo(&buf, b)
			if err != nil {
				t.Fatalf("EncodeTo: %v", err)
			}
			if got := buf.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("EncodeTo differs from the whole encoding:\n%s\n--- want\n%s", got, want)
			}
			if n != int64(len(want)) || sum != sha256.Sum256(want) {
				t.Fatalf("EncodeTo returned n=%d sum=%x, want %d and %x", n, sum, len(want), sha256.Sum256(want))
			}
			if _, err := Decode(buf.Bytes()); err != nil {
				t.Fatalf("Decode(EncodeTo): %v", err)
			}
		})
	}
}

// A failing writer fails the encoding with its error, and an invalid
// backup writes nothing.
func TestEncodeToErrors(t *testing.T) {
	boom := errors.New("disk full")
	if _, _, err := EncodeTo(errWriter{boom}, testBackup()); !errors.Is(err, boom) {
		t.Fatalf("failing writer: got %v, want %v", err, boom)
	}
	b := testBackup()
	b.ID = "yesterday"
	var buf bytes.Buffer
	if _, _, err := EncodeTo(&buf, b); err == nil || buf.Len() != 0 {
		t.Fatalf("invalid backup: err %v, %d bytes written", err, buf.Len())
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// FuzzEncodeTo checks EncodeTo against the whole encoding for arbitrary
// paths, link targets and labels (JSON escaping is where they could part),
// chunk CRCs, present or not, and file SHA-256s (the validator refuses
// all but well-formed ones, on both sides).
func FuzzEncodeTo(f *testing.F) {
	f.Add("base/1/1259", "/srv/ts1", "nightly", uint32(0), true, chunkID("x"))
	f.Add("a<b>&\"\\", "\u2028\u2029", "\xff\xfe", uint32(0xffffffff), false, "")
	f.Fuzz(func(t *testing.T, path, target, label string, crc uint32, known bool, sha string) {
		b := testBackup()
		b.Files[2].Path = path
		b.Files[2].SHA256 = sha
		b.Files[3].LinkTarget = target
		b.Label = label
		b.Archives[0].Chunks[1].StoredCRC32C = nil
		if known {
			b.Archives[0].Chunks[1].StoredCRC32C = &crc
		}
		want, werr := wholeEncode(b)
		var buf bytes.Buffer
		_, _, err := EncodeTo(&buf, b)
		if (err != nil) != (werr != nil) {
			t.Fatalf("EncodeTo error %v, whole encoding error %v", err, werr)
		}
		if err == nil && !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("EncodeTo differs for path %q target %q label %q", path, target, label)
		}
		if err == nil && strings.Count(buf.String(), "\n \"files\": ") != 1 {
			t.Fatalf("files member not found once in:\n%s", buf.String())
		}
	})
}
