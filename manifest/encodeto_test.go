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
		{"incremental", func(b *Backup) { *b = *testIncrementalBackup() }},
		{"block CRCs of every count mod 3", func(b *Backup) {
			b.BlockSize = 1024
			for n := range 8 {
				f := b.Files[4]
				f.Path = fmt.Sprintf("PG_17_202406281/5/%d", 30000+n)
				f.Size = int64(n) * 256
				f.BlockCRC32C = nil
				for i := range (n + 3) / 4 {
					f.BlockCRC32C = append(f.BlockCRC32C, 0x9e3779b9*uint32(i+n))
				}
				b.Files = append(b.Files, f)
			}
			b.Totals.Files = len(b.Files)
		}},
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
// chunk CRCs, present or not, file SHA-256s (the validator refuses all but
// well-formed ones, on both sides), block CRCs of any count (base64's
// groups of three bytes are where they could part) and slices.
func FuzzEncodeTo(f *testing.F) {
	f.Add("base/1/1259", "/srv/ts1", "nightly", uint32(0), true, chunkID("x"), []byte{}, int64(0))
	f.Add("a<b>&\"\\", "\u2028\u2029", "\xff\xfe", uint32(0xffffffff), false, "", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, int64(100))
	f.Fuzz(func(t *testing.T, path, target, label string, crc uint32, known bool, sha string, blocks []byte, cut int64) {
		b := testBackup()
		if len(blocks) > 0 {
			// One value per byte, in a 1 KiB block size, and base.tar's
			// first chunk cut in two slices at cut.
			b.FormatVersion = FormatVersionIncremental
			b.BlockSize = 1024
			b.Files[4].Size = int64(len(blocks)) * 1024
			b.Archives[1].RawSize = 512 + b.Files[4].Size
			b.Archives[1].Chunks[0].RawSize = b.Archives[1].RawSize
			for i, v := range blocks {
				b.Files[4].BlockCRC32C = append(b.Files[4].BlockCRC32C, uint32(v)*0x01010101+uint32(i))
			}
			first := b.Archives[0].Chunks[0]
			a, c := first, first
			a.Length = cut
			c.Offset, c.Length = cut, first.RawSize-cut
			b.Archives[0].Chunks = append([]ChunkRef{a, c}, b.Archives[0].Chunks[1:]...)
			b.Archives[0].StoredSize += first.StoredSize
		}
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
