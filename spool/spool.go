// Package spool makes the temporary files pgstow stages data in between a
// stream and the store: a WAL segment as it arrives from the server, and
// its compressed frame, whose size the store needs before the upload
// starts and which a retried upload reads again. Staging on disk rather
// than in memory keeps memory independent of wal_segment_size (up to
// 1 GiB).
//
// A spool file is unlinked as soon as it is created, so nothing is left
// behind whatever happens to the process; the space is freed when the file
// is closed (or the process ends). Failures say which directory is
// missing or full and how to choose another one.
package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// File is a spool file: an unlinked temporary file read and written by
// offset or sequentially.
type File struct {
	f   *os.File
	dir string
	// path is set when the file could not be unlinked at creation (on a
	// system that refuses to remove open files): Close removes it.
	path string
}

// Create makes a new spool file in dir (os.TempDir() when empty); pattern
// names it as os.CreateTemp does, for anyone looking at open files.
func Create(dir, pattern string) (*File, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, explain(dir, "create a spool file", err)
	}
	sf := &File{f: f, dir: dir}
	if err := os.Remove(f.Name()); err != nil {
		sf.path = f.Name()
	}
	return sf, nil
}

// Dir is the directory the file was created in.
func (s *File) Dir() string { return s.dir }

// Write appends p at the current offset.
func (s *File) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	if err != nil {
		err = explain(s.dir, "write a spool file", err)
	}
	return n, err
}

// WriteAt writes p at offset off.
func (s *File) WriteAt(p []byte, off int64) (int, error) {
	n, err := s.f.WriteAt(p, off)
	if err != nil {
		err = explain(s.dir, "write a spool file", err)
	}
	return n, err
}

// ReadAt reads len(p) bytes at offset off; with io.NewSectionReader it
// gives the rewindable, sized body a store's Put takes.
func (s *File) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// Truncate changes the file's size; bytes past the old end read as
// zeros (and take no space on filesystems with sparse files).
func (s *File) Truncate(size int64) error {
	if err := s.f.Truncate(size); err != nil {
		return explain(s.dir, "resize a spool file", err)
	}
	return nil
}

// Reset empties the file, freeing its space, then gives it size bytes of
// zeros (which take no space on filesystems with sparse files) and moves
// the write offset back to the start, for the next use.
func (s *File) Reset(size int64) error {
	if err := s.Truncate(0); err != nil {
		return err
	}
	if err := s.Truncate(size); err != nil {
		return err
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind a spool file in %s: %w", s.dir, err)
	}
	return nil
}

// Close closes the file, which frees its space.
func (s *File) Close() error {
	err := s.f.Close()
	if s.path != "" {
		err = errors.Join(err, os.Remove(s.path))
	}
	return err
}

// explain wraps an error of the spool directory with what to do about it.
func explain(dir, what string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%s in %s: %w: the spool directory is full; free space there, or point --spool-dir (PGSTOW_SPOOL_DIR) at a larger filesystem (docs/tuning.md: about two WAL segments per stream)", what, dir, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s in %s: %w: the spool directory does not exist; create it, or point --spool-dir (PGSTOW_SPOOL_DIR) at one that does", what, dir, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s in %s: %w: the spool directory is not writable by this user; point --spool-dir (PGSTOW_SPOOL_DIR) at one that is", what, dir, err)
	}
	return fmt.Errorf("%s in %s: %w", what, dir, err)
}
