package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
)

// embedWAL writes every WAL file the backup needs into pg_wal/, several at
// a time. Each worker keeps its buffers, so memory is Concurrency × (a
// segment + its stored size), and this runs after the chunks are done.
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
			w := newWALReader()
			for s := range next {
				if err := r.embedOne(gctx, w, s); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// embedOne fetches one WAL file, checks it against the manifest (SHA-256,
// and a segment's length) and writes it to pg_wal/.
func (r *restorer) embedOne(ctx context.Context, w *walReader, s manifest.WALSegment) error {
	segSize := r.p.b.WALSegmentSize
	if err := checkWALName(s.Name); err != nil {
		return err
	}
	data, err := w.read(ctx, r.repo.Store(), s.Name, segSize)
	if err != nil {
		return err
	}
	if _, _, err := manifest.ParseSegmentName(s.Name, segSize); err == nil && uint64(len(data)) != segSize {
		return fmt.Errorf("WAL segment %s is corrupt: %d bytes, the segment size is %d", s.Name, len(data), segSize)
	}
	if s.SHA256 != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != s.SHA256 {
			return fmt.Errorf("WAL file %s is corrupt: sha256 %s, the manifest says %s", s.Name, got, s.SHA256)
		}
	}
	// Truncate rather than refuse: an archive taken with its WAL
	// included already has the file, and this copy is verified.
	if err := r.writeWhole(r.base, "pg_wal/"+s.Name, data, time.Time{}, os.O_TRUNC); err != nil {
		return err
	}
	r.mu.Lock()
	r.walSegments++
	r.mu.Unlock()
	return nil
}

// checkWALName accepts the names pgstow stores WAL under (segments and
// timeline history files, a few more characters allowed) and nothing that
// could be read as a path.
func checkWALName(name string) error {
	if len(name) < 8 || len(name) > 64 {
		return fmt.Errorf("invalid WAL file name %q", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid WAL file name %q", name)
		}
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("invalid WAL file name %q", name)
	}
	return nil
}

// walReader reads stored WAL files, reusing its buffers and decompressor.
type walReader struct {
	stored []byte
	raw    bytes.Buffer
	dec    *chunker.Decompressor
}

func newWALReader() *walReader { return &walReader{dec: chunker.NewDecompressor()} }

// read fetches and decompresses one WAL file of at most maxRaw bytes. The
// result is valid until the next call. A missing file is an error
// wrapping providers.ErrNotExist.
func (w *walReader) read(ctx context.Context, store providers.Store, name string, maxRaw uint64) ([]byte, error) {
	rc, err := store.Get(ctx, manifest.WALKey(name), 0, -1)
	if err != nil {
		return nil, fmt.Errorf("fetch WAL file %s from %s: %w", name, store, err)
	}
	defer rc.Close()
	// A stored object larger than the most maxRaw bytes compress to is
	// not ours; reading no further bounds memory.
	limit := int64(chunker.CompressBound(int(maxRaw)))
	buf := bytes.NewBuffer(w.stored[:0])
	n, err := buf.ReadFrom(io.LimitReader(rc, limit+1))
	w.stored = buf.Bytes()
	if err != nil {
		return nil, fmt.Errorf("fetch WAL file %s from %s: %w", name, store, err)
	}
	if n > limit {
		return nil, fmt.Errorf("WAL file %s in %s is corrupt: the stored object is larger than %d bytes", name, store, limit)
	}
	if !hasContentChecksum(w.stored) {
		return nil, fmt.Errorf("WAL file %s in %s is corrupt: not an LZ4 frame with a content checksum", name, store)
	}
	w.raw.Reset()
	if err := w.dec.Decompress(&w.raw, w.stored, ""); err != nil {
		return nil, fmt.Errorf("WAL file %s in %s is corrupt: %w", name, store, err)
	}
	if uint64(w.raw.Len()) > maxRaw {
		return nil, fmt.Errorf("WAL file %s in %s is corrupt: %d bytes, more than %d", name, store, w.raw.Len(), maxRaw)
	}
	return w.raw.Bytes(), nil
}

// hasContentChecksum reports whether frame starts an LZ4 frame whose
// content checksum flag is set. The Decompressor checks the checksum when
// there is one; WAL has no other check here, so a frame without one (not
// written by pgstow) is refused.
func hasContentChecksum(frame []byte) bool {
	const magic = "\x04\x22\x4d\x18" // 0x184D2204, little-endian
	const flagContentChecksum = 0x04
	return len(frame) >= 5 && string(frame[:4]) == magic && frame[4]&flagContentChecksum != 0
}

// FetchWAL writes one WAL file (a segment or a timeline history file) from
// the repository to dest, for restore_command. It verifies the LZ4 frame's
// checksum and, for a segment, that its length is the repository's segment
// size, and writes atomically (a temporary file in dest's directory,
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
		return nil, fmt.Errorf("fetch WAL file %s: %s has no repository configuration (%s); is the repository URL right?", name, repo, manifest.RepoKey)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch WAL file %s: read the configuration of %s: %w", name, repo, err)
	}
	if !manifest.ValidSegmentSize(cfg.WALSegmentSize) {
		return nil, fmt.Errorf("fetch WAL file %s: %s has an invalid wal_segment_size %d", name, repo, cfg.WALSegmentSize)
	}
	return cfg, nil
}

// fetchVerified downloads one WAL file and checks it: the LZ4 frame's
// checksum, and a segment's length.
func fetchVerified(ctx context.Context, repo *repository.Repository, segSize uint64, name string) ([]byte, error) {
	data, err := newWALReader().read(ctx, repo.Store(), name, segSize)
	if err != nil {
		return nil, err
	}
	if _, _, err := manifest.ParseSegmentName(name, segSize); err == nil && uint64(len(data)) != segSize {
		return nil, fmt.Errorf("WAL segment %s in %s is corrupt: %d bytes, the segment size is %d", name, repo, len(data), segSize)
	}
	return data, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, fsynced before the rename and the directory after it.
func writeFileAtomic(path string, data []byte) (err error) {
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
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
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
	d := r.base
	const signal, auto = "recovery.signal", "postgresql.auto.conf"
	f, err := d.root.OpenFile(signal, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return fmt.Errorf("create %s: %w", d.full(signal), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create %s: %w", d.full(signal), err)
	}
	r.addSync(syncEntry{d: d, path: signal})

	existing, err := d.root.ReadFile(auto)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", d.full(auto), err)
	}
	var text strings.Builder
	if len(existing) > 0 && existing[len(existing)-1] != '\n' {
		text.WriteByte('\n')
	}
	text.WriteString("# Added by pgstow restore: fetch WAL from the repository.\n")
	text.WriteString("restore_command = " + ConfQuote(r.o.RestoreCommand) + "\n")
	if r.o.Recovery != nil {
		for _, l := range r.o.Recovery.settings() {
			text.WriteString(l + "\n")
		}
	}
	f, err = d.root.OpenFile(auto, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("open %s: %w", d.full(auto), err)
	}
	_, err = f.WriteString(text.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", d.full(auto), err)
	}
	r.addSync(syncEntry{d: d, path: auto})
	return nil
}

// ConfQuote quotes a value for a PostgreSQL configuration file the way
// ALTER SYSTEM does: single quotes around it, and quotes and backslashes
// doubled, since the configuration parser reads backslash escapes too.
func ConfQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
