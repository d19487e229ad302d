package encryption

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/providers/providertest"
)

const hexKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

func testKey(t *testing.T, s string) *Key {
	t.Helper()
	k, err := ParseKey([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"hex", hexKey, true},
		{"hex with newline", hexKey + "\n", true},
		{"base64", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", true},
		{"short hex", hexKey[:62], false},
		{"long hex", hexKey + "20", false},
		{"passphrase", "correct horse battery staple", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKey([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("ParseKey: %v, want ok %v", err, tc.ok)
			}
			if tc.ok && k.Fingerprint() != testKey(t, hexKey).Fingerprint() {
				t.Errorf("fingerprint %s differs for the same key written otherwise", k.Fingerprint())
			}
		})
	}
}

func TestSealOpen(t *testing.T) {
	k := testKey(t, hexKey)
	other := testKey(t, strings.Repeat("ab", 32))
	plain := []byte("a chunk of a relation file, compressed")
	ct := k.Seal("dir/x", plain)
	if bytes.Contains(ct, plain[:10]) || len(ct) != len(plain)+Overhead {
		t.Fatalf("sealed %d bytes (want %d) or plaintext visible", len(ct), len(plain)+Overhead)
	}
	if got, err := k.Open("dir/x", ct); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open: %q, %v", got, err)
	}
	if bytes.Equal(ct, k.Seal("dir/x", plain)) {
		t.Error("two seals of the same object are equal: the nonce is not random")
	}
	// Every single flipped bit anywhere is caught, as are a truncation, a
	// different name and a different key.
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x10
		if _, err := k.Open("dir/x", bad); !errors.Is(err, ErrTampered) || !errors.Is(err, providers.ErrChecksum) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for name, f := range map[string]func() error{
		"truncated":    func() error { _, err := k.Open("dir/x", ct[:len(ct)-1]); return err },
		"renamed":      func() error { _, err := k.Open("dir/y", ct); return err },
		"other key":    func() error { _, err := other.Open("dir/x", ct); return err },
		"not sealed":   func() error { _, err := k.Open("dir/x", plain); return err },
		"empty object": func() error { _, err := k.Open("dir/x", nil); return err },
	} {
		if err := f(); !errors.Is(err, ErrTampered) {
			t.Errorf("%s: %v, want ErrTampered", name, err)
		}
	}
}

func TestChunkID(t *testing.T) {
	k, other := testKey(t, hexKey), testKey(t, strings.Repeat("ab", 32))
	data := []byte("same content")
	id := k.ChunkID(data)
	switch {
	case !manifest.ValidChunkID(id):
		t.Errorf("%q is not a valid chunk id", id)
	case id != k.ChunkID(bytes.Clone(data)):
		t.Error("chunk ids are not deterministic: deduplication would not work")
	case id == chunker.ID(data):
		t.Error("the keyed id is the plain SHA-256: object names reveal content")
	case id == other.ChunkID(data):
		t.Error("two keys give the same id")
	}
}

func TestStoreConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T) providers.Store { return Wrap(mem.New(), testKey(t, hexKey)) })
}

// TestStoreSealsAtRest: whatever reaches the inner store is sealed, under
// any key (the repository decides what goes through the wrapper); sizes
// are reported as plaintext sizes; tampering underneath is reported as a
// checksum error.
func TestStoreSealsAtRest(t *testing.T) {
	ctx := context.Background()
	inner := mem.New()
	s := Wrap(inner, testKey(t, hexKey))
	secret := []byte("SELECT 'marker-4711' FROM secrets")
	for _, key := range []string{"dir/abc", "dir/manifest.json", "config.json", "any"} {
		if err := s.Put(ctx, key, bytes.NewReader(secret), int64(len(secret)), providers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		raw, err := providers.ReadAll(ctx, inner, key)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("marker-4711")) {
			t.Errorf("%s: stored in the clear", key)
		}
		info, err := s.Stat(ctx, key)
		if err != nil || info.Size != int64(len(secret)) {
			t.Errorf("%s: Stat size %d, %v; want %d", key, info.Size, err, len(secret))
		}
	}
	for info, err := range s.List(ctx, "") {
		if err != nil || info.Size != int64(len(secret)) {
			t.Errorf("List %s: size %d, %v", info.Key, info.Size, err)
		}
	}
	inner.Corrupt("dir/abc", 20)
	if _, err := providers.ReadAll(ctx, s, "dir/abc"); !errors.Is(err, providers.ErrChecksum) {
		t.Errorf("a corrupted sealed object read back as %v", err)
	}
}
