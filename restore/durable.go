package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"

	"golang.org/x/sync/errgroup"
)

// syncAll fsyncs every file and directory the restore wrote, at the end
// and in parallel rather than after each write: the kernel then flushes
// with all the I/O queued at once, which is much faster on most storage,
// and one fsync of a file flushes it whatever descriptor wrote it.
func (r *restorer) syncAll(ctx context.Context) error {
	entries := slices.Clone(r.toSync)
	for _, d := range r.dests {
		for dir := range d.dirs {
			entries = append(entries, syncEntry{d: d, path: dir, dir: true})
		}
		entries = append(entries,
			syncEntry{d: d, path: ".", dir: true},
			// The parent holds the destination's own entry, which
			// may be new.
			syncEntry{path: filepath.Dir(d.dir), dir: true})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2 * runtime.GOMAXPROCS(0))
	for _, e := range entries {
		if gctx.Err() != nil {
			break
		}
		g.Go(e.sync)
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// sync opens the entry read-only and fsyncs it.
func (e syncEntry) sync() error {
	var (
		f    *os.File
		err  error
		name = e.path
	)
	if e.d != nil {
		name = e.d.full(e.path)
		f, err = e.d.root.Open(e.path)
	} else {
		f, err = os.Open(e.path)
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	// Some file systems cannot fsync a directory and say EINVAL; there
	// is nothing more to do for those.
	if e.dir && errors.Is(err, syscall.EINVAL) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	return nil
}
