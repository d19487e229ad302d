package retry

import (
	"context"
	"errors"
	"io"
	"iter"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/providers/providertest"
)

// TestConformance runs the providers' suite over the retry layer, as
// pgstow uses every store: on its own over a mem and a file store, where
// it must change nothing, and over a store that fails every other call
// transiently, where its retries must be invisible.
func TestConformance(t *testing.T) {
	fast := Policy{Initial: time.Millisecond, Max: 4 * time.Millisecond}
	for _, tc := range []struct {
		name string
		open func(t *testing.T) providers.Store
	}{
		{"mem", func(*testing.T) providers.Store { return Wrap(mem.New(), Policy{}, nil) }},
		{"file", func(t *testing.T) providers.Store {
			s, err := file.Open(t.Context(), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return Wrap(s, Policy{}, nil)
		}},
		{"mem failing every other call", func(*testing.T) providers.Store { return Wrap(&alternating{Store: mem.New()}, fast, nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) { providertest.Run(t, tc.open) })
	}
}

var errAlternate = providers.MarkTransient(errors.New("503 SlowDown (injected)"))

// alternating fails every other call transiently before it reaches the
// store (a Put after reading half its body, so a retry must rewind it),
// cuts every other reader half-way through its range, and breaks every other listing after
// its first object.
type alternating struct {
	providers.Store
	calls   atomic.Int64
	readers atomic.Int64
}

func (a *alternating) fail() bool { return a.calls.Add(1)%2 == 1 }

func (a *alternating) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	if a.fail() {
		io.CopyN(io.Discard, body, size/2)
		return errAlternate
	}
	return a.Store.Put(ctx, key, body, size, o)
}

func (a *alternating) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if a.fail() {
		return nil, errAlternate
	}
	rc, err := a.Store.Get(ctx, key, off, n)
	if err != nil || a.readers.Add(1)%2 == 0 {
		return rc, err
	}
	info, err := a.Store.Stat(ctx, key)
	if err != nil {
		rc.Close()
		return nil, err
	}
	rest := max(info.Size-off, 0)
	if n >= 0 {
		rest = min(rest, n)
	}
	if rest < 2 {
		return rc, nil // nothing to cut half-way
	}
	return &halfReader{ReadCloser: rc, left: rest / 2}, nil
}

func (a *alternating) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	if a.fail() {
		return providers.ObjectInfo{}, errAlternate
	}
	return a.Store.Stat(ctx, key)
}

func (a *alternating) Delete(ctx context.Context, key string) error {
	if a.fail() {
		return errAlternate
	}
	return a.Store.Delete(ctx, key)
}

func (a *alternating) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	cut := a.fail()
	return func(yield func(providers.ObjectInfo, error) bool) {
		for info, err := range a.Store.List(ctx, prefix) {
			if !yield(info, err) || err != nil {
				return
			}
			if cut {
				yield(providers.ObjectInfo{}, errAlternate)
				return
			}
		}
	}
}

// halfReader fails transiently after left bytes.
type halfReader struct {
	io.ReadCloser
	left int64
}

func (h *halfReader) Read(p []byte) (int, error) {
	if h.left <= 0 {
		return 0, errAlternate
	}
	if int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.ReadCloser.Read(p)
	h.left -= int64(n)
	return n, err
}
