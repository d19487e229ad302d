package repository

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// KeysPrefix is the prefix of the wrapped copies of an encrypted
// repository's data key (manifest.WrappedKey), stored plain: they are
// read before the data key is known.
const KeysPrefix = "keys/"

// ErrNoWrappedKey is returned when no wrapped copy of the data key could
// be unwrapped: none stored, none by the KMS key asked for, or every KMS
// refused. It matches ErrEncryption too.
var ErrNoWrappedKey = errors.New("no wrapped copy of the data key could be unwrapped")

// KeyWrapper wraps a data key with a key held in a KMS. encryption/kms
// implements it for AWS KMS, Google Cloud KMS and Azure Key Vault; the
// repository knows only this much of it.
type KeyWrapper interface {
	// URI names the wrapping key as it was given.
	URI() string
	// Wrap encrypts dataKey and returns it with the URI that unwraps it,
	// more precise than URI when the KMS needs it (Azure's key version).
	Wrap(ctx context.Context, dataKey []byte) (uri string, wrapped []byte, err error)
	// Unwrap decrypts what Wrap returned.
	Unwrap(ctx context.Context, wrapped []byte) ([]byte, error)
}

// OpenWrapper returns the KeyWrapper of a wrapping key's URI.
type OpenWrapper func(ctx context.Context, uri string) (KeyWrapper, error)

// StoredWrappedKey is a wrapped copy of the data key and its object key.
type StoredWrappedKey struct {
	Key string
	*manifest.WrappedKey
}

// WrappedKeyKey names the wrapped copy made with the key uri: a digest of
// the URI without its query (which holds only the region or endpoint to
// reach it), so that wrapping twice with one key finds the first copy.
func WrappedKeyKey(uri string) string {
	sum := sha256.Sum256([]byte(uriWithoutQuery(uri)))
	return KeysPrefix + hex.EncodeToString(sum[:8]) + ".json"
}

func uriWithoutQuery(uri string) string {
	s, _, _ := strings.Cut(uri, "?")
	return s
}

// SameWrappingKey reports whether a stored copy's URI names the key uri:
// equal but for the query, or uri without the version the copy records
// (azurekv://v.vault.azure.net/keys/k matches …/keys/k/<version>).
func SameWrappingKey(stored, uri string) bool {
	s, u := uriWithoutQuery(stored), strings.TrimSuffix(uriWithoutQuery(uri), "/")
	return s == u || strings.HasPrefix(s, u+"/") && !strings.Contains(s[len(u)+1:], "/")
}

// WrappedKeys returns the wrapped copies of the data key in key order.
// An object that does not decode is returned as an error: it was not
// written by pgstow, and the caller names it.
func WrappedKeys(ctx context.Context, store providers.Store) ([]StoredWrappedKey, error) {
	var out []StoredWrappedKey
	for obj, err := range store.List(ctx, KeysPrefix) {
		if err != nil {
			return nil, fmt.Errorf("list %s of %s: %w", KeysPrefix, store, err)
		}
		data, err := providers.ReadAll(ctx, store, obj.Key)
		if err != nil {
			return nil, fmt.Errorf("read %s of %s: %w", obj.Key, store, err)
		}
		w, err := manifest.DecodeWrappedKey(data)
		if err != nil {
			return nil, fmt.Errorf("%s of %s: %w", obj.Key, store, err)
		}
		out = append(out, StoredWrappedKey{Key: obj.Key, WrappedKey: w})
	}
	return out, nil
}

// UnwrapDataKey recovers the data key of the encrypted repository whose
// configuration is cfg from its wrapped copies, tried in key order (only
// those of the key only, when given), and returns it with the copy that
// gave it. A copy is opened with openURI's URI, never with the address
// (endpoint) it records: whoever can write to the bucket writes the
// copies, and the KMS request carries the host's cloud token. A copy not
// stored under its own key's name (WrappedKeyKey) is skipped. A copy of another data key than cfg's is refused; the caller
// still checks cfg's MAC with the key (Repository.CheckKey). The error,
// when every copy fails, is one line naming each copy and its cause.
func UnwrapDataKey(ctx context.Context, store providers.Store, cfg *manifest.Repo, open OpenWrapper, only string) ([]byte, StoredWrappedKey, error) {
	if cfg.Encryption == nil {
		return nil, StoredWrappedKey{}, fmt.Errorf("%w: %s is not encrypted", ErrEncryption, store)
	}
	all, err := WrappedKeys(ctx, store)
	if err != nil {
		return nil, StoredWrappedKey{}, err
	}
	var causes, others []string
	for _, w := range all {
		if only != "" && !SameWrappingKey(w.KMS, only) {
			others = append(others, w.KMS)
			continue
		}
		var dk []byte
		err := fmt.Errorf("not stored as %s, the name of its KMS key's copy", WrappedKeyKey(w.KMS))
		if w.Key == WrappedKeyKey(w.KMS) {
			dk, err = unwrapOne(ctx, w, cfg.Encryption.KeyFingerprint, func(ctx context.Context, stored string) (KeyWrapper, error) {
				uri, err := openURI(stored, only)
				if err != nil {
					return nil, err
				}
				return open(ctx, uri)
			})
		}
		if err == nil {
			return dk, w, nil
		}
		if ctx.Err() != nil {
			return nil, StoredWrappedKey{}, ctx.Err()
		}
		causes = append(causes, fmt.Sprintf("%s (%s): %v", w.Key, w.KMS, oneLine(err)))
	}
	switch {
	case len(causes) > 0:
		return nil, StoredWrappedKey{}, noKey(fmt.Errorf("%s: %w (key fingerprint %s): %s", store, ErrNoWrappedKey, cfg.Encryption.KeyFingerprint, strings.Join(causes, "; ")))
	case only != "" && len(others) > 0:
		return nil, StoredWrappedKey{}, noKey(fmt.Errorf("%s: %w: none is wrapped by %s, only by %s; give one of those with --kms-key, or the key file with --encryption-key-file",
			store, ErrNoWrappedKey, only, strings.Join(others, ", ")))
	default:
		return nil, StoredWrappedKey{}, noKey(fmt.Errorf("%s: %w: the repository is encrypted (key fingerprint %s) and holds none under %s; pass its key file with --encryption-key-file or PGSTOW_ENCRYPTION_KEY_FILE",
			store, ErrNoWrappedKey, cfg.Encryption.KeyFingerprint, KeysPrefix))
	}
}

// openURI is the URI a stored copy is opened with: its key (the path:
// the key id or name, and for Azure the vault and the key version that
// wrapped it), its AWS region, which picks one of AWS's own hosts, and
// the key ARN an AWS alias named when it was made (key), but no other
// query parameter — an endpoint in a copy may have been planted to
// receive the host's credentials. When pinned (the user's --kms-key,
// which SameWrappingKey has matched to the copy, so the path is the
// user's but for a version) the user's query is taken, endpoint included:
// an endpoint comes only from the user.
func openURI(stored, pinned string) (string, error) {
	path, rawQuery, _ := strings.Cut(stored, "?")
	sq, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", fmt.Errorf("query of %s: %w", stored, err)
	}
	q := url.Values{}
	for _, k := range []string{"region", "key"} {
		if v := sq.Get(k); v != "" {
			q.Set(k, v)
		}
	}
	if pinned != "" {
		_, rawPinned, _ := strings.Cut(pinned, "?")
		pq, err := url.ParseQuery(rawPinned)
		if err != nil {
			return "", fmt.Errorf("query of %s: %w", pinned, err)
		}
		for k, v := range pq {
			q[k] = v
		}
	}
	if len(q) == 0 {
		return path, nil
	}
	return path + "?" + q.Encode(), nil
}

// noKey makes err match ErrEncryption too, as every refusal of a key does.
func noKey(err error) error { return &keyError{err} }

type keyError struct{ err error }

func (e *keyError) Error() string   { return e.err.Error() }
func (e *keyError) Unwrap() []error { return []error{e.err, ErrEncryption} }

// oneLine keeps a KMS's message (some span lines) on one line.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

func unwrapOne(ctx context.Context, w StoredWrappedKey, fingerprint string, open OpenWrapper) ([]byte, error) {
	if w.KeyFingerprint != fingerprint {
		return nil, fmt.Errorf("wraps the data key of fingerprint %s, not this repository's", w.KeyFingerprint)
	}
	kw, err := open(ctx, w.KMS)
	if err != nil {
		return nil, err
	}
	dk, err := kw.Unwrap(ctx, w.Ciphertext)
	if err != nil {
		return nil, err
	}
	key, err := encryption.NewKey(dk)
	if err != nil {
		return nil, fmt.Errorf("unwrapped: %w", err)
	}
	if key.Fingerprint() != fingerprint {
		return nil, fmt.Errorf("unwrapped a key of fingerprint %s, not %s", key.Fingerprint(), fingerprint)
	}
	return dk, nil
}

// AdoptWindow is how recently a copy found at a repository's first use
// must have been stored for InitDataKey to take it as another first use's,
// running at the same time (the store's modification time, so allow for
// clock skew).
const AdoptWindow = 5 * time.Minute

// ErrUnclaimedKey is returned at first use when a copy of the KMS key's
// is stored already, older than AdoptWindow: left by a first use that
// stopped before pgstow.json, or planted with a data key someone knows.
// It matches ErrEncryption too.
var ErrUnclaimedKey = errors.New("a wrapped data key is stored but no pgstow.json names it")

// InitDataKey makes the data key of a repository at its first use: 32
// bytes from crypto/rand, wrapped with w and stored (only if absent)
// before pgstow.json is written, so that a repository never exists whose
// key nobody holds. When the copy of w's key is there already and was
// stored within AdoptWindow (another process is making the repository at
// the same time) its key is unwrapped and used, and that copy returned
// for the caller to log. An older copy is refused: nothing vouches for
// it — its fingerprint is its own claim, and whoever can write to the
// bucket and encrypt with the KMS key could have planted a data key they
// know to read every backup to come. retention is AddWrappedKey's.
func InitDataKey(ctx context.Context, store providers.Store, w KeyWrapper, retention providers.Retention) ([]byte, *StoredWrappedKey, error) {
	dk := make([]byte, encryption.KeySize)
	if _, err := rand.Read(dk); err != nil {
		return nil, nil, fmt.Errorf("make a data key: %w", err)
	}
	_, err := AddWrappedKey(ctx, store, dk, w, retention)
	if !errors.Is(err, providers.ErrExist) {
		return dk, nil, err
	}
	key := WrappedKeyKey(w.URI())
	info, err := store.Stat(ctx, key)
	if err != nil {
		return nil, nil, fmt.Errorf("stat %s of %s: %w", key, store, err)
	}
	if age := time.Since(info.ModTime); age > AdoptWindow {
		return nil, nil, noKey(fmt.Errorf("%w: %s was stored at %s, %s ago, before this first use (a first use that stopped, or a key planted by someone who can write to the bucket); remove %s and run again (if it is locked, use a new prefix)",
			ErrUnclaimedKey, key, info.ModTime.UTC().Format(time.RFC3339), age.Round(time.Second), key))
	}
	data, err := providers.ReadAll(ctx, store, key)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s of %s: %w", key, store, err)
	}
	stored, err := manifest.DecodeWrappedKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s of %s: %w", key, store, err)
	}
	found := StoredWrappedKey{Key: key, WrappedKey: stored}
	dk, err = unwrapOne(ctx, found, stored.KeyFingerprint, func(context.Context, string) (KeyWrapper, error) { return w, nil })
	if err != nil {
		return nil, nil, err
	}
	return dk, &found, nil
}

// AddWrappedKey stores a copy of dataKey wrapped with w, and proves it by
// reading it back and unwrapping it before returning. It fails with
// ErrExist (and stores nothing) when the copy of w's key exists.
// retention, when not zero, locks the copy as it is written: in an
// immutable repository the copies must outlive the backups as surely as
// the chunks do, since deleting every copy of a KMS-only key destroys the
// backups as surely as deleting them.
func AddWrappedKey(ctx context.Context, store providers.Store, dataKey []byte, w KeyWrapper, retention providers.Retention) (StoredWrappedKey, error) {
	key, err := encryption.NewKey(dataKey)
	if err != nil {
		return StoredWrappedKey{}, err
	}
	uri, ct, err := w.Wrap(ctx, dataKey)
	if err != nil {
		return StoredWrappedKey{}, fmt.Errorf("wrap the data key with %s: %w", w.URI(), err)
	}
	obj := WrappedKeyKey(uri)
	wk := &manifest.WrappedKey{
		FormatVersion:  manifest.WrappedKeyFormatVersion,
		KMS:            uri,
		KeyFingerprint: key.Fingerprint(),
		Ciphertext:     ct,
		Created:        time.Now().UTC(),
	}
	data, err := manifest.EncodeWrappedKey(wk)
	if err != nil {
		return StoredWrappedKey{}, err
	}
	if err := store.Put(ctx, obj, bytes.NewReader(data), int64(len(data)), providers.PutOptions{IfAbsent: true, Retention: retention}); err != nil {
		return StoredWrappedKey{}, fmt.Errorf("store %s in %s: %w", obj, store, err)
	}
	back, err := providers.ReadAll(ctx, store, obj)
	if err != nil {
		return StoredWrappedKey{}, fmt.Errorf("read back %s of %s: %w", obj, store, err)
	}
	stored, err := manifest.DecodeWrappedKey(back)
	if err != nil {
		return StoredWrappedKey{}, fmt.Errorf("read back %s of %s: %w", obj, store, err)
	}
	got, err := w.Unwrap(ctx, stored.Ciphertext)
	if err != nil {
		return StoredWrappedKey{}, fmt.Errorf("unwrap %s of %s again: %w", obj, store, err)
	}
	if subtle.ConstantTimeCompare(got, dataKey) != 1 {
		return StoredWrappedKey{}, fmt.Errorf("%s of %s unwraps to another key than was wrapped", obj, store)
	}
	return StoredWrappedKey{Key: obj, WrappedKey: stored}, nil
}
