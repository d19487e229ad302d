package gcs

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzPersistedBytes checks the parser of the Range header in GCS's
// answer to a chunk of a resumable upload: it never accepts a count
// outside 0 to 5 TiB, and an accepted header is the one that count
// formats to.
//
//	go test -run '^$' -fuzz '^FuzzPersistedBytes$' -fuzztime 1m ./providers/gcs
func FuzzPersistedBytes(f *testing.F) {
	for _, s := range []string{"", "bytes=0-0", "bytes=0-262143", "bytes=0-", "bytes=1-5", "bytes=0-+5", "bytes=0-05", "bytes=0-99999999999999999999", "bytes=0--1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		n, ok := persistedBytes(h)
		if !ok {
			return
		}
		if n < 0 || n > maxObjectBytes {
			t.Fatalf("persistedBytes(%q) = %d, out of range", h, n)
		}
		if h == "" {
			if n != 0 {
				t.Fatalf("persistedBytes(\"\") = %d", n)
			}
			return
		}
		again, ok := persistedBytes("bytes=0-" + strconv.FormatInt(n-1, 10))
		if !ok || again != n {
			t.Fatalf("persistedBytes(%q) = %d, but the canonical form gives %d, %v", h, n, again, ok)
		}
	})
}

// FuzzParseError checks what an error answer, which may come from any
// proxy, becomes: one printable line of bounded length that keeps the
// status, whatever the body.
//
//	go test -run '^$' -fuzz '^FuzzParseError$' -fuzztime 1m ./providers/gcs
func FuzzParseError(f *testing.F) {
	f.Add(404, []byte(`{"error":{"code":404,"message":"No such object: b/k"}}`))
	f.Add(412, []byte(`{"error":{"errors":[{"message":"conditionNotMet"}]}}`))
	f.Add(403, []byte("<Error><Code>AccessDenied</Code></Error>"))
	f.Add(500, []byte("line\r\nbreak\x00\xff"))
	f.Add(503, []byte(`{"error":"just a string"}`))
	f.Add(599, []byte(strings.Repeat("é", 600)))
	f.Fuzz(func(t *testing.T, code int, body []byte) {
		msg := parseError(code, body).Error()
		if !strings.HasPrefix(msg, strconv.Itoa(code)) {
			t.Fatalf("error %q does not start with the status %d", msg, code)
		}
		if !utf8.ValidString(msg) {
			t.Fatalf("error %q is not valid UTF-8", msg)
		}
		for _, r := range msg {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("error %q holds control character %U", msg, r)
			}
		}
		if len(msg) > maxErrorMessageBytes+len("599 Network Authentication Required: …")+20 {
			t.Fatalf("error of %d bytes", len(msg))
		}
	})
}

// FuzzHashCRC32C checks the parser of X-Goog-Hash: never a panic, and a
// CRC32C found only where the header names one that decodes to four
// bytes, which encodes back to what the header says.
//
//	go test -run '^$' -fuzz '^FuzzHashCRC32C$' -fuzztime 1m ./providers/gcs
func FuzzHashCRC32C(f *testing.F) {
	for _, s := range []string{"crc32c=n03x6A==,md5=1B2M2Y8AsgTpgAmY7PhCfg==", "md5=x, crc32c=AAAAAA==", "crc32c=AAAA", "crc32c=", ","} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		crc, ok := hashCRC32C([]string{h})
		if ok && !strings.Contains(h, "crc32c="+encodeCRC32C(crc)) {
			t.Fatalf("hashCRC32C(%q) = %08x, which the header does not name as %s", h, crc, encodeCRC32C(crc))
		}
	})
}

// FuzzObjectURL checks that any valid key's object name survives the
// trip through a request URL: the name is one path segment, which
// decodes to the name again.
//
//	go test -run '^$' -fuzz '^FuzzObjectURL$' -fuzztime 1m ./providers/gcs
func FuzzObjectURL(f *testing.F) {
	for _, s := range []string{"a/b", "odd/with space", "odd/percent%20encoded", "odd/question?mark", "odd/hash#tag", "ünï/日本語", "plus+sign", "%zz"} {
		f.Add(s)
	}
	api, err := url.Parse("https://storage.googleapis.com/storage/v1/")
	if err != nil {
		f.Fatal(err)
	}
	s := &Store{api: api, cfg: Config{Bucket: "bucket"}}
	f.Fuzz(func(t *testing.T, name string) {
		raw := s.objectURL(name, url.Values{"alt": {"media"}}).String()
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("objectURL(%q) = %q, which does not parse: %v", name, raw, err)
		}
		const prefix = "/storage/v1/b/bucket/o/"
		seg, ok := strings.CutPrefix(u.EscapedPath(), prefix)
		if !ok || strings.Contains(seg, "/") {
			t.Fatalf("objectURL(%q) = %q: the name is not one segment after %s", name, raw, prefix)
		}
		if got, err := url.PathUnescape(seg); err != nil || got != name {
			t.Fatalf("objectURL(%q) = %q: the name decodes to %q, %v", name, raw, got, err)
		}
		if u.Query().Get("alt") != "media" || u.Host != "storage.googleapis.com" {
			t.Fatalf("objectURL(%q) = %q: host or query lost", name, raw)
		}
	})
}
