// Package retry wraps any providers.Store with the one retry policy of
// pgstow: failures a provider marked transient (throttling, 5xx, timeouts,
// resets) are retried with exponential backoff and full jitter within a
// total time budget per operation, replaying upload bodies from the start
// and resuming interrupted downloads where they stopped. Everything else
// (missing objects, access denied, checksum mismatches) fails at once.
// Providers keep their SDK's own retries off, so there is exactly one
// place that decides, and one budget.
package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/pgstow/pgstow/providers"
)

// Policy bounds the retries of one operation.
type Policy struct {
	// Budget is the longest time one operation may spend retrying
	// (default 2 minutes). The first attempt is always made.
	Budget time.Duration
	// Initial and Max bound the backoff between attempts (defaults 100 ms
	// and 10 s); each wait is uniformly random up to the current bound,
	// which doubles every attempt.
	Initial, Max time.Duration
}

func (p Policy) withDefaults() Policy {
	if p.Budget <= 0 {
		p.Budget = 2 * time.Minute
	}
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 10 * time.Second
	}
	return p
}

// Store is a providers.Store that retries transient failures.
type Store struct {
	inner   providers.Store
	policy  Policy
	log     *slog.Logger
	retries atomic.Int64
}

// Wrap returns s with retries. log may be nil.
func Wrap(s providers.Store, p Policy, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{inner: s, policy: p.withDefaults(), log: log}
}

// Retries is the number of retries made so far, for metrics.
func (s *Store) Retries() int64 { return s.retries.Load() }

// Unwrap returns the wrapped store.
func (s *Store) Unwrap() providers.Store { return s.inner }

// do runs op until it succeeds, fails permanently, or the budget is spent.
func (s *Store) do(ctx context.Context, what string, op func() error) error {
	deadline := time.Now().Add(s.policy.Budget)
	bound := s.policy.Initial
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || !errors.Is(err, providers.ErrTransient) || ctx.Err() != nil {
			return err
		}
		wait := time.Duration(rand.Int64N(int64(bound) + 1))
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%s: gave up after %d attempts in %s: %w", what, attempt, s.policy.Budget, err)
		}
		s.retries.Add(1)
		s.log.Debug("retrying", "op", what, "attempt", attempt, "wait", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		bound = min(2*bound, s.policy.Max)
	}
}

// Put retries the whole upload, rewinding the body each time.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts providers.PutOptions) error {
	first := true
	return s.do(ctx, "put "+key, func() error {
		if !first {
			if _, err := body.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("put %s: rewind body for a retry: %w", key, err)
			}
		}
		first = false
		return s.inner.Put(ctx, key, body, size, opts)
	})
}

// Get retries opening, and the returned reader resumes from where it was
// after a transient failure mid-read, with a ranged Get of the rest.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := s.do(ctx, "get "+key, func() error {
		var err error
		rc, err = s.inner.Get(ctx, key, offset, length)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &resumingReader{s: s, ctx: ctx, key: key, offset: offset, length: length, rc: rc}, nil
}

type resumingReader struct {
	s      *Store
	ctx    context.Context
	key    string
	offset int64 // next byte to read
	length int64 // bytes left, < 0 for "to the end"
	rc     io.ReadCloser
	failed int // consecutive resumes without progress
}

func (r *resumingReader) Read(p []byte) (int, error) {
	if r.length == 0 {
		return 0, io.EOF
	}
	if r.length > 0 && int64(len(p)) > r.length {
		p = p[:r.length]
	}
	n, err := r.rc.Read(p)
	r.offset += int64(n)
	if r.length > 0 {
		r.length -= int64(n)
	}
	if n > 0 {
		r.failed = 0
	}
	if err == nil || errors.Is(err, io.EOF) {
		if errors.Is(err, io.EOF) && r.length > 0 {
			// The stream ended before the bytes asked for: the
			// object is shorter than the range (a length past the end
			// is allowed) or a cut connection looked like a clean
			// end. Objects are immutable, so their size tells.
			if info, serr := r.s.Stat(r.ctx, r.key); serr == nil && r.offset >= info.Size {
				r.length = 0
				return n, io.EOF
			}
			err = providers.MarkTransient(io.ErrUnexpectedEOF)
		} else {
			return n, err
		}
	}
	if !errors.Is(err, providers.ErrTransient) || r.failed >= 10 {
		return n, err
	}
	r.failed++
	r.rc.Close()
	rerr := r.s.do(r.ctx, "resume get "+r.key, func() error {
		var err error
		r.rc, err = r.s.inner.Get(r.ctx, r.key, r.offset, r.length)
		return err
	})
	if rerr != nil {
		r.rc = io.NopCloser(eofReader{})
		return n, rerr
	}
	r.s.retries.Add(1)
	return n, nil
}

func (r *resumingReader) Close() error { return r.rc.Close() }

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// Stat retries.
func (s *Store) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	var info providers.ObjectInfo
	err := s.do(ctx, "stat "+key, func() error {
		var err error
		info, err = s.inner.Stat(ctx, key)
		return err
	})
	return info, err
}

// Delete retries; a retry that finds the object gone reports ErrNotExist,
// which callers deleting garbage treat as done.
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.do(ctx, "delete "+key, func() error { return s.inner.Delete(ctx, key) })
}

// List restarts a listing that failed transiently, skipping what was
// already yielded (keys come in order).
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		last, started := "", false
		deadline := time.Now().Add(s.policy.Budget)
		bound := s.policy.Initial
		for {
			var failure error
			for info, err := range s.inner.List(ctx, prefix) {
				if err != nil {
					failure = err
					break
				}
				if started && info.Key <= last {
					continue
				}
				last, started = info.Key, true
				if !yield(info, nil) {
					return
				}
			}
			if failure == nil {
				return
			}
			if !errors.Is(failure, providers.ErrTransient) || ctx.Err() != nil || time.Now().After(deadline) {
				yield(providers.ObjectInfo{}, failure)
				return
			}
			s.retries.Add(1)
			wait := time.Duration(rand.Int64N(int64(bound) + 1))
			select {
			case <-ctx.Done():
				yield(providers.ObjectInfo{}, ctx.Err())
				return
			case <-time.After(wait):
			}
			bound = min(2*bound, s.policy.Max)
		}
	}
}

// String names the wrapped store.
func (s *Store) String() string { return s.inner.String() }

// Close closes the wrapped store.
func (s *Store) Close() error { return s.inner.Close() }

var _ providers.Locker = (*Store)(nil)

// locker returns the wrapped store's Locker, or ErrLockUnsupported.
func (s *Store) locker(what string) (providers.Locker, error) {
	l, ok := providers.AsLocker(s.inner)
	if !ok {
		return nil, fmt.Errorf("%s in %s: %w", what, s.inner, providers.ErrLockUnsupported)
	}
	return l, nil
}

// Retention retries the wrapped store's; a store that cannot lock
// answers ErrLockUnsupported.
func (s *Store) Retention(ctx context.Context, key string) (providers.Retention, error) {
	l, err := s.locker("retention of " + key)
	if err != nil {
		return providers.Retention{}, err
	}
	var r providers.Retention
	err = s.do(ctx, "retention of "+key, func() error {
		var err error
		r, err = l.Retention(ctx, key)
		return err
	})
	return r, err
}

// ExtendRetention retries the wrapped store's: extending is idempotent.
func (s *Store) ExtendRetention(ctx context.Context, key string, r providers.Retention) error {
	l, err := s.locker("extend the retention of " + key)
	if err != nil {
		return err
	}
	return s.do(ctx, "extend the retention of "+key, func() error { return l.ExtendRetention(ctx, key, r) })
}

// LockConfig retries the wrapped store's.
func (s *Store) LockConfig(ctx context.Context) (providers.LockConfig, error) {
	l, err := s.locker("lock configuration")
	if err != nil {
		return providers.LockConfig{}, err
	}
	var c providers.LockConfig
	err = s.do(ctx, "lock configuration", func() error {
		var err error
		c, err = l.LockConfig(ctx)
		return err
	})
	return c, err
}
