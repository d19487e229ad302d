package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// WrappedKeyFormatVersion is the version of the wrapped-key objects this
// pgstow writes; readers refuse another major.
const WrappedKeyFormatVersion = "1.0"

// maxWrappedKeySize bounds what DecodeWrappedKey accepts: a wrapped
// 32-byte key is a few hundred bytes (an RSA-4096 wrap, the largest, 512),
// and the object is read whole before anything is trusted.
const maxWrappedKeySize = 64 << 10

// WrappedKey is a copy of a repository's data key wrapped (encrypted) by a
// key held in a KMS. It is stored plain beside pgstow.json, one object per
// wrapping key, so that the data key can be recovered with the KMS alone
// and the wrapping key changed by adding an object, never by rewriting
// pgstow.json (docs/encryption.md).
type WrappedKey struct {
	FormatVersion string `json:"format_version"`
	// KMS is the URI of the wrapping key, as precise as the wrap needs to
	// unwrap it again (Azure: with the key version).
	KMS string `json:"kms"`
	// KeyFingerprint is the fingerprint of the data key inside, the one
	// pgstow.json records; a copy of another key is refused before use.
	KeyFingerprint string `json:"key_fingerprint"`
	// Ciphertext is what the KMS returned, opaque to pgstow.
	Ciphertext []byte    `json:"ciphertext"`
	Created    time.Time `json:"created"`
}

// EncodeWrappedKey returns the object's bytes.
func EncodeWrappedKey(w *WrappedKey) ([]byte, error) {
	if err := validateWrappedKey(w); err != nil {
		return nil, fmt.Errorf("encode wrapped key: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // URIs keep their & and = readable
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("encode wrapped key: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeWrappedKey parses and checks a wrapped-key object.
func DecodeWrappedKey(data []byte) (*WrappedKey, error) {
	if len(data) > maxWrappedKeySize {
		return nil, fmt.Errorf("decode wrapped key: %d bytes, more than a wrapped key can be", len(data))
	}
	if err := peekVersion(data, checkWrappedKeyVersion); err != nil {
		return nil, fmt.Errorf("decode wrapped key: %w", err)
	}
	var w WrappedKey
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("decode wrapped key: %w", err)
	}
	if err := validateWrappedKey(&w); err != nil {
		return nil, fmt.Errorf("decode wrapped key: %w", err)
	}
	return &w, nil
}

func checkWrappedKeyVersion(v string) error {
	major, _, _ := strings.Cut(v, ".")
	if major != "1" {
		return fmt.Errorf("wrapped-key format version %q is not one this pgstow reads (1.x)", v)
	}
	return nil
}

func validateWrappedKey(w *WrappedKey) error {
	switch {
	case checkWrappedKeyVersion(w.FormatVersion) != nil:
		return checkWrappedKeyVersion(w.FormatVersion)
	case w.KMS == "" || !strings.Contains(w.KMS, "://"):
		return fmt.Errorf("invalid kms %q: want the wrapping key's URI", w.KMS)
	case !isLowerHex(w.KeyFingerprint, 16):
		return fmt.Errorf("invalid key_fingerprint %q: want 16 hex digits", w.KeyFingerprint)
	case len(w.Ciphertext) == 0:
		return errors.New("no ciphertext")
	}
	return nil
}
