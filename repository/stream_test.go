package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/encryption"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
)

// streamFixture stores n chunks of distinct content through r and returns
// their references and contents.
func streamFixture(t *testing.T, r *Repository, n int) ([]manifest.ChunkRef, [][]byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 9))
	comp := chunker.NewCompressor()
	var refs []manifest.ChunkRef
	var raws [][]byte
	for i := range n {
		raw := make([]byte, 20<<10+i*1000) // sizes differ: buffers must fit the largest
		for j := range raw {
			if j%3 == 0 {
				raw[j] = byte(rng.IntN(256))
			}
		}
		frame, crc, err := comp.Append(nil, raw)
		if err != nil {
			t.Fatal(err)
		}
		id := r.ChunkID(raw)
		if _, err := r.PutChunk(t.Context(), id, frame, crc); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, manifest.ChunkRef{ID: id, RawSize: int64(len(raw)), StoredSize: int64(len(frame)), StoredCRC32C: &crc, Codec: "lz4"})
		raws = append(raws, raw)
	}
	return refs, raws
}

// streamed is what fn was called with for one chunk.
type streamed struct {
	i   int
	raw []byte
	err error
}

// collect streams refs and records every call of fn, going on past
// errors as verify does.
func streamAll(t *testing.T, r *Repository, refs []manifest.ChunkRef, o StreamOptions) ([]streamed, error) {
	t.Helper()
	var got []streamed
	err := r.StreamChunks(t.Context(), slices.Values(refs), o, func(i int, raw []byte, err error) error {
		got = append(got, streamed{i, bytes.Clone(raw), err})
		return nil
	})
	return got, err
}

// Every chunk comes to fn once, in order, with its content, in a plain and
// an encrypted repository, however many run at once; damage is reported
// on the chunk it hits and the stream goes on.
func TestStreamChunks(t *testing.T) {
	key, err := encryption.ParseKey([]byte(strings.Repeat("ef", 32)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		open func(providers.Store) *Repository
		o    StreamOptions
		// damage alters the store before the stream; want returns the
		// error chunk i must come with (nil: none), and whether its
		// content must come with it.
		damage func(t *testing.T, s providers.Store, refs []manifest.ChunkRef, raws [][]byte)
		want   func(i int) (error, bool)
	}{
		{name: "plain, one at a time", open: New, o: StreamOptions{Concurrency: 1}},
		{name: "plain", open: New, o: StreamOptions{Concurrency: 4, RawBuffers: 2}},
		{name: "encrypted", open: func(s providers.Store) *Repository { return NewEncrypted(s, key) }, o: StreamOptions{Concurrency: 3}},
		{name: "missing chunk", open: New, o: StreamOptions{Concurrency: 3},
			damage: func(t *testing.T, s providers.Store, refs []manifest.ChunkRef, _ [][]byte) {
				if err := s.Delete(t.Context(), ChunkKey(refs[3].ID)); err != nil {
					t.Fatal(err)
				}
			},
			want: func(i int) (error, bool) { return only(i, 3, providers.ErrNotExist), i != 3 }},
		{name: "corrupt chunk", open: New, o: StreamOptions{Concurrency: 3},
			damage: func(t *testing.T, s providers.Store, refs []manifest.ChunkRef, _ [][]byte) {
				k := ChunkKey(refs[2].ID)
				b, err := providers.ReadAll(t.Context(), s, k)
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)/2] ^= 0x55
				if err := s.Put(t.Context(), k, bytes.NewReader(b), int64(len(b)), providers.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			},
			want: func(i int) (error, bool) { return only(i, 2, ErrCorrupt), i != 2 }},
		{name: "another frame, stored CRC checked", open: New, o: StreamOptions{Concurrency: 2, CheckStoredCRC: true, CheckFrames: true},
			damage: reframe(4),
			want:   func(i int) (error, bool) { return only(i, 4, ErrStoredCRC), true }},
		{name: "another frame, stored CRC not checked", open: New, o: StreamOptions{Concurrency: 2},
			damage: reframe(4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := mem.New()
			r := tc.open(store)
			refs, raws := streamFixture(t, r, 9)
			if tc.damage != nil {
				tc.damage(t, store, refs, raws)
			}
			got, err := streamAll(t, r, refs, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(refs) {
				t.Fatalf("fn called %d times for %d chunks", len(got), len(refs))
			}
			for i, g := range got {
				wantErr, wantRaw := error(nil), true
				if tc.want != nil {
					wantErr, wantRaw = tc.want(i)
				}
				switch {
				case g.i != i:
					t.Fatalf("call %d is for chunk %d", i, g.i)
				case (wantErr == nil) != (g.err == nil) || (wantErr != nil && !errors.Is(g.err, wantErr)):
					t.Errorf("chunk %d: error %v, want %v", i, g.err, wantErr)
				case wantRaw && !bytes.Equal(g.raw, raws[i]):
					t.Errorf("chunk %d: content differs", i)
				case !wantRaw && g.raw != nil:
					t.Errorf("chunk %d: content given with error %v", i, g.err)
				}
			}
		})
	}
}

// only is want for chunk bad and nil for the others.
func only(i, bad int, want error) error {
	if i == bad {
		return want
	}
	return nil
}

// reframe stores chunk i as another encoder frames it: the same content,
// other stored bytes.
func reframe(i int) func(t *testing.T, s providers.Store, refs []manifest.ChunkRef, raws [][]byte) {
	return func(t *testing.T, s providers.Store, refs []manifest.ChunkRef, raws [][]byte) {
		b := otherFrame(t, raws[i])
		if err := s.Put(t.Context(), ChunkKey(refs[i].ID), bytes.NewReader(b), int64(len(b)), providers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// gateStore holds the download of one key until the downloads of others
// have finished, so chunks complete out of order.
type gateStore struct {
	providers.Store
	held    string
	release chan struct{}
	others  atomic.Int64
	after   int64 // downloads of other keys that open the gate
}

func (g *gateStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if key == g.held {
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return g.Store.Get(ctx, key, off, n)
	}
	rc, err := g.Store.Get(ctx, key, off, n)
	return closeHook{rc, func() {
		if g.others.Add(1) == g.after {
			close(g.release)
		}
	}}, err
}

type closeHook struct {
	io.ReadCloser
	hook func()
}

func (c closeHook) Close() error {
	err := c.ReadCloser.Close()
	c.hook()
	return err
}

// The first chunk arrives last of a window of three, and still comes to
// fn first.
func TestStreamChunksOutOfOrder(t *testing.T) {
	inner := mem.New()
	refs, raws := streamFixture(t, New(inner), 6)
	g := &gateStore{Store: inner, held: ChunkKey(refs[0].ID), release: make(chan struct{}), after: 2}
	got, err := streamAll(t, New(g), refs, StreamOptions{Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range got {
		if s.i != i || s.err != nil || !bytes.Equal(s.raw, raws[i]) {
			t.Fatalf("call %d: chunk %d, error %v", i, s.i, s.err)
		}
	}
	if len(got) != len(refs) {
		t.Fatalf("%d calls for %d chunks", len(got), len(refs))
	}
}

// An error from fn stops the stream: fn is not called again, and
// StreamChunks returns that error once its goroutines have stopped (the
// synctest bubble fails if one is left blocked).
func TestStreamChunksStops(t *testing.T) {
	errStop := errors.New("stop here")
	for _, tc := range []struct {
		name string
		// at chunk 2, fn either returns errStop or cancels the context.
		cancel bool
		want   error
	}{
		{name: "fn fails", want: errStop},
		{name: "context cancelled", cancel: true, want: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := New(mem.New())
				refs, _ := streamFixture(t, r, 12)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				var calls []int
				err := r.StreamChunks(ctx, slices.Values(refs), StreamOptions{Concurrency: 4}, func(i int, _ []byte, err error) error {
					calls = append(calls, i)
					if err != nil {
						return err
					}
					if i == 2 {
						if tc.cancel {
							cancel()
							return nil
						}
						return errStop
					}
					return nil
				})
				if !errors.Is(err, tc.want) {
					t.Fatalf("StreamChunks: %v, want %v", err, tc.want)
				}
				if !slices.Equal(calls, []int{0, 1, 2}) {
					t.Fatalf("fn called for %v, want 0 1 2", calls)
				}
			})
		})
	}
}

// countingStore records the downloads in flight (from Get to Close), the
// most at once, and the highest chunk position started.
type countingStore struct {
	providers.Store
	pos                     map[string]int
	mu                      sync.Mutex
	inFlight, most, started int
}

func (c *countingStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	c.mu.Lock()
	c.inFlight++
	c.most = max(c.most, c.inFlight)
	c.started = max(c.started, c.pos[key])
	c.mu.Unlock()
	rc, err := c.Store.Get(ctx, key, off, n)
	done := func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}
	if err != nil {
		done()
		return nil, err
	}
	return closeHook{rc, done}, nil
}

// Memory stays within the budget with a slow consumer: at most
// Concurrency downloads, never more than Concurrency chunks ahead of fn,
// and RawBuffers decompressed buffers. In a synctest bubble fn's sleep
// lets the stream run as far ahead as it can, so the bounds are reached,
// not merely respected.
func TestStreamChunksMemory(t *testing.T) {
	for _, o := range []StreamOptions{
		{Concurrency: 4, RawBuffers: 2},
		{Concurrency: 3, RawBuffers: 3},
		{Concurrency: 5, RawBuffers: 1},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				inner := mem.New()
				refs, raws := streamFixture(t, New(inner), 16)
				c := &countingStore{Store: inner, pos: map[string]int{}}
				for i, ref := range refs {
					c.pos[ChunkKey(ref.ID)] = i
				}
				buffers := map[*byte]bool{}
				err := New(c).StreamChunks(t.Context(), slices.Values(refs), o, func(i int, raw []byte, err error) error {
					if err != nil {
						return err
					}
					time.Sleep(time.Second) // the stream runs ahead meanwhile
					c.mu.Lock()
					started := c.started
					c.mu.Unlock()
					if want := min(i+o.Concurrency-1, len(refs)-1); started != want {
						t.Errorf("at chunk %d the stream has started chunk %d, want %d", i, started, want)
					}
					if !bytes.Equal(raw, raws[i]) {
						t.Errorf("chunk %d: content differs", i)
					}
					buffers[&raw[:1][0]] = true
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if c.most > o.Concurrency {
					t.Errorf("%d downloads at once, want at most %d", c.most, o.Concurrency)
				}
				if len(buffers) != o.RawBuffers {
					t.Errorf("%d raw buffers used, want %d", len(buffers), o.RawBuffers)
				}
			})
		})
	}
}

func TestStreamMemoryBudget(t *testing.T) {
	for _, tc := range []struct {
		o    StreamOptions
		want int64
	}{
		{StreamOptions{Concurrency: 8, RawBuffers: 2}, 8*100 + 2*1000},
		{StreamOptions{Concurrency: 2, RawBuffers: 5}, 2*100 + 2*1000}, // no more raw buffers than downloads
		{StreamOptions{Concurrency: 1}, 100 + 1000},
	} {
		if got := tc.o.MemoryBudget(1000, 100); got != tc.want {
			t.Errorf("%+v: budget %d, want %d", tc.o, got, tc.want)
		}
	}
}

// No references: fn is never called and the stream ends at once.
func TestStreamChunksEmpty(t *testing.T) {
	err := New(mem.New()).StreamChunks(t.Context(), slices.Values([]manifest.ChunkRef(nil)), StreamOptions{}, func(int, []byte, error) error {
		t.Error("fn called")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
