package encryption

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"iter"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// Wrap returns a store that seals every object on the way in and opens it
// on the way out, binding each to its key (the associated data), so an
// object moved to another key does not open. What is sealed is the
// caller's choice, not the wrapper's: the repository keeps its
// configuration (which says that it is encrypted and with which key) and
// its leases (which hold no data) in the store underneath. Sizes it
// reports are the plaintext sizes, so manifests record and check the same
// numbers with and without encryption. A ranged Get reads and
// authenticates the whole object first: objects are chunks, WAL segments
// and manifests, all held in memory by their readers anyway.
func Wrap(s providers.Store, k *Key) providers.Store { return &store{s: s, k: k} }

type store struct {
	s providers.Store
	k *Key
}

func (e *store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts providers.PutOptions) error {
	plain := make([]byte, size)
	if _, err := io.ReadFull(body, plain); err != nil {
		return fmt.Errorf("put %s: read body: %w", key, err)
	}
	// A longer body than promised must fail, as it does in every store,
	// rather than be cut silently.
	var extra [1]byte
	if n, _ := body.Read(extra[:]); n > 0 {
		return fmt.Errorf("put %s: the body is longer than the %d bytes promised", key, size)
	}
	if opts.HasCRC32C && crc32.Checksum(plain, manifest.Castagnoli) != opts.CRC32C {
		return fmt.Errorf("put %s: %w: the body does not match its CRC32C", key, providers.ErrChecksum)
	}
	ct := e.k.Seal(key, plain)
	opts.CRC32C = crc32.Checksum(ct, manifest.Castagnoli)
	return e.s.Put(ctx, key, bytes.NewReader(ct), int64(len(ct)), opts)
}

func (e *store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	ct, err := providers.ReadAll(ctx, e.s, key)
	if err != nil {
		return nil, err
	}
	plain, err := e.k.Open(key, ct)
	if err != nil {
		return nil, err
	}
	if offset < 0 || offset > int64(len(plain)) {
		offset = int64(len(plain))
	}
	plain = plain[offset:]
	if length >= 0 && length < int64(len(plain)) {
		plain = plain[:length]
	}
	return io.NopCloser(bytes.NewReader(plain)), nil
}

func (e *store) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	info, err := e.s.Stat(ctx, key)
	return plainInfo(info), err
}

func (e *store) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		for info, err := range e.s.List(ctx, prefix) {
			if !yield(plainInfo(info), err) {
				return
			}
		}
	}
}

// plainInfo reports a sealed object's plaintext size; one too short to be
// sealed reports a negative size, which matches no manifest.
func plainInfo(info providers.ObjectInfo) providers.ObjectInfo {
	if info != (providers.ObjectInfo{}) {
		info.Size -= int64(Overhead)
	}
	return info
}

func (e *store) Delete(ctx context.Context, key string) error { return e.s.Delete(ctx, key) }

// Unwrap returns the store underneath, so that providers.AsLocker finds
// its locks: objects keep their keys through encryption, and a lock
// concerns the stored object, not its content.
func (e *store) Unwrap() providers.Store { return e.s }
func (e *store) String() string          { return e.s.String() }
func (e *store) Close() error            { return e.s.Close() }
