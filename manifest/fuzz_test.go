package manifest

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "0/3000028", "0/0300A028", "16/b374d848", "FFFFFFFF/FFFFFFFF", "1/", "x/y", "0/123456789"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		back, err := ParseLSN(l.String())
		if err != nil || back != l {
			t.Fatalf("ParseLSN(%q) = %v, but ParseLSN(%q) = %v, %v", s, l, l.String(), back, err)
		}
		text, _ := l.MarshalText()
		var u LSN
		if err := u.UnmarshalText(text); err != nil || u != l {
			t.Fatalf("UnmarshalText(MarshalText(%v)) = %v, %v", l, u, err)
		}
	})
}

func FuzzParseSegmentName(f *testing.F) {
	f.Add("000000010000000000000003", uint8(4))
	f.Add("000000010000000100000000", uint8(4))
	f.Add("000000020000000000000003", uint8(10))
	f.Add("000000010000000000000FFF", uint8(0))
	f.Add("0000000100000000000000ff", uint8(4))
	f.Add("00000001.history", uint8(4))
	f.Fuzz(func(t *testing.T, name string, shift uint8) {
		segSize := uint64(1) << (20 + shift%11)
		tli, segno, err := ParseSegmentName(name, segSize)
		if err != nil {
			return
		}
		if back := SegmentName(tli, segno, segSize); back != name {
			t.Fatalf("ParseSegmentName(%q, %d) = %d, %d, but SegmentName gives %q", name, segSize, tli, segno, back)
		}
		// The segment's first byte must map back to the same segment.
		if got := SegmentNo(LSN(segno*segSize), segSize); got != segno {
			t.Fatalf("SegmentNo of the first byte of segment %d = %d", segno, got)
		}
	})
}

// FuzzDecode feeds each input both as it is and with a valid checksum
// appended, since random bytes almost never carry a matching SHA-256 and
// the decoder behind the checksum is what needs exploring.
func FuzzDecode(f *testing.F) {
	good, err := Encode(testBackup())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:bytes.LastIndex(good, []byte("\n \"manifest_sha256\""))+1])
	f.Add([]byte("{\n \"format_version\": \"1.9\",\n \"id\": \"20261123T204651Z\",\n \"wal_segment_size\": 16777216,\n \"extra\": [1],\n"))
	f.Add([]byte("{\n \"format_version\": \"3.0\",\n"))
	f.Add([]byte("{}"))
	incr, err := Encode(testIncrementalBackup())
	if err != nil {
		f.Fatal(err)
	}
	incrCovered := incr[:bytes.LastIndex(incr, []byte("\n \"manifest_sha256\""))+1]
	f.Add(incrCovered)
	f.Add(bytes.Replace(incrCovered, []byte(`"g5IG4w=="`), []byte(`"g5IG\n4w=="`), 1))
	f.Add(bytes.Replace(incrCovered, []byte(`"block_size": 8192`), []byte(`"block_size": 0`), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip(t, data)
		covered := data
		if len(covered) == 0 || covered[len(covered)-1] != '\n' {
			covered = append(bytes.Clone(covered), '\n')
		}
		checkDecodeRoundTrip(t, seal(string(covered)))
	})
}

func checkDecodeRoundTrip(t *testing.T, data []byte) {
	t.Helper()
	b, err := Decode(data)
	if err != nil {
		return
	}
	enc, err := Encode(b)
	if err != nil {
		t.Fatalf("Decode accepted a manifest that Encode refuses: %v\n%s", err, data)
	}
	b2, err := Decode(enc)
	if err != nil {
		t.Fatalf("Decode(Encode(b)): %v\n%s", err, enc)
	}
	if diff := cmp.Diff(b, b2); diff != "" {
		t.Fatalf("Decode(Encode(b)) differs from b (-b +b2):\n%s", diff)
	}
	enc2, err := Encode(b2)
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("Encode is not stable: %v\n%s\n---\n%s", err, enc, enc2)
	}
}

// FuzzParsePGManifest, like FuzzDecode, also tries each input with a valid
// Manifest-Checksum appended.
func FuzzParsePGManifest(f *testing.F) {
	f.Add(pgSeal(pgBodyV2))
	f.Add([]byte(pgBodyV2))
	f.Add([]byte("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{ \"Encoded-Path\": \"00ff\", \"Size\": 1 }\n],\n\"WAL-Ranges\": [\n],\n"))
	f.Add([]byte("{\"Manifest-Checksum\": null}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, pgSeal(string(data))} {
			m, err := ParsePGManifest(in)
			if err != nil {
				continue
			}
			if m.Version != 1 && m.Version != 2 {
				t.Fatalf("ParsePGManifest accepted version %d", m.Version)
			}
			for _, r := range m.WALRanges {
				if r.Start > r.End || r.Timeline == 0 {
					t.Fatalf("ParsePGManifest accepted WAL range %+v", r)
				}
			}
			// A parsed manifest must be usable by CrossCheck without panics.
			_ = CrossCheck(m, nil, nil)
		}
	})
}

// FuzzParseWALHeader: any bytes parse without panicking, and an accepted
// header has a system id and a valid segment size.
func FuzzParseWALHeader(f *testing.F) {
	f.Add(make([]byte, 40))
	seed := make([]byte, 64)
	seed[2] = 2
	seed[24] = 1
	seed[34] = 0
	seed[35] = 1 // 16 MiB
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, ok := ParseWALHeader(data)
		if ok && (h.SystemID == 0 || !ValidSegmentSize(h.SegmentSize)) {
			t.Fatalf("accepted %+v", h)
		}
	})
}
