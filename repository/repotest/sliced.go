package repotest

import (
	"context"
	"io"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// PutChunk compresses raw into an LZ4 frame and stores it in repo as a
// chunk, returning a reference to the whole chunk: for tests that lay out
// chunks by hand rather than through the uploader.
func PutChunk(t testing.TB, repo *repository.Repository, raw []byte) manifest.ChunkRef {
	t.Helper()
	frame, crc, err := chunker.NewCompressor().Append(nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	id := repo.ChunkID(raw)
	if _, err := repo.PutChunk(t.Context(), id, frame, crc); err != nil {
		t.Fatal(err)
	}
	return manifest.ChunkRef{ID: id, RawSize: int64(len(raw)), StoredSize: int64(len(frame)), StoredCRC32C: &crc, Codec: "lz4"}
}

// Alternate returns a copy of b, in the incremental format, whose
// archives are each two new chunks, one of the archive's even pieces of
// piece bytes and one of its odd pieces, referenced alternately by
// slices. The archives' bytes are unchanged, and every chunk is named by
// every other reference, as an incremental backup's archives name their
// parent's chunks between new ones: tests of the readers of slices can
// so use committed backups. The chunks are stored in repo; b's archives
// are read from it.
func Alternate(t testing.TB, repo *repository.Repository, b *manifest.Backup, piece int64) *manifest.Backup {
	t.Helper()
	c := *b
	c.FormatVersion = manifest.FormatVersionIncremental
	c.Archives = slices.Clone(b.Archives)
	for ai, a := range b.Archives {
		var whole []byte
		err := repo.StreamChunks(t.Context(), slices.Values(a.Chunks), repository.StreamOptions{}, func(_ int, raw []byte, err error) error {
			whole = append(whole, raw...)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		size := int64(len(whole))
		var halves [2][]byte
		for k, off := 0, int64(0); off < size; k, off = k+1, off+piece {
			halves[k%2] = append(halves[k%2], whole[off:min(off+piece, size)]...)
		}
		two := [2]manifest.ChunkRef{PutChunk(t, repo, halves[0]), PutChunk(t, repo, halves[1])}
		var refs []manifest.ChunkRef
		var offs [2]int64
		for k, off := 0, int64(0); off < size; k, off = k+1, off+piece {
			ref := two[k%2]
			ref.Offset, ref.Length = offs[k%2], min(piece, size-off)
			offs[k%2] += ref.Length
			refs = append(refs, ref)
		}
		c.Archives[ai].Chunks = refs
		c.Archives[ai].StoredSize = 0
		for _, r := range refs {
			c.Archives[ai].StoredSize += r.StoredSize
		}
	}
	return &c
}

// GetCounter is a store that counts the reads of each object, so that a
// test can check a chunk is downloaded once however many references name
// it. It is safe for concurrent use, as readers download in parallel.
type GetCounter struct {
	providers.Store
	mu   sync.Mutex
	gets map[string]int
}

// NewGetCounter returns a GetCounter over s.
func NewGetCounter(s providers.Store) *GetCounter {
	return &GetCounter{Store: s, gets: map[string]int{}}
}

// Get counts the read of key and passes it on.
func (s *GetCounter) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	s.mu.Lock()
	s.gets[key]++
	s.mu.Unlock()
	return s.Store.Get(ctx, key, offset, length)
}

// Gets returns how many times each key has been read so far.
func (s *GetCounter) Gets() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.gets)
}
