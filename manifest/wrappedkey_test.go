package manifest

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWrappedKeyRoundTrip(t *testing.T) {
	w := &WrappedKey{
		FormatVersion:  WrappedKeyFormatVersion,
		KMS:            "awskms://alias/pgstow?region=eu-west-1&endpoint=http://127.0.0.1:4599",
		KeyFingerprint: "0123456789abcdef",
		Ciphertext:     []byte{1, 2, 3, 0, 255},
		Created:        time.Date(2026, 12, 6, 11, 0, 0, 0, time.UTC),
	}
	data, err := EncodeWrappedKey(w)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "region=eu-west-1&endpoint") {
		t.Errorf("URI escaped in %s", data)
	}
	got, err := DecodeWrappedKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(w, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestDecodeWrappedKeyRefuses(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"not json", "nope", "decode wrapped key"},
		{"future major", `{"format_version":"2.0","kms":"awskms://k","key_fingerprint":"0123456789abcdef","ciphertext":"AQ=="}`, "format version"},
		{"no version", `{"kms":"awskms://k","key_fingerprint":"0123456789abcdef","ciphertext":"AQ=="}`, "format_version"},
		{"no uri", `{"format_version":"1.0","kms":"k","key_fingerprint":"0123456789abcdef","ciphertext":"AQ=="}`, "invalid kms"},
		{"bad fingerprint", `{"format_version":"1.0","kms":"awskms://k","key_fingerprint":"XYZ","ciphertext":"AQ=="}`, "key_fingerprint"},
		{"no ciphertext", `{"format_version":"1.0","kms":"awskms://k","key_fingerprint":"0123456789abcdef"}`, "no ciphertext"},
		{"too large", `{"format_version":"1.0","x":"` + strings.Repeat("a", 70000) + `"}`, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeWrappedKey([]byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeWrappedKey = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func FuzzDecodeWrappedKey(f *testing.F) {
	f.Add([]byte(`{"format_version":"1.0","kms":"awskms://k","key_fingerprint":"0123456789abcdef","ciphertext":"AQ==","created":"2026-12-06T11:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := DecodeWrappedKey(data)
		if err != nil {
			return
		}
		again, err := EncodeWrappedKey(w)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it: %v", data, err)
		}
		if _, err := DecodeWrappedKey(again); err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", again, err)
		}
	})
}
