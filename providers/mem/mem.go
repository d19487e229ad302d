// Package mem is an in-memory providers.Store for unit tests of the
// packages above the providers. It keeps the semantics of the real stores
// (all-or-nothing writes, IfAbsent, checksum checks, paginated listing) so
// that tests against it mean something, and adds helpers to inspect and
// damage what was stored.
package mem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"iter"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

const (
	// listPageSize is how many keys List takes per lock, like one page of
	// a cloud listing: callers see other writers' changes between pages
	// and must not rely on a consistent snapshot.
	listPageSize = 100
	// readBlockBytes is how much Put reads between context checks.
	readBlockBytes = 1 << 20
)

// Store is an in-memory providers.Store, safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	objects  map[string]object
	keys     []string // sorted, so that List can resume after a key
	pageSize int
	// locking is set by NewLocking: the store honours Retention and
	// implements providers.Locker; otherwise it refuses locked writes,
	// as a store without lock support must.
	locking bool
	// now is the store's clock for locks, settable by tests to see
	// locks expire without waiting.
	now func() time.Time
}

// object is a stored object. data is never modified in place once stored,
// so readers can share it without holding the lock.
type object struct {
	data    []byte
	modTime time.Time
	ret     providers.Retention
}

var _ providers.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{objects: make(map[string]object), pageSize: listPageSize, now: time.Now}
}

// NewLocking returns an empty store that can lock objects, like an S3
// bucket with Object Lock (versioned, no default retention): Put honours
// PutOptions.Retention, a locked object can be neither deleted nor
// overwritten until its lock expires (Delete returns a
// *providers.LockedError), and the Locker methods work.
func NewLocking() *Store {
	s := New()
	s.locking = true
	return s
}

// SetClock replaces the clock the store judges locks by, so that tests
// can let locks expire without waiting.
func (s *Store) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// String names the store for messages.
func (s *Store) String() string { return "mem://" }

// Close does nothing; the objects stay readable, which tests may want.
func (s *Store) Close() error { return nil }

// Put reads the whole body into a new buffer, so the caller may reuse its
// own, and stores it only if it is complete, matches the checksum and the
// context is still live.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts providers.PutOptions) error {
	if err := providers.ValidateKey(key); err != nil {
		return fmt.Errorf("put into %s: %w", s, err)
	}
	if size < 0 {
		return fmt.Errorf("put %q into %s: negative size %d", key, s, size)
	}
	data := make([]byte, size)
	for done := int64(0); done < size; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("put %q into %s: %w", key, s, err)
		}
		n, err := io.ReadFull(body, data[done:min(done+readBlockBytes, size)])
		done += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("put %q into %s: body ended after %d of %d bytes: %w", key, s, done, size, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("put %q into %s: read body: %w", key, s, err)
		}
	}
	var extra [1]byte
	switch _, err := io.ReadFull(body, extra[:]); {
	case err == nil:
		return fmt.Errorf("put %q into %s: body is longer than the given size %d", key, s, size)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("put %q into %s: read body: %w", key, s, err)
	}
	if !opts.Retention.IsZero() && !s.locking {
		return fmt.Errorf("put %q into %s: %w", key, s, providers.ErrLockUnsupported)
	}
	if !opts.Retention.IsZero() && !opts.Retention.Mode.Valid() {
		return fmt.Errorf("put %q into %s: unknown lock mode %q", key, s, opts.Retention.Mode)
	}
	if opts.HasCRC32C {
		if crc := crc32.Checksum(data, manifest.Castagnoli); crc != opts.CRC32C {
			return fmt.Errorf("put %q into %s: body has CRC32C %08x, expected %08x: %w", key, s, crc, opts.CRC32C, providers.ErrChecksum)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q into %s: %w", key, s, err)
	}
	if old, ok := s.objects[key]; ok {
		if opts.IfAbsent {
			return fmt.Errorf("put %q into %s: %w", key, s, providers.ErrExist)
		}
		if err := s.lockedLocked(key, old); err != nil {
			return fmt.Errorf("put %q into %s: %w", key, s, err)
		}
	} else {
		i, _ := slices.BinarySearch(s.keys, key)
		s.keys = slices.Insert(s.keys, i, key)
	}
	s.objects[key] = object{data: data, modTime: time.Now(), ret: opts.Retention}
	return nil
}

// lockedLocked returns a LockedError when obj is locked now; s.mu is
// held.
func (s *Store) lockedLocked(key string, obj object) error {
	if !obj.ret.IsZero() && obj.ret.Until.After(s.now()) {
		return &providers.LockedError{Key: key, Until: obj.ret.Until, Mode: obj.ret.Mode}
	}
	return nil
}

// lookup returns the object under key, with errors for the operation op.
func (s *Store) lookup(ctx context.Context, op, key string) (object, error) {
	if err := providers.ValidateKey(key); err != nil {
		return object{}, fmt.Errorf("%s in %s: %w", op, s, err)
	}
	if err := ctx.Err(); err != nil {
		return object{}, fmt.Errorf("%s %q in %s: %w", op, key, s, err)
	}
	s.mu.Lock()
	obj, ok := s.objects[key]
	s.mu.Unlock()
	if !ok {
		return object{}, fmt.Errorf("%s %q in %s: %w", op, key, s, providers.ErrNotExist)
	}
	return obj, nil
}

// Get returns a reader of the requested range of the object as it was
// when Get was called.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, fmt.Errorf("get %q from %s: negative offset %d", key, s, offset)
	}
	obj, err := s.lookup(ctx, "get", key)
	if err != nil {
		return nil, err
	}
	size := int64(len(obj.data))
	start := min(offset, size)
	end := size
	if length >= 0 {
		end = min(start+length, size)
	}
	return io.NopCloser(bytes.NewReader(obj.data[start:end])), nil
}

// Stat reports the object's size and the time it was stored.
func (s *Store) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	obj, err := s.lookup(ctx, "stat", key)
	if err != nil {
		return providers.ObjectInfo{}, err
	}
	return providers.ObjectInfo{Key: key, Size: int64(len(obj.data)), ModTime: obj.modTime}, nil
}

// Delete removes the object.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := providers.ValidateKey(key); err != nil {
		return fmt.Errorf("delete from %s: %w", s, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %q from %s: %w", key, s, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	obj, ok := s.objects[key]
	if !ok {
		return fmt.Errorf("delete %q from %s: %w", key, s, providers.ErrNotExist)
	}
	if err := s.lockedLocked(key, obj); err != nil {
		return fmt.Errorf("delete %q from %s: %w", key, s, err)
	}
	delete(s.objects, key)
	if i, ok := slices.BinarySearch(s.keys, key); ok {
		s.keys = slices.Delete(s.keys, i, i+1)
	}
	return nil
}

// List yields the objects with prefix in key order, a page at a time,
// taking the lock once per page and resuming after the last key yielded,
// as a paginated cloud listing does.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		from := prefix
		for {
			if err := ctx.Err(); err != nil {
				yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, err))
				return
			}
			page := s.page(prefix, from)
			for _, info := range page {
				if !yield(info, nil) {
					return
				}
			}
			if len(page) < s.pageSize {
				return
			}
			// The smallest string after the last key: keys hold no NUL.
			from = page[len(page)-1].Key + "\x00"
		}
	}
}

// page returns up to pageSize objects with prefix whose keys are >= from.
func (s *Store) page(prefix, from string) []providers.ObjectInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearch(s.keys, from)
	var page []providers.ObjectInfo
	for ; i < len(s.keys) && len(page) < s.pageSize && strings.HasPrefix(s.keys[i], prefix); i++ {
		obj := s.objects[s.keys[i]]
		page = append(page, providers.ObjectInfo{Key: s.keys[i], Size: int64(len(obj.data)), ModTime: obj.modTime})
	}
	return page
}

// Corrupt flips every bit of the byte at offset of the stored object, for
// tests of the integrity checks above the store. Readers that already hold
// the object keep the intact copy. A missing key or an offset outside the
// object is a bug in the test and panics.
func (s *Store) Corrupt(key string, offset int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	obj, ok := s.objects[key]
	if !ok {
		panic(fmt.Sprintf("mem: corrupt %q: no such object", key))
	}
	if offset < 0 || offset >= int64(len(obj.data)) {
		panic(fmt.Sprintf("mem: corrupt %q: offset %d outside the object's %d bytes", key, offset, len(obj.data)))
	}
	obj.data = bytes.Clone(obj.data)
	obj.data[offset] ^= 0xff
	s.objects[key] = obj
}

// Keys returns the keys of all stored objects in order.
func (s *Store) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.keys)
}

var _ providers.Locker = (*Store)(nil)

// Retention reports the object's lock; ErrLockUnsupported unless the
// store was made by NewLocking.
func (s *Store) Retention(ctx context.Context, key string) (providers.Retention, error) {
	if !s.locking {
		return providers.Retention{}, fmt.Errorf("retention of %q in %s: %w", key, s, providers.ErrLockUnsupported)
	}
	obj, err := s.lookup(ctx, "retention of", key)
	if err != nil {
		return providers.Retention{}, err
	}
	return obj.ret, nil
}

// ExtendRetention lengthens the object's lock to r.Until, and makes a
// governance lock a compliance one if asked; it never shortens or
// weakens one.
func (s *Store) ExtendRetention(ctx context.Context, key string, r providers.Retention) error {
	if !s.locking {
		return fmt.Errorf("extend the retention of %q in %s: %w", key, s, providers.ErrLockUnsupported)
	}
	if err := providers.ValidateKey(key); err != nil {
		return fmt.Errorf("extend the retention in %s: %w", s, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("extend the retention of %q in %s: %w", key, s, err)
	}
	if r.IsZero() {
		return nil
	}
	if !r.Mode.Valid() {
		return fmt.Errorf("extend the retention of %q in %s: unknown lock mode %q", key, s, r.Mode)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	obj, ok := s.objects[key]
	if !ok {
		return fmt.Errorf("extend the retention of %q in %s: %w", key, s, providers.ErrNotExist)
	}
	if obj.ret.Mode != providers.LockCompliance {
		obj.ret.Mode = r.Mode
	}
	if r.Until.After(obj.ret.Until) {
		obj.ret.Until = r.Until
	}
	s.objects[key] = obj
	return nil
}

// LockConfig says the store can lock (when made by NewLocking), keeps
// versions, and has no default retention; a store made by New says it
// cannot lock, as a bucket without object lock does.
func (s *Store) LockConfig(ctx context.Context) (providers.LockConfig, error) {
	if err := ctx.Err(); err != nil {
		return providers.LockConfig{}, err
	}
	if !s.locking {
		return providers.LockConfig{}, nil // like a bucket without object lock
	}
	return providers.LockConfig{Enabled: true, Versioning: true}, nil
}
