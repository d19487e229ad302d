package retry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"iter"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
)

var errFlaky = providers.MarkTransient(errors.New("503 SlowDown"))

// flaky fails the first n calls of each kind with err.
type flaky struct {
	providers.Store
	err                error
	puts, gets, lists  atomic.Int64
	failPuts, failGets int64
	failLists          int64
	cutReadsAfter      int64 // a Get's reader fails transiently after this many bytes (0: never)
	cutReads           atomic.Int64
	maxCuts            int64
}

func (f *flaky) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	if f.puts.Add(1) <= f.failPuts {
		io.CopyN(io.Discard, body, size/2) // a failure half-way through the body
		return f.err
	}
	return f.Store.Put(ctx, key, body, size, o)
}

func (f *flaky) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if f.gets.Add(1) <= f.failGets {
		return nil, f.err
	}
	rc, err := f.Store.Get(ctx, key, off, n)
	if err != nil || f.cutReadsAfter == 0 || f.cutReads.Load() >= f.maxCuts {
		return rc, err
	}
	return &cutReader{rc: rc, left: f.cutReadsAfter, f: f}, nil
}

func (f *flaky) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	call := f.lists.Add(1)
	return func(yield func(providers.ObjectInfo, error) bool) {
		i := 0
		for info, err := range f.Store.List(ctx, prefix) {
			if call <= f.failLists && i == 2 {
				yield(providers.ObjectInfo{}, f.err)
				return
			}
			i++
			if !yield(info, err) {
				return
			}
		}
	}
}

type cutReader struct {
	rc   io.ReadCloser
	left int64
	f    *flaky
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		c.f.cutReads.Add(1)
		return 0, providers.MarkTransient(errors.New("connection reset by peer"))
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.rc.Close() }

func data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestPutRetriesAndReplays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{Store: mem.New(), err: errFlaky, failPuts: 3}
		s := Wrap(f, Policy{}, nil)
		d := data(100000)
		if err := s.Put(t.Context(), "k", bytes.NewReader(d), int64(len(d)), providers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := providers.ReadAll(t.Context(), f.Store, "k")
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("stored %d bytes, %v; want the body replayed whole", len(got), err)
		}
		if f.puts.Load() != 4 || s.Retries() != 3 {
			t.Fatalf("puts %d, retries %d", f.puts.Load(), s.Retries())
		}
	})
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	for _, perm := range []error{providers.ErrAccessDenied, providers.ErrNoBucket, providers.ErrChecksum, providers.ErrExist} {
		f := &flaky{Store: mem.New(), err: perm, failPuts: 100}
		s := Wrap(f, Policy{}, nil)
		err := s.Put(t.Context(), "k", bytes.NewReader([]byte("x")), 1, providers.PutOptions{})
		if !errors.Is(err, perm) || f.puts.Load() != 1 {
			t.Errorf("%v: error %v after %d attempts, want it at once", perm, err, f.puts.Load())
		}
	}
}

func TestBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{Store: mem.New(), err: errFlaky, failPuts: 1 << 40}
		s := Wrap(f, Policy{Budget: 30 * time.Second, Initial: 100 * time.Millisecond, Max: 5 * time.Second}, nil)
		start := time.Now()
		err := s.Put(t.Context(), "k", bytes.NewReader([]byte("x")), 1, providers.PutOptions{})
		took := time.Since(start)
		if !errors.Is(err, providers.ErrTransient) || took > 30*time.Second {
			t.Fatalf("error %v after %s, want a transient failure within the 30 s budget", err, took)
		}
		if f.puts.Load() < 5 {
			t.Fatalf("only %d attempts in the budget", f.puts.Load())
		}
		if _, err := s.Stat(t.Context(), "missing"); !errors.Is(err, providers.ErrNotExist) {
			t.Fatalf("stat of a missing key: %v", err)
		}
	})
}

func TestCancelDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{Store: mem.New(), err: errFlaky, failPuts: 1 << 40}
		s := Wrap(f, Policy{Budget: time.Hour, Initial: time.Minute, Max: time.Minute}, nil)
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			time.Sleep(90 * time.Second)
			cancel()
		}()
		start := time.Now()
		s.Put(ctx, "k", bytes.NewReader([]byte("x")), 1, providers.PutOptions{})
		if d := time.Since(start); d > 2*time.Minute {
			t.Fatalf("returned %s after start, long after the cancel at 90 s", d)
		}
	})
}

func TestGetResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inner := mem.New()
		d := data(1 << 20)
		inner.Put(t.Context(), "k", bytes.NewReader(d), int64(len(d)), providers.PutOptions{})
		tests := []struct {
			off, n int64
		}{{0, -1}, {1000, -1}, {12345, 500000}}
		for _, tt := range tests {
			f := &flaky{Store: inner, err: errFlaky, failGets: 2, cutReadsAfter: 100000, maxCuts: 5}
			s := Wrap(f, Policy{}, nil)
			rc, err := s.Get(t.Context(), "k", tt.off, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			want := d[tt.off:]
			if tt.n >= 0 {
				want = want[:tt.n]
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("get %d+%d: %d bytes, %v; want %d", tt.off, tt.n, len(got), err, len(want))
			}
			if f.cutReads.Load() == 0 {
				t.Fatal("the read was never cut: the test proves nothing")
			}
		}
	})
}

func TestListRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inner := mem.New()
		for _, k := range []string{"a/1", "a/2", "a/3", "a/4", "a/5"} {
			inner.Put(t.Context(), k, bytes.NewReader(nil), 0, providers.PutOptions{})
		}
		f := &flaky{Store: inner, err: errFlaky, failLists: 2}
		s := Wrap(f, Policy{}, nil)
		var keys []string
		for info, err := range s.List(t.Context(), "a/") {
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, info.Key)
		}
		if len(keys) != 5 || keys[0] != "a/1" || keys[4] != "a/5" {
			t.Fatalf("listed %v, want each key once", keys)
		}
	})
}

// earlyEOF ends every reader of a ranged Get cleanly after half its range,
// as a connection closed without an error looks.
type earlyEOF struct {
	providers.Store
	cuts atomic.Int64
}

func (e *earlyEOF) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := e.Store.Get(ctx, key, off, n)
	if err != nil || n < 2 {
		return rc, err
	}
	e.cuts.Add(1)
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, n/2), rc}, nil
}

// TestGetShortRange tells a range that runs past the object's end (its
// bytes, then io.EOF) from a stream that ended early (resumed).
func TestGetShortRange(t *testing.T) {
	d := data(1000)
	for _, tc := range []struct {
		name     string
		off, n   int64
		cut      bool // streams end cleanly half-way
		want     []byte
		wantCuts bool
	}{
		{name: "past the end", off: 990, n: 100, want: d[990:]},
		{name: "at the end", off: 1000, n: 10, want: []byte{}},
		{name: "past the end, cut", off: 700, n: 400, cut: true, want: d[700:], wantCuts: true},
		{name: "within, cut", off: 100, n: 500, cut: true, want: d[100:600], wantCuts: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := mem.New()
			inner.Put(t.Context(), "k", bytes.NewReader(d), int64(len(d)), providers.PutOptions{})
			var store providers.Store = inner
			cuts := &earlyEOF{Store: inner}
			if tc.cut {
				store = cuts
			}
			s := Wrap(store, Policy{Initial: time.Millisecond, Max: time.Millisecond}, nil)
			rc, err := s.Get(t.Context(), "k", tc.off, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("get %d+%d: %d bytes, %v; want %d", tc.off, tc.n, len(got), err, len(tc.want))
			}
			if (cuts.cuts.Load() > 1) != tc.wantCuts { // more than one stream: resumed
				t.Errorf("%d streams opened, want a resume: %v", cuts.cuts.Load(), tc.wantCuts)
			}
		})
	}
}

// flakyLocker fails the first failExtends ExtendRetention calls
// transiently.
type flakyLocker struct {
	*mem.Store
	extends, failExtends atomic.Int64
}

func (f *flakyLocker) ExtendRetention(ctx context.Context, key string, r providers.Retention) error {
	if f.extends.Add(1) <= f.failExtends.Load() {
		return errFlaky
	}
	return f.Store.ExtendRetention(ctx, key, r)
}

func TestLockerForwarded(t *testing.T) {
	ctx := t.Context()
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	ret := providers.Retention{Mode: providers.LockCompliance, Until: until}
	for _, tc := range []struct {
		name  string
		inner providers.Store
		want  error
	}{
		{"locking", &flakyLocker{Store: mem.NewLocking()}, nil},
		{"plain", mem.New(), providers.ErrLockUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f, ok := tc.inner.(*flakyLocker); ok {
				f.failExtends.Store(2)
				if err := f.Put(ctx, "k", bytes.NewReader([]byte("x")), 1, providers.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			s := Wrap(tc.inner, Policy{Initial: time.Millisecond, Max: time.Millisecond}, nil)
			l, ok := providers.AsLocker(s)
			if !ok {
				t.Fatal("AsLocker(retry store) = false")
			}
			if c, err := l.LockConfig(ctx); err != nil || c.Enabled != (tc.want == nil) {
				t.Fatalf("LockConfig = %+v, %v", c, err)
			}
			err := l.ExtendRetention(ctx, "k", ret)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("ExtendRetention: %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ExtendRetention with two transient failures: %v", err)
			}
			if got, err := l.Retention(ctx, "k"); err != nil || got != ret {
				t.Fatalf("Retention = %+v, %v", got, err)
			}
			if s.Retries() != 2 {
				t.Fatalf("%d retries, want 2", s.Retries())
			}
		})
	}
}
