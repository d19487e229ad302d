package repository

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
)

// The repository, not the encryption wrapper, decides what is sealed: the
// configuration and the leases stay plain JSON (a reader must learn from
// the configuration that the repository is encrypted before it has a
// key), and every data object is sealed.
func TestEncryptedRepositoryKeepsConfigAndLeasesPlain(t *testing.T) {
	ctx := t.Context()
	key, err := encryption.ParseKey([]byte(strings.Repeat("cd", 32)))
	if err != nil {
		t.Fatal(err)
	}
	inner := mem.New()
	r := NewEncrypted(inner, key)
	if err := r.Bind(ctx, "7000000000000000001", seg); err != nil {
		t.Fatal(err)
	}
	l, err := r.TakeLease(ctx, LockBackup, LeaseOptions{Command: "backup"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	marker := bytes.Repeat([]byte("marker-4711 "), 1000)
	if _, err := r.PutWAL(ctx, chunker.NewCompressor(), "00000002.history", marker); err != nil {
		t.Fatal(err)
	}
	locks, err := r.Locks(ctx)
	if err != nil || len(locks) != 1 {
		t.Fatalf("locks: %v, %v", locks, err)
	}
	for _, tt := range []struct {
		key   string
		plain bool
	}{
		{RepoKey, true},
		{locks[0].Key, true},
		{WALKey("00000002.history"), false},
	} {
		stored, err := providers.ReadAll(ctx, inner, tt.key)
		if err != nil {
			t.Fatalf("%s: %v", tt.key, err)
		}
		if got := json.Valid(stored); got != tt.plain {
			t.Errorf("%s: stored as plain JSON %v, want %v", tt.key, got, tt.plain)
		}
		if bytes.Contains(stored, []byte("marker-4711")) {
			t.Errorf("%s: data stored in the clear", tt.key)
		}
	}
	// A fresh repository over the same store reads it back with the key.
	again := NewEncrypted(inner, key)
	if err := again.CheckKey(ctx); err != nil {
		t.Fatal(err)
	}
	got, _, err := again.FetchWAL(ctx, "00000002.history")
	if err != nil || !bytes.Equal(got, marker) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	cfg, err := New(inner).Config(ctx)
	if err != nil || cfg.Encryption == nil || cfg.Encryption.Algorithm != encryption.Algorithm {
		t.Fatalf("configuration read without the key: %+v, %v", cfg, err)
	}
}
