package restore

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
	"github.com/pgstow/pgstow/repository"
)

// slowStore adds a fixed latency to every request, like a remote store.
type slowStore struct {
	providers.Store
	latency time.Duration
}

func (s slowStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	time.Sleep(s.latency)
	return s.Store.Get(ctx, key, off, n)
}

func (s slowStore) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	time.Sleep(s.latency)
	return s.Store.Stat(ctx, key)
}

// BenchmarkWALReplayFetch replays 200 archived segments the way PostgreSQL
// asks for them, one restore_command call after another, against a store
// with 20 ms per request: one at a time, and with prefetching.
func BenchmarkWALReplayFetch(b *testing.B) {
	const seg, n = 1 << 20, 200
	inner := mem.New()
	repo := repository.New(inner)
	ctx := context.Background()
	repo.Bind(ctx, "7000000000000000001", seg)
	comp := chunker.NewCompressor()
	data := make([]byte, seg)
	for no := uint64(1); no <= n; no++ {
		data[0] = byte(no)
		repo.PutWAL(ctx, comp, manifest.SegmentName(1, no, seg), data)
	}
	slow := repository.New(slowStore{inner, 20 * time.Millisecond})
	for _, ahead := range []int{0, 8, 16} {
		b.Run(map[int]string{0: "one-at-a-time", 8: "prefetch-8", 16: "prefetch-16"}[ahead], func(b *testing.B) {
			for b.Loop() {
				dir := b.TempDir()
				p := Prefetch{Ahead: ahead, Spool: filepath.Join(dir, "spool")}
				for no := uint64(1); no <= n; no++ {
					if err := FetchWALPrefetch(ctx, slow, manifest.SegmentName(1, no, seg), filepath.Join(dir, "RECOVERYXLOG"), p); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds()*float64(b.N), "segments/s")
		})
	}
}
