package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// embedWAL writes every WAL file the backup needs into pg_wal/, several at
// a time. Each worker streams one file at a time from the store through
// its own decompressor into pg_wal/, so memory is Concurrency × the lz4
// Reader's buffers (about 8 MB), whatever the segment size; this runs
// after the chunks are done.
func (r *restorer) embedWAL(ctx context.Context) error {
	segs := r.p.b.WAL
	if len(segs) == 0 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	next := make(chan manifest.WALSegment)
	g.Go(func() error {
		defer close(next)
		for _, s := range segs {
			select {
			case next <- s:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range min(r.o.Concurrency, len(segs)) {
		g.Go(func() error {
			dec := chunker.NewDecompressor()
			for s := range next {
				if err := r.embedOne(gctx, dec, s); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// embedOne streams one WAL file into pg_wal/ under a temporary name,
// checked by repository.ReadWAL's rule against the manifest's SHA-256,
// and only then gives it its name. An archive taken with its WAL included
// already has the file: the verified copy replaces it.
func (r *restorer) embedOne(ctx context.Context, dec *chunker.Decompressor, s manifest.WALSegment) (err error) {
	// Checked before the name goes into a path.
	if err := repository.CheckWALName(s.Name); err != nil {
		return err
	}
	// A standby backup's partial last segment goes in under the
	// segment's name, padded with zeros to the segment size as
	// pg_basebackup leaves it: recovery reads the zeros as the end of
	// the WAL there.
	fileName, partial := s.Name, uint64(0)
	if seg, _, _, size, err := manifest.ParsePartialSegmentName(s.Name, r.p.b.WALSegmentSize); err == nil {
		fileName, partial = seg, size
	}
	d := r.base
	p := "pg_wal/" + fileName
	tmp := "pg_wal/." + fileName + ".pgstow-tmp"
	if err := d.ensureParent(p); err != nil {
		return err
	}
	out, err := d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return fmt.Errorf("create %s: %w", d.full(tmp), err)
	}
	defer func() {
		if err != nil {
			_ = d.root.Remove(tmp)
		}
	}()
	_, err = r.repo.ReadWAL(ctx, dec, s.Name, repository.WALWant{SegmentSize: r.p.b.WALSegmentSize, SHA256: s.SHA256}, out)
	if err == nil && partial > 0 {
		// Real zeros, not a hole: PostgreSQL writes into this segment
		// after recovery, and a full disk must show now, not then.
		if perr := writeZeros(out, int64(r.p.b.WALSegmentSize-partial)); perr != nil {
			err = fmt.Errorf("pad %s to the segment size: %w", d.full(tmp), perr)
		}
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", d.full(tmp), cerr)
	}
	if err != nil {
		return err
	}
	if err := d.root.Rename(tmp, p); err != nil {
		return fmt.Errorf("rename %s to %s: %w", d.full(tmp), fileName, err)
	}
	r.addSync(syncEntry{d: d, path: p})
	r.mu.Lock()
	r.walSegments++
	r.mu.Unlock()
	return nil
}

// writeZeros writes n zero bytes to w.
func writeZeros(w io.Writer, n int64) error {
	zeros := make([]byte, min(n, 1<<20))
	for n > 0 {
		k, err := w.Write(zeros[:min(n, int64(len(zeros)))])
		if err != nil {
			return err
		}
		n -= int64(k)
	}
	return nil
}

// embedPartialWAL writes a standby backup's partial last segment into
// pg_wal/ with --wal=fetch too. Until the primary archives that segment
// whole (which on a quiet primary can take until archive_timeout, or
// forever if it archives elsewhere), restore_command cannot supply it,
// and without it recovery cannot reach the backup's end. PostgreSQL asks
// restore_command first, so the complete segment wins once it exists.
func (r *restorer) embedPartialWAL(ctx context.Context) error {
	segs := r.p.b.WAL
	if len(segs) == 0 {
		return nil
	}
	last := segs[len(segs)-1]
	if _, _, _, _, err := manifest.ParsePartialSegmentName(last.Name, r.p.b.WALSegmentSize); err != nil {
		return nil
	}
	return r.embedOne(ctx, chunker.NewDecompressor(), last)
}

// FetchWAL writes one WAL file (a segment or a timeline history file) from
// the repository to dest, for restore_command. It checks the file by
// repository.ReadWAL's rule (size bound, LZ4 checksum, a segment's
// length), and writes atomically (a temporary file in dest's directory,
// fsynced, renamed), so PostgreSQL never sees a partial file. A file that
// is not in the repository returns an error wrapping providers.ErrNotExist
// and creates nothing; any other error means something is wrong, not
// that the WAL ends here.
func FetchWAL(ctx context.Context, repo *repository.Repository, name, dest string) error {
	return FetchWALPrefetch(ctx, repo, name, dest, Prefetch{})
}

// walConfig reads the repository configuration wal-fetch needs.
func walConfig(ctx context.Context, repo *repository.Repository, name string) (*manifest.Repo, error) {
	cfg, err := repo.Config(ctx)
	if errors.Is(err, providers.ErrNotExist) {
		// Not wrapped: a missing configuration means a wrong URL, and
		// must not read as "this WAL file does not exist", which would
		// end recovery early.
		return nil, fmt.Errorf("fetch WAL file %s: %s has no repository configuration (%s); is the repository URL right?", name, repo, repository.RepoKey)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch WAL file %s: read the configuration of %s: %w", name, repo, err)
	}
	if !manifest.ValidSegmentSize(cfg.WALSegmentSize) {
		return nil, fmt.Errorf("fetch WAL file %s: %s has an invalid wal_segment_size %d", name, repo, cfg.WALSegmentSize)
	}
	return cfg, nil
}

// fetchToFile downloads one WAL file to path, verified, through
// writeFileAtomic: nothing appears at path unless the whole file checked
// out.
func fetchToFile(ctx context.Context, repo *repository.Repository, dec *chunker.Decompressor, segSize uint64, name, path string) error {
	return writeFileAtomic(path, func(w io.Writer) error {
		_, err := repo.ReadWAL(ctx, dec, name, repository.WALWant{SegmentSize: segSize}, w)
		return err
	})
}

// writeFileAtomic writes path through a temporary file in the same
// directory, which write fills, fsynced before the rename and the
// directory after it. When write fails the temporary file is removed and
// its error returned as it is.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".pgstow-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncEntry{path: dir, dir: true}.sync()
}

// writeRecoveryConfig makes PostgreSQL recover with restore_command:
// recovery.signal, and the setting appended to postgresql.auto.conf,
// which PostgreSQL reads last, so it wins over any earlier setting.
func (r *restorer) writeRecoveryConfig() error {
	if err := r.writeSignal("recovery.signal"); err != nil {
		return err
	}
	var text strings.Builder
	text.WriteString("# Added by pgstow restore: fetch WAL from the repository.\n")
	text.WriteString("restore_command = " + ConfQuote(r.o.RestoreCommand) + "\n")
	if r.o.Recovery != nil {
		for _, l := range r.o.Recovery.settings() {
			text.WriteString(l + "\n")
		}
	}
	return r.appendAutoConf(text.String())
}

// writeSignal creates an empty signal file (recovery.signal,
// standby.signal) in the data directory, to be synced with the rest.
func (r *restorer) writeSignal(name string) error {
	d := r.base
	f, err := d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return fmt.Errorf("create %s: %w", d.full(name), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create %s: %w", d.full(name), err)
	}
	r.addSync(syncEntry{d: d, path: name})
	return nil
}

// appendAutoConf appends settings to postgresql.auto.conf, which
// PostgreSQL reads last, so they win over earlier ones; the file is
// created if the backup had none, and synced with the rest.
func (r *restorer) appendAutoConf(text string) error {
	d := r.base
	existing, err := d.root.ReadFile(autoConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", d.full(autoConf), err)
	}
	if len(existing) > 0 && existing[len(existing)-1] != '\n' {
		text = "\n" + text
	}
	f, err := d.root.OpenFile(autoConf, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("open %s: %w", d.full(autoConf), err)
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", d.full(autoConf), err)
	}
	r.addSync(syncEntry{d: d, path: autoConf})
	return nil
}

// ConfQuote quotes a value for a PostgreSQL configuration file the way
// ALTER SYSTEM does: single quotes around it, and quotes and backslashes
// doubled, since the configuration parser reads backslash escapes too.
func ConfQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
