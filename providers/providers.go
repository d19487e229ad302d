// Package providers defines the object-store interface every repository
// backend implements. It is kept to what S3, GCS and Azure Blob can all do
// natively, so that wrappers (retries, limits, fault injection) compose
// around any backend and the backends themselves stay thin.
package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"net/url"
	"strings"
	"time"
)

// ErrNotExist is returned (wrapped) when an object does not exist. It is
// fs.ErrNotExist so callers can use one check for local and remote stores.
var ErrNotExist = fs.ErrNotExist

// ErrExist is returned (wrapped) by Put with IfAbsent when the key is
// already taken. Content-addressed writers treat it as success.
var ErrExist = fs.ErrExist

// ErrChecksum is returned (wrapped) when the store, or the provider itself,
// found that the bytes it received do not match PutOptions.CRC32C.
var ErrChecksum = errors.New("checksum mismatch")

// ErrTransient marks failures worth retrying: throttling (S3 503 SlowDown,
// 429), other 5xx answers, timeouts and connection resets. Providers mark
// them with MarkTransient and keep their SDK's own retries off, so that
// the one retry layer (providers/retry) decides, within one budget.
var ErrTransient = errors.New("transient store failure")

// ErrAccessDenied is returned (wrapped) when credentials are missing,
// wrong, or not allowed to do what was asked. Never retried.
var ErrAccessDenied = errors.New("access denied")

// ErrNoBucket is returned (wrapped) when the bucket or container the
// repository URL names does not exist. Never retried.
var ErrNoBucket = errors.New("bucket does not exist")

// MarkTransient wraps err so that errors.Is(err, ErrTransient) holds while
// the original error stays reachable with errors.Is/As.
func MarkTransient(err error) error { return markError(err, ErrTransient) }

// markError wraps err, unless nil, so that errors.Is(err, mark) holds
// while its message stays err's own and err stays reachable.
func markError(err, mark error) error {
	if err == nil {
		return nil
	}
	return &markedError{err, mark}
}

type markedError struct{ err, mark error }

func (e *markedError) Error() string   { return e.err.Error() }
func (e *markedError) Unwrap() []error { return []error{e.err, e.mark} }

// PutOptions tunes one Put.
type PutOptions struct {
	// IfAbsent makes the write fail with ErrExist when the key exists, so
	// immutable objects are never overwritten.
	IfAbsent bool
	// CRC32C is the Castagnoli CRC of the body. When HasCRC32C is set the
	// provider makes the store verify it (or verifies it itself) and the
	// write fails with ErrChecksum on a mismatch.
	CRC32C    uint32
	HasCRC32C bool
	// Retention, when not zero, makes the store lock the object until
	// Retention.Until as it is written (never in a second step, so no
	// unlocked object is ever visible). A store that cannot lock fails
	// with ErrLockUnsupported and writes nothing.
	Retention Retention
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Store is a flat namespace of immutable objects addressed by
// slash-separated keys. Keys never start with a slash and never contain
// "." or ".." elements or empty elements.
type Store interface {
	// Put stores exactly size bytes read from body under key, starting at
	// the body's current position, which callers leave at 0: body is an
	// io.ReadSeeker so that a retry can Seek back to 0 and replay it. The
	// object becomes visible atomically and only once complete: a failed or
	// cancelled Put leaves no object behind.
	Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts PutOptions) error
	// Get returns length bytes starting at offset; length < 0 means to the
	// end. An offset at or past the end yields an empty reader.
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Stat returns the object's size and modification time.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List yields the objects whose key starts with prefix, in
	// lexicographic key order, fetching them page by page so that memory
	// does not grow with the number of objects.
	List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error]
	// Delete removes an object; a missing object is ErrNotExist.
	Delete(ctx context.Context, key string) error
	// String names the store for messages, without credentials.
	String() string
	// Close releases the store's resources.
	Close() error
}

// ValidateKey reports whether key is a well-formed object key.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("empty object key")
	}
	if strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return fmt.Errorf("object key %q: must not start or end with a slash", key)
	}
	for _, el := range strings.Split(key, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("object key %q: empty, '.' or '..' element", key)
		}
	}
	if strings.ContainsRune(key, 0) {
		return fmt.Errorf("object key %q: contains NUL", key)
	}
	return nil
}

// ReadAll reads a whole object into memory; for small objects only
// (manifests, configuration).
func ReadAll(ctx context.Context, s Store, key string) ([]byte, error) {
	rc, err := s.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return b, nil
}

// ParseURL splits a repository URL into scheme, bucket/host and prefix and
// rejects forms no provider accepts. Providers interpret the rest.
func ParseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("no repository given: pass --repo URL or set PGSTOW_REPO (e.g. file:///var/backups/pgstow)")
	}
	if strings.Contains(raw, "AccountKey=") || strings.Contains(raw, "SharedAccessSignature=") {
		// Not echoed: it holds a secret.
		return nil, fmt.Errorf("the repository URL looks like an Azure connection string; use azblob://container/prefix and pass the connection string in AZURE_STORAGE_CONNECTION_STRING")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Only the inner error: url.Error quotes the whole input, which
		// may hold a password.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("repository URL does not parse: %w", err)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("repository URL %q has no scheme: use file:///path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix", RedactURL(u))
	}
	return u, nil
}

// RedactURL spells a URL for messages without anything that may be
// secret: the password and the whole query (signatures, endpoints with
// credentials) are left out.
func RedactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = "", false, "", ""
	return c.Redacted()
}
