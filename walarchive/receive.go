package walarchive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/replication"
	"github.com/pgstow/pgstow/repository"
)

// ReceiveOptions configure Receive.
type ReceiveOptions struct {
	Slot       string
	CreateSlot bool
	// IOTimeout ends the stream with an error when the server sends
	// nothing for this long (0: never), so a supervisor can restart it.
	IOTimeout time.Duration
	Log       *slog.Logger
	// Status, if set, is told where the stream stands after every message
	// from the server and every stored segment; it must be quick.
	Status func(ReceiveStatus)
}

// ReceiveStatus is where a running wal-receive stands.
type ReceiveStatus struct {
	replication.StreamStatus
	// Segments counts the segments stored since the start.
	Segments int64
	// LastSegment is when the last segment was stored.
	LastSegment time.Time
}

// Receive streams WAL from a physical slot into the repositories until
// ctx ends, as pg_receivewal does for a directory. A segment is reported
// to the server as flushed only once every repository's store has
// acknowledged it, so the position confirmed is the lowest any
// repository holds, the slot keeps every byte not yet safe in all of
// them, and a restart resumes from the slot. On the way out the
// unfinished segment is stored as .partial.
//
// A repository that fails stops the stream with an error naming it
// (a *RepoError when there are several), rather than going on with the
// others: the slot could not advance anyway, and a receiver that keeps
// running while one repository silently falls behind is the one a DBA
// would trust wrongly. The supervisor's restart resumes from the slot;
// the repositories that already hold a segment take it again as the same
// file.
func Receive(ctx context.Context, dsn string, repos []*repository.Repository, o ReceiveOptions) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Slot == "" {
		return errors.New("wal-receive needs a replication slot (--slot); add --create-slot to create it")
	}
	if len(repos) == 0 {
		return errors.New("wal-receive: no repository")
	}
	// each runs fn on every repository at once and joins the failures,
	// each naming its repository when there are several.
	each := func(fn func(i int, repo *repository.Repository) error) error {
		errs := make([]error, len(repos))
		var wg sync.WaitGroup
		for i, repo := range repos {
			wg.Go(func() { errs[i] = fn(i, repo) })
		}
		wg.Wait()
		if len(repos) == 1 {
			return errs[0]
		}
		for i, err := range errs {
			if err != nil {
				o.Log.Error("repository failed", "repo", repos[i].String(), "error", err)
				errs[i] = &RepoError{Repo: repos[i].String(), Err: err}
			}
		}
		return JoinErrors(errs...)
	}
	conn, err := replication.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sys, err := conn.IdentifySystem(ctx)
	if err != nil {
		return err
	}
	err = each(func(_ int, repo *repository.Repository) error {
		return repo.Bind(ctx, sys.SystemID, sys.WALSegmentSize)
	})
	if err != nil {
		return err
	}
	if o.CreateSlot {
		if err := conn.CreateSlot(ctx, o.Slot); err != nil {
			return err
		}
	}
	start, tli, ok, err := conn.ReadSlot(ctx, o.Slot)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("replication slot %q does not exist on %s or has reserved no WAL; create it with --create-slot", o.Slot, conn.Target())
	}
	if tli == 0 {
		tli = sys.Timeline
	}
	if tli != sys.Timeline {
		return fmt.Errorf("slot %q is on timeline %d and the server on %d: following timeline switches is not supported yet", o.Slot, tli, sys.Timeline)
	}
	o.Log.Info("receiving WAL", "server", conn.Target(), "slot", o.Slot, "from", start.String(), "timeline", tli, "repo", repoNames(repos))
	// A compressor and a decompressor per repository: they are written
	// concurrently.
	comps, decs := make([]*chunker.Compressor, len(repos)), make([]*chunker.Decompressor, len(repos))
	for i := range repos {
		comps[i], decs[i] = chunker.NewCompressor(), chunker.NewDecompressor()
	}
	last := time.Now()
	var st ReceiveStatus
	// The stream starts at the segment holding start.
	segStart := manifest.LSN(manifest.SegmentNo(start, sys.WALSegmentSize) * sys.WALSegmentSize)
	st.Stored, st.Received = segStart, segStart
	report := func() {
		if o.Status != nil {
			o.Status(st)
		}
	}
	report()
	ws := &replication.WALStream{
		Slot:        o.Slot,
		Timeline:    tli,
		SegmentSize: sys.WALSegmentSize,
		IdleTimeout: o.IOTimeout,
		Status: func(s replication.StreamStatus) {
			st.StreamStatus = s
			report()
		},
		SpoolDir: repos[0].SpoolDir(),
		Sink: func(ctx context.Context, name string, seg *io.SectionReader) error {
			// Each upload reads the spooled segment through its own
			// SectionReader: ReadAt is safe concurrently.
			err := each(func(i int, repo *repository.Repository) error {
				_, err := repo.PutWALFrom(ctx, comps[i], name, io.NewSectionReader(seg, 0, seg.Size()), seg.Size())
				return err
			})
			if err != nil {
				return err
			}
			o.Log.Info("segment stored", "segment", name, "seconds_since_last", time.Since(last).Seconds())
			last = time.Now()
			st.Segments++
			st.LastSegment = last
			report()
			return nil
		},
		Partial: func(ctx context.Context, name string, seg *io.SectionReader) error {
			received, err := walEnd(seg)
			if err != nil {
				return fmt.Errorf("read the spooled segment %s: %w", name, err)
			}
			return each(func(i int, repo *repository.Repository) error {
				// An earlier run may have stored more of this segment: a
				// shorter copy must never replace it.
				var prev walEndWriter
				_, err := repo.ReadWAL(ctx, decs[i], name+".partial", repository.WALWant{SegmentSize: sys.WALSegmentSize}, &prev)
				switch {
				case err == nil && prev.end > received:
					o.Log.Warn("keeping the longer partial segment stored earlier", "segment", name, "repo", repo.String(),
						"stored_bytes", prev.end, "received_bytes", received)
					return nil
				case err != nil && !errors.Is(err, providers.ErrNotExist):
					o.Log.Warn("could not read the partial segment stored earlier; replacing it", "segment", name, "repo", repo.String(), "err", err)
				}
				o.Log.Info("storing partial segment", "segment", name, "repo", repo.String(), "bytes", received)
				err = repo.PutWALPartialFrom(ctx, comps[i], name, io.NewSectionReader(seg, 0, seg.Size()), seg.Size())
				if errors.Is(err, repository.ErrPartialKept) {
					if prev.end >= received {
						return nil // the one kept holds as much
					}
					// Confirming what the repository lacks would let the
					// server believe it safe. Stopping leaves the slot
					// where it was: the server keeps the segment, and the
					// next run stores it whole.
					return fmt.Errorf("repository %s is immutable and keeps the shorter partial segment %s stored earlier (%d of the %d bytes received): not confirming the rest; the server keeps the segment, and the next wal-receive stores it whole: %w",
						repo, name, prev.end, received, err)
				}
				return err
			})
		},
	}
	err = ws.Run(ctx, conn, start, nil, 0)
	if ctx.Err() != nil {
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		o.Log.Info("stopped")
		return nil
	}
	return err
}

// repoNames names the repositories for a log line.
func repoNames(repos []*repository.Repository) string {
	names := make([]string, len(repos))
	for i, r := range repos {
		names[i] = r.String()
	}
	return strings.Join(names, " ")
}

// walEnd is how much of a zero-padded partial segment holds WAL: up to
// its last non-zero byte. It reads backwards from the end, a block at a
// time, so the padding costs little and the WAL before it nothing.
func walEnd(seg *io.SectionReader) (int64, error) {
	var block [64 << 10]byte
	for end := seg.Size(); end > 0; {
		start := max(end-int64(len(block)), 0)
		b := block[:end-start]
		if _, err := seg.ReadAt(b, start); err != nil {
			return 0, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != 0 {
				return start + int64(i) + 1, nil
			}
		}
		end = start
	}
	return 0, nil
}

// walEndWriter finds walEnd of what is written through it.
type walEndWriter struct {
	n, end int64
}

func (w *walEndWriter) Write(p []byte) (int, error) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0 {
			w.end = w.n + int64(i) + 1
			break
		}
	}
	w.n += int64(len(p))
	return len(p), nil
}
