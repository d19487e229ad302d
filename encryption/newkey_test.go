package encryption

import (
	"bytes"
	"strings"
	"testing"
)

// A data key unwrapped by a KMS is the same key as the key file holding
// its bytes: same fingerprint, same chunk ids, and each opens what the
// other sealed.
func TestNewKeyIsTheKeyFilesKey(t *testing.T) {
	hexKey := strings.Repeat("5a", 32)
	fromFile, err := ParseKey([]byte(hexKey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := DecodeKeyFile([]byte(hexKey))
	if err != nil {
		t.Fatal(err)
	}
	fromBytes, err := NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	if fromFile.Fingerprint() != fromBytes.Fingerprint() || fromFile.ChunkID([]byte("x")) != fromBytes.ChunkID([]byte("x")) {
		t.Fatal("NewKey and ParseKey derive different keys from one secret")
	}
	plain, err := fromBytes.Open("k", fromFile.Seal("k", []byte("data")))
	if err != nil || !bytes.Equal(plain, []byte("data")) {
		t.Fatalf("open: %q, %v", plain, err)
	}
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := NewKey(make([]byte, n)); err == nil {
			t.Errorf("NewKey of %d bytes: no error", n)
		}
	}
}
