package uploader

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
)

// makeTar builds a tar with small files and one large one, semi-compressible.
func makeTar(t testing.TB, seed uint64, large int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rng := rand.New(rand.NewPCG(seed, 1))
	add := func(name string, n int) {
		data := make([]byte, n)
		for i := range data {
			if i%4 == 0 {
				data[i] = byte(rng.IntN(256))
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(n), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.WriteHeader(&tar.Header{Name: "base/", Mode: 0o700, Typeflag: tar.TypeDir})
	for i := range 40 {
		add(fmt.Sprintf("base/small%d", i), 1000+i*300)
	}
	add("base/large", large)
	tw.Close()
	return buf.Bytes()
}

func reassemble(t *testing.T, s providers.Store, a manifest.Archive) []byte {
	t.Helper()
	var out, tmp bytes.Buffer
	d := chunker.NewDecompressor()
	for _, c := range a.Chunks {
		data, err := providers.ReadAll(t.Context(), s, repository.ChunkKey(c.ID))
		if err != nil {
			t.Fatal(err)
		}
		tmp.Reset()
		if err := d.Decompress(&tmp, data, c.ID); err != nil {
			t.Fatal(err)
		}
		out.Write(tmp.Bytes())
	}
	return out.Bytes()
}

func TestArchiveRoundTripAndDedup(t *testing.T) {
	for _, cfg := range []Config{
		{ChunkSize: 64 << 10, Concurrency: 1, SealWorkers: 1},
		{ChunkSize: 64 << 10, Concurrency: 8, SealWorkers: 3},
		{ChunkSize: 1 << 20, Concurrency: 4},
	} {
		t.Run(fmt.Sprintf("%+v", cfg), func(t *testing.T) {
			store := mem.New()
			data := makeTar(t, 1, 3<<20+123)
			u := New(store, cfg, slog.New(slog.DiscardHandler))
			a, files, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(reassemble(t, store, a), data) {
				t.Fatal("chunks do not reassemble the archive")
			}
			if len(files) != 42 || a.RawSize != int64(len(data)) {
				t.Fatalf("%d files, raw %d; want 42, %d", len(files), a.RawSize, len(data))
			}
			st := u.Stats()
			if st.NewBytes != st.StoredBytes || st.NewChunks != len(a.Chunks) {
				t.Fatalf("first upload stats %+v", st)
			}
			// Same data again: nothing new.
			u2 := New(store, cfg, slog.New(slog.DiscardHandler))
			a2, _, err := u2.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0)
			if err != nil {
				t.Fatal(err)
			}
			if s2 := u2.Stats(); s2.NewBytes != 0 || s2.StoredBytes != st.StoredBytes {
				t.Fatalf("second upload stats %+v, first %+v", s2, st)
			}
			if len(a2.Chunks) != len(a.Chunks) {
				t.Fatal("chunk lists differ")
			}
		})
	}
}

// faultyStore fails Put after n successful ones.
type faultyStore struct {
	providers.Store
	okPuts atomic.Int64
	limit  int64
}

var errInjected = errors.New("injected failure")

func (f *faultyStore) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	if f.okPuts.Add(1) > f.limit {
		return errInjected
	}
	return f.Store.Put(ctx, key, body, size, o)
}

func TestArchiveFailsCleanly(t *testing.T) {
	data := makeTar(t, 2, 8<<20)
	for _, limit := range []int64{0, 1, 5} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			store := &faultyStore{Store: mem.New(), limit: limit}
			u := New(store, Config{ChunkSize: 256 << 10, Concurrency: 4}, slog.New(slog.DiscardHandler))
			done := make(chan error, 1)
			go func() {
				_, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0)
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, errInjected) {
					t.Fatalf("error %v, want the injected one", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Archive hung after a store failure")
			}
			// The pools are whole again: a later archive works.
			store.limit = 1 << 40
			if _, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0); err != nil {
				t.Fatalf("after a failure: %v", err)
			}
		})
	}
}

func TestArchiveCancelled(t *testing.T) {
	data := makeTar(t, 3, 8<<20)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	u := New(mem.New(), Config{ChunkSize: 256 << 10}, slog.New(slog.DiscardHandler))
	if _, _, err := u.Archive(ctx, bytes.NewReader(data), 0, "base.tar", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}

func TestArchiveBadTar(t *testing.T) {
	u := New(mem.New(), Config{ChunkSize: 64 << 10}, slog.New(slog.DiscardHandler))
	data := makeTar(t, 4, 100<<10)
	if _, _, err := u.Archive(t.Context(), bytes.NewReader(data[:len(data)/2]), 0, "base.tar", 0); err == nil {
		t.Fatal("a truncated archive was accepted")
	}
}

func TestMemoryBudget(t *testing.T) {
	tests := []struct {
		cfg       Config
		raw, pack int // buffers of each kind
	}{
		{Config{ChunkSize: 16 << 20, Concurrency: 8, SealWorkers: 2}, 3, 8},
		{Config{ChunkSize: 8 << 20, Concurrency: 1, SealWorkers: 4}, 5, 1},
		{Config{ChunkSize: 1 << 20, Concurrency: 64, SealWorkers: 1}, 2, 64},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v", tt.cfg), func(t *testing.T) {
			want := int64(tt.raw*tt.cfg.ChunkSize + tt.pack*chunker.CompressBound(tt.cfg.ChunkSize))
			if got := tt.cfg.MemoryBudget(); got != want {
				t.Fatalf("budget %d, want %d", got, want)
			}
		})
	}
}

// TestPoolsBounded checks that the pipeline never holds more buffers than
// the budget counts, however slow the store: a store that blocks every Put
// until released sees at most Concurrency uploads at once, and the
// sealers stop (they wait for a compressed buffer) instead of allocating.
func TestPoolsBounded(t *testing.T) {
	// In a synctest bubble, Wait returns once every goroutine of the
	// pipeline is blocked: no sleeping and hoping an extra upload would
	// have shown up by then.
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{ChunkSize: 64 << 10, Concurrency: 3, SealWorkers: 2}
		store := &gatedStore{Store: mem.New(), gate: make(chan struct{})}
		u := New(store, cfg, slog.New(slog.DiscardHandler))
		data := makeTar(t, 5, 2<<20)
		done := make(chan error, 1)
		go func() {
			_, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0)
			done <- err
		}()
		synctest.Wait()
		if n := store.waiting.Load(); n != int64(cfg.Concurrency) {
			t.Fatalf("%d uploads waiting, want %d", n, cfg.Concurrency)
		}
		if n := len(u.packed); n != 0 {
			t.Fatalf("%d compressed buffers idle while every upload is blocked", n)
		}
		close(store.gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(u.raw) != cap(u.raw) || len(u.packed) != cap(u.packed) {
			t.Fatalf("pools not whole after the archive: raw %d/%d, packed %d/%d", len(u.raw), cap(u.raw), len(u.packed), cap(u.packed))
		}
	})
}

// gatedStore blocks every Put until gate is closed.
type gatedStore struct {
	providers.Store
	gate    chan struct{}
	waiting atomic.Int64
}

func (g *gatedStore) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o providers.PutOptions) error {
	g.waiting.Add(1)
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Store.Put(ctx, key, body, size, o)
}

// TestRelease: after Release the pools hold no buffer, and the Uploader
// still stores an archive (allocating them again).
func TestRelease(t *testing.T) {
	store := mem.New()
	u := New(store, Config{ChunkSize: 64 << 10, Concurrency: 2, SealWorkers: 2}, slog.New(slog.DiscardHandler))
	data := makeTar(t, 8, 1<<20)
	if _, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0); err != nil {
		t.Fatal(err)
	}
	u.Release()
	for _, pool := range []chan []byte{u.raw, u.packed} {
		if len(pool) != cap(pool) {
			t.Fatalf("pool has %d of %d slots after Release", len(pool), cap(pool))
		}
		for range len(pool) {
			if b := <-pool; b != nil {
				t.Fatal("a buffer survived Release")
			}
			pool <- nil
		}
	}
	a, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(reassemble(t, store, a), data) {
		t.Fatal("the archive after Release does not reassemble")
	}
}

// Each chunk record carries the CRC32C of the bytes stored: for a chunk
// uploaded, of the frame sent; for one deduplicated, what KnownCRC32C
// says, or nothing. A chunk whose key is gone (quarantined) is uploaded
// again and gets the CRC of the new frame.
func TestChunkCRCs(t *testing.T) {
	ctx := t.Context()
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	store := mem.New()
	data := makeTar(t, 3, 1<<20)
	cfg := Config{ChunkSize: 64 << 10}
	first, _, err := New(store, cfg, slog.New(slog.DiscardHandler)).Archive(ctx, bytes.NewReader(data), 0, "base.tar", 0)
	if err != nil {
		t.Fatal(err)
	}
	stored := func(id string) uint32 {
		b, err := providers.ReadAll(ctx, store, repository.ChunkKey(id))
		if err != nil {
			t.Fatal(err)
		}
		return crc32.Checksum(b, castagnoli)
	}
	known := map[string]uint32{}
	for _, c := range first.Chunks {
		if c.StoredCRC32C == nil || *c.StoredCRC32C != stored(c.ID) {
			t.Fatalf("uploaded chunk %s: CRC %v, the stored bytes have %08x", c.ID[:12], c.StoredCRC32C, stored(c.ID))
		}
		known[c.ID] = *c.StoredCRC32C
	}
	gone := first.Chunks[1].ID
	for _, tc := range []struct {
		name      string
		known     bool
		remove    bool
		wantCRC   func(c manifest.ChunkRef) bool
		wantFresh int
	}{
		{"deduplicated, CRC unknown", false, false, func(c manifest.ChunkRef) bool { return c.StoredCRC32C == nil }, 0},
		{"deduplicated, CRC carried forward", true, false, func(c manifest.ChunkRef) bool {
			return c.StoredCRC32C != nil && *c.StoredCRC32C == known[c.ID]
		}, 0},
		{"one chunk's key removed", true, true, func(c manifest.ChunkRef) bool {
			return c.StoredCRC32C != nil && *c.StoredCRC32C == stored(c.ID)
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := cfg
			if tc.known {
				cfg.KnownCRC32C = func(id string) (uint32, bool) { crc, ok := known[id]; return crc, ok }
			}
			if tc.remove {
				if err := store.Delete(ctx, repository.ChunkKey(gone)); err != nil {
					t.Fatal(err)
				}
			}
			u := New(store, cfg, slog.New(slog.DiscardHandler))
			a, _, err := u.Archive(ctx, bytes.NewReader(data), 0, "base.tar", 0)
			if err != nil {
				t.Fatal(err)
			}
			if n := u.Stats().NewChunks; n != tc.wantFresh {
				t.Errorf("%d chunks uploaded, want %d", n, tc.wantFresh)
			}
			for _, c := range a.Chunks {
				if !tc.wantCRC(c) {
					t.Errorf("chunk %s: CRC %v", c.ID[:12], c.StoredCRC32C)
				}
			}
			if !bytes.Equal(reassemble(t, store, a), data) {
				t.Fatal("the archive does not reassemble")
			}
		})
	}
}

// TestWritten: Written names every chunk the Uploader stored itself,
// those of a failed archive and those whose write failed included, and
// none it found stored: what a failed backup may remove.
func TestWritten(t *testing.T) {
	data := makeTar(t, 5, 4<<20)
	inner := mem.New()
	store := &faultyStore{Store: inner, limit: 6}
	u := New(store, Config{ChunkSize: 256 << 10, Concurrency: 2}, slog.New(slog.DiscardHandler))
	if _, _, err := u.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0); !errors.Is(err, errInjected) {
		t.Fatalf("error %v, want the injected one", err)
	}
	written := map[string]bool{}
	for _, c := range u.Written() {
		written[repository.ChunkKey(c.ID)] = true
	}
	keys := inner.Keys()
	if len(keys) == 0 {
		t.Fatal("nothing was stored before the failure")
	}
	for _, k := range keys {
		if !written[k] {
			t.Errorf("stored chunk %s is not in Written", k)
		}
	}
	if len(written) <= len(keys) {
		t.Errorf("Written has %d chunks, want the %d stored and the failed writes", len(written), len(keys))
	}

	// A second Uploader that finds every chunk stored wrote none.
	store.limit = 1 << 40
	if _, _, err := New(store, Config{ChunkSize: 256 << 10}, slog.New(slog.DiscardHandler)).Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0); err != nil {
		t.Fatal(err)
	}
	u2 := New(store, Config{ChunkSize: 256 << 10}, slog.New(slog.DiscardHandler))
	a, _, err := u2.Archive(t.Context(), bytes.NewReader(data), 0, "base.tar", 0)
	if err != nil {
		t.Fatal(err)
	}
	if w := u2.Written(); len(w) != 0 || len(a.Chunks) == 0 {
		t.Errorf("an Uploader that stored nothing new lists %d written chunks", len(w))
	}
}
