package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sync/errgroup"
)

// SyncMethod says how a restore makes what it wrote durable before it
// writes pg_control, the file that makes the directory a cluster.
type SyncMethod string

const (
	// SyncAuto uses syncfs where it is sound (see SyncFS), else fsync.
	SyncAuto SyncMethod = "auto"
	// SyncFsync fsyncs every file and directory written, in parallel, at
	// the end: the kernel then flushes with all the I/O queued at once.
	SyncFsync SyncMethod = "fsync"
	// SyncFS asks the kernel to flush each destination's whole file
	// system in one call (syncfs(2)), as PostgreSQL's --sync-method=syncfs
	// does: one call instead of one per file, which matters with tens of
	// thousands of files. It is sound only on Linux 5.8 or later, where
	// syncfs reports write-back errors, and on local file systems whose
	// sync flushes everything; auto checks both and falls back to fsync.
	// It also flushes other files' dirty data on the same file system.
	SyncFS SyncMethod = "syncfs"
)

// ParseSyncMethod reads a --sync-method value.
func ParseSyncMethod(s string) (SyncMethod, error) {
	switch m := SyncMethod(s); m {
	case SyncAuto, SyncFsync, SyncFS:
		return m, nil
	case "":
		return SyncAuto, nil
	}
	return "", fmt.Errorf("sync method %q: use auto, fsync or syncfs", s)
}

// chooseSync decides, once the destinations are open, which of them are
// flushed with syncfs; the others get an fsync per file.
func (r *restorer) chooseSync() error {
	for _, d := range r.dests {
		switch r.o.SyncMethod {
		case SyncFsync:
			d.syncfs = false
		case SyncFS:
			if ok, why := syncfsSupported(d.self); !ok {
				return fmt.Errorf("--sync-method syncfs for %s: %s; use --sync-method fsync", d.dir, why)
			}
			d.syncfs = true
		default:
			ok, why := syncfsSupported(d.self)
			d.syncfs = ok
			if !ok {
				r.o.Log.Debug("syncing file by file", "dir", d.dir, "reason", why)
			}
		}
	}
	return nil
}

// syncAll makes everything the restore wrote durable: each destination
// flushed with syncfs, or every file and directory written fsynced, in
// parallel rather than after each write. One fsync of a file flushes it
// whatever descriptor wrote it. The parent of each destination is fsynced
// too: it holds the destination's own entry, which may be new, and may be
// on another file system.
func (r *restorer) syncAll(ctx context.Context) error {
	var entries []syncEntry
	for _, e := range r.toSync {
		if e.d == nil || !e.d.syncfs {
			entries = append(entries, e)
		}
	}
	for _, d := range r.dests {
		if d.syncfs {
			if err := syncfs(d.self); err != nil {
				return fmt.Errorf("syncfs %s: %w", d.dir, err)
			}
		} else {
			for dir := range d.dirs {
				entries = append(entries, syncEntry{d: d, path: dir, dir: true})
			}
			entries = append(entries, syncEntry{d: d, path: ".", dir: true})
		}
		entries = append(entries, syncEntry{path: filepath.Dir(d.dir), dir: true})
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
		f, err = e.d.open(e.path)
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
