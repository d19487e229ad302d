package spool

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestFileIsAnonymous(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "pgstow-test-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the spool file is visible in %s: %v", dir, entries)
	}
	if f.Dir() != dir {
		t.Fatalf("Dir() = %s", f.Dir())
	}
	if _, err := f.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("W"), 6); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.NewSectionReader(f, 0, 11))
	if err != nil || string(got) != "hello World" {
		t.Fatalf("read back %q, %v", got, err)
	}
	// Growing pads with zeros; Reset empties it and writes start over.
	if err := f.Truncate(16); err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(io.NewSectionReader(f, 0, 16))
	if !bytes.Equal(got, append([]byte("hello World"), 0, 0, 0, 0, 0)) {
		t.Fatalf("after growing: %q", got)
	}
	if err := f.Reset(4); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("ab"))
	got, _ = io.ReadAll(io.NewSectionReader(f, 0, 100))
	if string(got) != "ab\x00\x00" {
		t.Fatalf("after Reset: %q", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	f, err := Create("", "pgstow-test-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Dir() != os.TempDir() {
		t.Fatalf("Dir() = %s, want %s", f.Dir(), os.TempDir())
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	_, err := Create(missing, "x-*")
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "PGSTOW_SPOOL_DIR") {
		t.Fatalf("missing directory: %v", err)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&fs.PathError{Op: "write", Path: "/x/f", Err: syscall.ENOSPC}, "spool directory is full"},
		{&fs.PathError{Op: "write", Path: "/x/f", Err: syscall.EDQUOT}, "spool directory is full"},
		{&fs.PathError{Op: "open", Path: "/x/f", Err: syscall.EACCES}, "not writable"},
		{&fs.PathError{Op: "write", Path: "/x/f", Err: syscall.EIO}, "write a spool file in /x: write /x/f: input/output error"},
	} {
		got := explain("/x", "write a spool file", tc.err)
		if !errors.Is(got, tc.err) || !strings.Contains(got.Error(), tc.want) {
			t.Errorf("explain(%v) = %v, want it to say %q", tc.err, got, tc.want)
		}
	}
}
