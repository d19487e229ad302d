package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// Prefetch lets wal-fetch serve PostgreSQL's one-file-at-a-time
// restore_command loop from local disk: when asked for a segment it also
// fetches the next Ahead segments in parallel into Spool, and later calls
// take them from there. Every file is verified before it is spooled, and
// moved into place with a rename (the spool is on the same filesystem as
// the destination).
type Prefetch struct {
	Ahead int    // segments to fetch ahead (0: no prefetching)
	Spool string // directory for fetched-ahead segments
}

// spoolSuffix marks complete, verified spool files; temporary ones lack it.
const spoolSuffix = ".pgstow"

// FetchWALPrefetch is FetchWAL with prefetching.
func FetchWALPrefetch(ctx context.Context, repo *repository.Repository, name, dest string, p Prefetch) error {
	if err := repository.CheckWALName(name); err != nil {
		return err
	}
	if dest == "" {
		return fmt.Errorf("fetch WAL file %s: no destination given", name)
	}
	if p.Ahead > 0 && p.Spool != "" {
		// A spooled copy was verified when it was written; its length is
		// checked again, since anything could have happened since.
		spooled := filepath.Join(p.Spool, name+spoolSuffix)
		// Its size is the segment size it was checked against, so a hit
		// needs no request at all.
		if fi, err := os.Stat(spooled); err == nil && fi.Mode().IsRegular() {
			segSize := uint64(fi.Size())
			if _, _, err := manifest.ParseSegmentName(name, segSize); err == nil && manifest.ValidSegmentSize(segSize) {
				if err := os.Rename(spooled, dest); err == nil {
					if err := (syncEntry{path: filepath.Dir(dest), dir: true}).sync(); err != nil {
						return err
					}
					return refill(ctx, repo, segSize, name, p)
				}
			}
			_ = os.Remove(spooled)
		}
	}
	cfg, err := walConfig(ctx, repo, name)
	if err != nil {
		return err
	}
	if err := fetchToFile(ctx, repo, chunker.NewDecompressor(), cfg.WALSegmentSize, name, dest); err != nil {
		if errors.Is(err, providers.ErrNotExist) && p.Spool != "" {
			// The archive ends here (or recovery moves to another
			// timeline): what is spooled will not be asked for.
			_ = os.RemoveAll(p.Spool)
		}
		return err
	}
	if p.Ahead > 0 && p.Spool != "" {
		return refill(ctx, repo, cfg.WALSegmentSize, name, p)
	}
	return nil
}

// refill drops spooled segments older than name and, when fewer than half
// of the next Ahead segments are spooled, fetches the missing ones in
// parallel. It stops at the end of the archive. Failures only cost the
// prefetch: the next call fetches directly and reports them.
func refill(ctx context.Context, repo *repository.Repository, segSize uint64, name string, p Prefetch) error {
	tli, segno, err := manifest.ParseSegmentName(name, segSize)
	if err != nil {
		return nil // history files and the like are not prefetched after
	}
	if err := os.MkdirAll(p.Spool, 0o700); err != nil {
		return nil
	}
	if entries, err := os.ReadDir(p.Spool); err == nil {
		for _, e := range entries {
			n := strings.TrimSuffix(e.Name(), spoolSuffix)
			if n == e.Name() || n <= name {
				_ = os.Remove(filepath.Join(p.Spool, e.Name()))
			}
		}
	}
	var missing []string
	for i := 1; i <= p.Ahead; i++ {
		next := manifest.SegmentName(tli, segno+uint64(i), segSize)
		if _, err := os.Stat(filepath.Join(p.Spool, next+spoolSuffix)); err != nil {
			missing = append(missing, next)
		}
	}
	if len(missing) < (p.Ahead+1)/2 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, n := range missing {
		g.Go(func() error {
			// Absent (the end of the archive) or failing: fetched
			// directly later, which reports any failure.
			_ = fetchToFile(gctx, repo, chunker.NewDecompressor(), segSize, n, filepath.Join(p.Spool, n+spoolSuffix))
			return nil
		})
	}
	return g.Wait()
}
