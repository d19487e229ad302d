// Package walarchive implements PostgreSQL's archive_command side of the
// WAL archive: pushing one file, and pushing the files PostgreSQL has
// marked ready ahead of time, so a busy server's archiver, which calls
// archive_command for one file at a time, never falls behind; and
// wal-receive's streaming. Both write to one repository or to several,
// and succeed only when every repository holds the WAL.
package walarchive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/pgstow/pgstow/chunker"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/repository"
)

// Options tune a push.
type Options struct {
	// Ahead is how many other ready files to push in the same call
	// (0: none).
	Ahead int
	// Parallel bounds the uploads of one call (default 4).
	Parallel int
	Log      *slog.Logger
}

// Push archives the WAL file at path (as archive_command's %p gives it,
// relative to the data directory or absolute) into repo. An identical
// file already in the repository is a success, since PostgreSQL retries
// a push whose answer it did not see; a different one is an error and is
// never overwritten. With Ahead > 0 it also pushes the oldest files that
// archive_status marks ready, so that PostgreSQL's later calls for them
// find their work done.
func Push(ctx context.Context, repo *repository.Repository, path string, o Options) error {
	return PushAll(ctx, []*repository.Repository{repo}, path, o)
}

// PushAll is Push into several repositories at once. It succeeds only
// when every repository holds the file: PostgreSQL keeps a file in pg_wal
// and retries it until archive_command succeeds, so a failure in any one
// repository must fail the call, or that repository would lack the file
// for good. The repositories are written concurrently and independently:
// one failing does not stop the others, so the healthy ones are current
// and the retry finds its work there done. With more than one repository
// each failure is a *RepoError naming its repository, all on one line.
func PushAll(ctx context.Context, repos []*repository.Repository, path string, o Options) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if len(repos) == 0 {
		return errors.New("wal-push: no repository")
	}
	name := filepath.Base(path)
	if !manifest.ArchivedWALName(name) {
		return fmt.Errorf("wal-push %s: %q is not a WAL file name", path, name)
	}
	ahead := readyFiles(filepath.Dir(path), name, o.Ahead)
	// No shared cancellation: a failing repository must not cut short
	// the uploads to the others. ctx still stops everything.
	var g errgroup.Group
	g.SetLimit(o.Parallel)
	errs := make([]error, len(repos))
	for i, repo := range repos {
		g.Go(func() error {
			errs[i] = pushOne(ctx, repo, path, name)
			return nil
		})
	}
	for _, n := range ahead {
		p := filepath.Join(filepath.Dir(path), n)
		for _, repo := range repos {
			g.Go(func() error {
				// Best effort: PostgreSQL asks for each of these again,
				// and that call reports any failure.
				if err := pushOne(ctx, repo, p, n); err != nil && ctx.Err() == nil {
					o.Log.Warn("pushing ahead failed", "file", n, "repo", repo.String(), "error", err)
				}
				return nil
			})
		}
	}
	g.Wait()
	if len(repos) == 1 {
		return errs[0]
	}
	for i, err := range errs {
		if err != nil {
			errs[i] = &RepoError{Repo: repos[i].String(), Err: err}
		}
	}
	return JoinErrors(errs...)
}

func pushOne(ctx context.Context, repo *repository.Repository, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("wal-push: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("wal-push: %w", err)
	}
	size := fi.Size()
	// A segment names its cluster in its first page: a repository of
	// another cluster (or of another segment size) is refused before
	// anything is stored, and a new repository is bound to this one.
	head := make([]byte, min(size, 512))
	if n, err := f.ReadAt(head, 0); n < len(head) {
		return fmt.Errorf("wal-push: read %s: %w", path, err)
	}
	if h, ok := manifest.ParseWALHeader(head); ok {
		if err := repo.Bind(ctx, strconv.FormatUint(h.SystemID, 10), h.SegmentSize); err != nil {
			return fmt.Errorf("wal-push %s: %w", name, err)
		}
	}
	if ok, err := repo.HasWAL(ctx, name); err == nil && ok {
		// Pushed ahead by an earlier call (or a retry): make sure it is
		// the same file before telling PostgreSQL it is archived.
		return verifySame(ctx, repo, name, path, io.NewSectionReader(f, 0, size))
	}
	if _, err := repo.PutWALFrom(ctx, chunker.NewCompressor(), name, io.NewSectionReader(f, 0, size), size); err != nil {
		return fmt.Errorf("wal-push %s: %w", name, err)
	}
	return nil
}

// verifySame compares the archived copy of name with local, streaming
// both through SHA-256.
func verifySame(ctx context.Context, repo *repository.Repository, name, path string, local *io.SectionReader) error {
	stored, err := repo.WALSum(ctx, chunker.NewDecompressor(), name)
	if err != nil {
		return fmt.Errorf("wal-push %s: compare with the archived copy: %w", name, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, local); err != nil {
		return fmt.Errorf("wal-push: read %s: %w", path, err)
	}
	if stored.RawSize != local.Size() || !bytes.Equal(h.Sum(nil), stored.SHA256[:]) {
		return fmt.Errorf("wal-push %s: %w: the archived copy differs from %s; refusing to overwrite (is another cluster archiving into %s?)",
			name, repository.ErrWALConflict, path, repo)
	}
	return nil
}

// readyFiles lists up to n files marked ready in walDir/archive_status,
// oldest first (history files first, as PostgreSQL does), other than skip.
func readyFiles(walDir, skip string, n int) []string {
	if n <= 0 {
		return nil
	}
	entries, err := os.ReadDir(filepath.Join(walDir, "archive_status"))
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok || name == skip || !manifest.ArchivedWALName(name) {
			continue
		}
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		hi, hj := strings.HasSuffix(names[i], ".history"), strings.HasSuffix(names[j], ".history")
		if hi != hj {
			return hi
		}
		return names[i] < names[j]
	})
	return names[:min(n, len(names))]
}
