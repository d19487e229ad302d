package manifest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIncrementalRoundTrip(t *testing.T) {
	b := testIncrementalBackup()
	data, err := Encode(b)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	for _, want := range []string{
		`"format_version": "2.0"`,
		`"block_size": 8192`,
		`"block_crc32c": "g5IG4w=="`, // 0xe3069283, little-endian
		`"offset": 4096,` + "\n     \"length\": 4096",
		`"parent": "20261122T204651Z"`,
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("encoding lacks %q:\n%s", want, data)
		}
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if diff := cmp.Diff(b, got); diff != "" {
		t.Errorf("Decode(Encode(b)) (-want +got):\n%s", diff)
	}
	if again, err := Encode(got); err != nil || !bytes.Equal(again, data) {
		t.Errorf("Encode(Decode(data)) differs from data (%v)", err)
	}
}

func TestBlockCRCsJSON(t *testing.T) {
	for _, tc := range []struct {
		name    string
		json    string
		want    BlockCRCs
		wantErr string
	}{
		{name: "one", json: `"g5IG4w=="`, want: BlockCRCs{0xe3069283}},
		{name: "three", json: `"AQAAAAIAAAADAAAA"`, want: BlockCRCs{1, 2, 3}},
		{name: "empty", json: `""`, want: nil},
		{name: "null", json: `null`, want: nil},
		{name: "escaped slash", json: `"\/\/\/\/\/w=="`, want: BlockCRCs{0xffffffff}},
		{name: "newline", json: `"g5IG\n4w=="`, wantErr: "line break"},
		{name: "carriage return", json: `"g5IG4w==\r"`, wantErr: "line break"},
		{name: "escaped newline", json: `"g5IG4w=\u000a="`, wantErr: "line break"},
		{name: "not whole values", json: `"AQID"`, wantErr: "not a whole number"},
		{name: "no padding", json: `"g5IG4w"`, wantErr: "illegal base64"},
		{name: "non-zero padding bits", json: `"g5IG4x=="`, wantErr: "illegal base64"},
		{name: "URL alphabet", json: `"_____w=="`, wantErr: "illegal base64"},
		{name: "number", json: `12`, wantErr: "block_crc32c"},
		{name: "array", json: `[1, 2]`, wantErr: "block_crc32c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := BlockCRCs{42} // a decode must replace what was there
			err := got.UnmarshalJSON([]byte(tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("UnmarshalJSON(%s) error = %v, want one containing %q", tc.json, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalJSON(%s): %v", tc.json, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("UnmarshalJSON(%s) (-want +got):\n%s", tc.json, diff)
			}
			if len(got) == 0 {
				return
			}
			back, err := got.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			var again BlockCRCs
			if err := again.UnmarshalJSON(back); err != nil || !cmp.Equal(again, got) {
				t.Fatalf("MarshalJSON gave %s, which reads back as %v, %v", back, again, err)
			}
		})
	}
}

// A line break in block_crc32c is refused by the streaming decoder, not
// skipped.
func TestDecodeRefusesLineBreakInBlockCRCs(t *testing.T) {
	good, err := Encode(testIncrementalBackup())
	if err != nil {
		t.Fatal(err)
	}
	data := reseal(t, good, func(s string) string {
		return strings.Replace(s, `"block_crc32c": "g5IG4w=="`, `"block_crc32c": "g5IG\r\n4w=="`, 1)
	})
	if _, err := Decode(data); err == nil || !strings.Contains(err.Error(), "line break") {
		t.Fatalf("Decode: error = %v, want one about the line break", err)
	}
}
