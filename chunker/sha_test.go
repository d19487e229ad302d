package chunker

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pgstow/pgstow/manifest"
)

// TestSplitterHashSHA256: the files the predicate names, and only those,
// get the SHA-256 of their content, wherever the chunk cuts fall and
// however the reader returns the bytes.
func TestSplitterHashSHA256(t *testing.T) {
	sealedBody := content(1, 8192)
	bigBody := content(2, 5000) // larger than the smallest target: cut across chunks
	members := []member{
		dir("global/"),
		file("global/pg_control", sealedBody),
		file("global/1262", content(3, 8192)),
		file("base/1/pg_filenode.map", bigBody),
		file("pg_twophase/000002E5", nil), // empty: the hash of nothing
		dir("pg_twophase/sealed/"),        // a directory is never hashed
		symlink("pg_twophase/link", "/x"),
		file(strings.Repeat("d/", 60)+"pg_filenode.map", content(4, 700)), // long name: PAX or GNU headers
	}
	sealed := func(p string) bool {
		return strings.HasPrefix(p, "pg_twophase/") || strings.HasSuffix(p, "pg_filenode.map") || p == "global/pg_control"
	}
	want := map[string]string{
		"global/pg_control":                          hexSHA256(sealedBody),
		"base/1/pg_filenode.map":                     hexSHA256(bigBody),
		"pg_twophase/000002E5":                       hexSHA256(nil),
		strings.Repeat("d/", 60) + "pg_filenode.map": hexSHA256(content(4, 700)),
	}
	for _, format := range []tar.Format{tar.FormatUnknown, tar.FormatGNU, tar.FormatPAX} {
		data := makeTar(t, format, members...)
		for _, target := range []int{512, 1024, 4096, 64 << 10} {
			for _, oneByte := range []bool{false, true} {
				files := splitHashed(t, data, target, oneByte, sealed)
				if len(files) != len(members) {
					t.Fatalf("format %v target %d: %d files, want %d", format, target, len(files), len(members))
				}
				for _, f := range files {
					if f.SHA256 != want[f.Path] {
						t.Errorf("format %v target %d one byte %v: %s: sha256 %q, want %q", format, target, oneByte, f.Path, f.SHA256, want[f.Path])
					}
				}
			}
		}
		// Without a predicate, nothing is hashed.
		for _, f := range splitHashed(t, data, 1024, false, nil) {
			if f.SHA256 != "" {
				t.Errorf("format %v, no predicate: %s has sha256 %q", format, f.Path, f.SHA256)
			}
		}
	}
}

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// splitHashed splits data with HashSHA256(sealed) set, if not nil, and
// returns the files recorded; the chunks must still be the archive.
func splitHashed(t *testing.T, data []byte, target int, oneByte bool, sealed func(string) bool) []manifest.File {
	t.Helper()
	var r io.Reader = bytes.NewReader(data)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	s := NewSplitter(r, target, 0, func() []byte { return make([]byte, 0, target) })
	if sealed != nil {
		s.HashSHA256(sealed)
	}
	var got []byte
	for {
		c, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, c.Data...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the chunks are not the archive")
	}
	return s.Files()
}
