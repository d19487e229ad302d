package uploader

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pgstow/pgstow/chunker"
)

// fakeRepo is a Repository in memory, chunks by id, that can fail or hold
// writes: the uploader is tested against the interface it declares, not
// against a store's key layout.
type fakeRepo struct {
	mu     sync.Mutex
	chunks map[string][]byte
	// putLimit is how many PutChunk calls succeed; later ones fail with
	// errInjected.
	putLimit atomic.Int64
	puts     atomic.Int64
	// gate, if set, holds every PutChunk until it is closed; waiting
	// counts the calls held.
	gate    chan struct{}
	waiting atomic.Int64
}

var errInjected = errors.New("injected failure")

func newFakeRepo() *fakeRepo {
	f := &fakeRepo{chunks: make(map[string][]byte)}
	f.putLimit.Store(1 << 40)
	return f
}

func (f *fakeRepo) ChunkID(raw []byte) string { return chunker.ID(raw) }

func (f *fakeRepo) HasChunk(_ context.Context, id string) (int64, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.chunks[id]
	return int64(len(b)), ok, nil
}

func (f *fakeRepo) PutChunk(ctx context.Context, id string, frame []byte, _ uint32) (bool, error) {
	if f.gate != nil {
		f.waiting.Add(1)
		select {
		case <-f.gate:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if f.puts.Add(1) > f.putLimit.Load() {
		return false, errInjected
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.chunks[id]; ok {
		return false, nil
	}
	f.chunks[id] = bytes.Clone(frame) // the uploader reuses frame
	return true, nil
}

// frame returns a stored chunk's bytes.
func (f *fakeRepo) frame(id string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.chunks[id]
	return b, ok
}

// remove drops a stored chunk, as a quarantine does.
func (f *fakeRepo) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.chunks, id)
}

// ids lists the stored chunks.
func (f *fakeRepo) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.chunks))
	for id := range f.chunks {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
