// Package encryption keeps a repository private from whoever can read its
// bucket: every chunk, WAL file and manifest is sealed with AES-256-GCM
// under a key only the user holds, with the object's key as additional
// data (so an object cannot be passed off under another name), and chunk
// ids become HMAC-SHA256 of the content, so object names do not reveal
// it. It is pure apart from the store wrapper, which does no I/O of its
// own.
package encryption

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/pgstow/pgstow/providers"
)

// Algorithm names the scheme in the repository configuration.
const Algorithm = "AES-256-GCM"

// magic starts every sealed object: a version byte after "PGE", so the
// format can change without guessing.
const magic = "PGE1"

// Overhead is how many bytes sealing adds: magic, nonce and tag.
const Overhead = len(magic) + nonceSize + tagSize

const (
	nonceSize = 12
	tagSize   = 16
)

// ErrTampered is returned (wrapped, and matching providers.ErrChecksum)
// when a sealed object fails authentication: it was changed, truncated,
// swapped with another, or sealed with another key.
var ErrTampered = errors.New("authentication failed")

// Key is a repository key with the subkeys derived from it.
type Key struct {
	aead        cipher.AEAD
	idKey       []byte
	macKey      []byte
	fingerprint string
}

// ParseKey reads a key file's content: 32 random bytes written as 64 hex
// digits (openssl rand -hex 32) or in standard base64 (openssl rand
// -base64 32), surrounding whitespace ignored.
func ParseKey(data []byte) (*Key, error) {
	master, err := DecodeKeyFile(data)
	if err != nil {
		return nil, err
	}
	return NewKey(master)
}

// DecodeKeyFile returns the 32 bytes a key file holds (see ParseKey), for
// wrapping them with a KMS key (encryption/kms).
func DecodeKeyFile(data []byte) ([]byte, error) {
	s := strings.TrimSpace(string(data))
	if b, err := hex.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	return nil, errors.New("an encryption key file must hold 32 random bytes as 64 hex digits or in base64; make one with: openssl rand -hex 32")
}

// KeySize is the size of a repository's data key in bytes.
const KeySize = 32

// NewKey makes the key of the 32 bytes master: the bytes of a key file,
// or a data key unwrapped by a KMS, which gives the same key.
func NewKey(master []byte) (*Key, error) {
	if len(master) != KeySize {
		return nil, fmt.Errorf("an encryption key has %d bytes, not %d", len(master), KeySize)
	}
	return newKey(master)
}

// newKey derives independent subkeys for sealing, chunk ids and the
// fingerprint, so that none of them reveals another or the master key.
func newKey(master []byte) (*Key, error) {
	derive := func(info string) ([]byte, error) {
		return hkdf.Key(sha256.New, master, nil, "pgstow "+info, 32)
	}
	enc, err := derive("object encryption v1")
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(enc)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	id, err := derive("chunk id v1")
	if err != nil {
		return nil, err
	}
	mac, err := derive("configuration mac v1")
	if err != nil {
		return nil, err
	}
	fp, err := derive("key fingerprint v1")
	if err != nil {
		return nil, err
	}
	return &Key{aead: aead, idKey: id, macKey: mac, fingerprint: hex.EncodeToString(fp[:8])}, nil
}

// Fingerprint identifies the key in the repository configuration without
// revealing it, so a wrong key is refused before anything is read.
func (k *Key) Fingerprint() string { return k.fingerprint }

// ChunkID is the id of a chunk in an encrypted repository: the keyed hash
// of its content, 64 hex digits like an unkeyed one.
func (k *Key) ChunkID(raw []byte) string {
	m := hmac.New(sha256.New, k.idKey)
	m.Write(raw)
	return hex.EncodeToString(m.Sum(nil))
}

// MAC authenticates the fields of the one object that stays plain, the
// repository configuration, so that changing it is detected too.
func (k *Key) MAC(fields ...string) string {
	m := hmac.New(sha256.New, k.macKey)
	for _, f := range fields {
		fmt.Fprintf(m, "%d:%s;", len(f), f)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Seal encrypts plain as the object named key. A random nonce per object
// keeps the scheme safe for about 2^32 objects per key.
func (k *Key) Seal(key string, plain []byte) []byte {
	out := make([]byte, len(magic)+nonceSize, len(magic)+nonceSize+len(plain)+tagSize)
	copy(out, magic)
	if _, err := rand.Read(out[len(magic):]); err != nil {
		panic("encryption: no randomness: " + err.Error()) // crypto/rand does not fail on Linux
	}
	return k.aead.Seal(out, out[len(magic):], plain, []byte(key))
}

// Open decrypts and authenticates the object named key.
func (k *Key) Open(key string, sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead || string(sealed[:len(magic)]) != magic {
		return nil, tampered(key, "not an encrypted pgstow object")
	}
	nonce := sealed[len(magic) : len(magic)+nonceSize]
	plain, err := k.aead.Open(nil, nonce, sealed[len(magic)+nonceSize:], []byte(key))
	if err != nil {
		return nil, tampered(key, "changed, swapped or sealed with another key")
	}
	return plain, nil
}

func tampered(key, why string) error {
	return &tamperError{fmt.Errorf("%s: %w: %s", key, ErrTampered, why)}
}

type tamperError struct{ err error }

func (e *tamperError) Error() string   { return e.err.Error() }
func (e *tamperError) Unwrap() []error { return []error{e.err, providers.ErrChecksum} }
