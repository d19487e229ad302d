package repository

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
)

// replayPlan follows steps over ids as the stream does and returns the
// number of downloads, failing t if a hit would serve another chunk than
// the one named or a slot index is out of range.
func replayPlan(t *testing.T, ids []string, capacity int, steps []fetchStep) int {
	t.Helper()
	if steps == nil {
		return len(ids)
	}
	if len(steps) != len(ids) {
		t.Fatalf("%d steps for %d ids", len(steps), len(ids))
	}
	slot := make([]string, capacity)
	downloads := 0
	for p, st := range steps {
		if st.slot >= int32(capacity) || (st.hit && st.slot < 0) {
			t.Fatalf("position %d: slot %d with capacity %d", p, st.slot, capacity)
		}
		if st.hit {
			if slot[st.slot] != ids[p] {
				t.Fatalf("position %d (%s) served from slot %d, which holds %q", p, ids[p], st.slot, slot[st.slot])
			}
			continue
		}
		downloads++
		if st.slot >= 0 {
			slot[st.slot] = ids[p]
		}
	}
	return downloads
}

// The plan downloads a chunk again only when the cache could not hold it
// until its next use, and plans nothing when no chunk repeats.
func TestPlanFetches(t *testing.T) {
	for _, tc := range []struct {
		seq       string // one id per letter
		capacity  int
		downloads int
		none      bool // no plan: every position downloaded
	}{
		{seq: "ABACAB", capacity: 0, downloads: 6, none: true},
		{seq: "ABACAB", capacity: 1, downloads: 4}, // A kept; B, C, B downloaded
		{seq: "ABACAB", capacity: 2, downloads: 3},
		{seq: "ABACAB", capacity: 3, downloads: 3},
		{seq: "ABCDEF", capacity: 4, downloads: 6, none: true},
		{seq: "", capacity: 4, downloads: 0, none: true},
		{seq: "A", capacity: 4, downloads: 1, none: true},
		{seq: "AAAA", capacity: 1, downloads: 1},
		{seq: "ABABABAB", capacity: 1, downloads: 5},
		{seq: "ABABABAB", capacity: 2, downloads: 2},
		{seq: "ABCABCABC", capacity: 2, downloads: 5}, // Belady's optimum
		{seq: "ABCABCABC", capacity: 3, downloads: 3},
		{seq: "AXBXCXDXAXBXCXDX", capacity: 4, downloads: 6}, // X and three of the four: D again
		{seq: "AXBXCXDXAXBXCXDX", capacity: 2, downloads: 8}, // X and A
	} {
		t.Run(tc.seq+"/"+string(rune('0'+tc.capacity)), func(t *testing.T) {
			ids := strings.Split(tc.seq, "")
			if tc.seq == "" {
				ids = nil
			}
			steps := planFetches(ids, tc.capacity)
			if (steps == nil) != tc.none {
				t.Errorf("plan is nil: %v, want %v", steps == nil, tc.none)
			}
			if got := replayPlan(t, ids, tc.capacity, steps); got != tc.downloads {
				t.Errorf("%d downloads, want %d (steps %v)", got, tc.downloads, steps)
			}
		})
	}
}

// getCounter counts the reads of each object. It repeats
// repotest.GetCounter, which these tests cannot import: repotest imports
// this package.
type getCounter struct {
	providers.Store
	mu   sync.Mutex
	gets map[string]int
}

func (s *getCounter) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	s.mu.Lock()
	s.gets[key]++
	s.mu.Unlock()
	return s.Store.Get(ctx, key, offset, length)
}

// With a cache, references that alternate between chunks download each
// chunk once, every position still comes to fn in order with its chunk's
// content, and a failed download is passed on to each use of its chunk.
func TestStreamChunksCache(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cache   int
		missing bool // chunk 0 is deleted
		gets    int  // downloads of each chunk
	}{
		{name: "no cache", cache: 0, gets: 4},
		{name: "cache", cache: 2, gets: 1},
		{name: "cache, missing chunk", cache: 2, missing: true, gets: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &getCounter{Store: mem.New(), gets: map[string]int{}}
			r := New(store)
			chunks, raws := streamFixture(t, r, 2)
			if tc.missing {
				if err := store.Delete(t.Context(), ChunkKey(chunks[0].ID)); err != nil {
					t.Fatal(err)
				}
			}
			var refs []manifest.ChunkRef
			var want [][]byte
			for range 4 {
				for k := range chunks {
					refs = append(refs, chunks[k])
					want = append(want, raws[k])
				}
			}
			got, err := streamAll(t, r, refs, StreamOptions{Concurrency: 3, CacheChunks: tc.cache})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(refs) {
				t.Fatalf("fn called %d times, want %d", len(got), len(refs))
			}
			for p, g := range got {
				if g.i != p {
					t.Fatalf("call %d is for position %d", p, g.i)
				}
				if tc.missing && refs[p].ID == chunks[0].ID {
					if !errors.Is(g.err, providers.ErrNotExist) || g.raw != nil {
						t.Errorf("position %d: err %v, %d bytes; want the missing chunk's error", p, g.err, len(g.raw))
					}
					continue
				}
				if g.err != nil || !bytes.Equal(g.raw, want[p]) {
					t.Errorf("position %d: err %v, content equal %v", p, g.err, bytes.Equal(g.raw, want[p]))
				}
			}
			for _, c := range chunks {
				if n := store.gets[ChunkKey(c.ID)]; n != tc.gets {
					t.Errorf("chunk %s read %d times, want %d", c.ID[:8], n, tc.gets)
				}
			}
		})
	}
}

// The cache is part of the stream's memory budget.
func TestStreamMemoryBudgetCache(t *testing.T) {
	o := StreamOptions{Concurrency: 4, RawBuffers: 2, CacheChunks: 3}
	if got, want := o.MemoryBudget(1000, 100), int64(4*100+(2+3)*1000); got != want {
		t.Errorf("MemoryBudget = %d, want %d", got, want)
	}
}
