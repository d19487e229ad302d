// Package file stores a repository in a local directory (or a mounted
// network file system), for backups to a local disk and for tests that need
// real I/O. Object keys map one to one onto paths below the root, so an
// operator can inspect a repository with ls; objects are written to a
// temporary file and renamed (or hard-linked) into place, so that, like on
// the object stores, an object appears only once it is complete and
// durable.
package file

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"iter"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

const (
	// tmpDir is the directory below the root that holds uploads in
	// progress. Keeping it inside the root puts the temporary files on the
	// same file system as their destination, which rename and link need.
	tmpDir = ".tmp"
	// copyBlockBytes is how much Put copies between context checks; it
	// bounds both the buffer each Put holds and how far a cancelled Put
	// reads on.
	copyBlockBytes = 1 << 20
	// publishAttempts bounds the retries when a concurrent Delete prunes
	// the directory a Put has just created (see publish).
	publishAttempts = 3
	fileMode        = 0o600
	dirMode         = 0o700
)

// Store is a providers.Store in a local directory. It is safe for
// concurrent use, also by several processes sharing the directory.
type Store struct {
	root string // absolute and clean
	own  ownership
	// buffers holds *[]byte of copyBlockBytes, reused across Puts so that
	// many small uploads do not each allocate a megabyte.
	buffers sync.Pool
}

var _ providers.Store = (*Store)(nil)

// Open opens the repository directory root, creating it (mode 0700) if it
// is missing. A relative root is made absolute now, so that the store does
// not change meaning if the working directory does.
func Open(ctx context.Context, root string) (*Store, error) {
	if root == "" {
		return nil, fmt.Errorf("open file store: empty directory name")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open file store %s: %w", root, err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open file store %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, dirMode); err != nil {
		return nil, fmt.Errorf("open file store %s: %w", abs, err)
	}
	// MkdirAll accepts an existing directory but also reports a file in
	// the way only for missing paths; check explicitly for a clear error.
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("open file store %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open file store %s: not a directory", abs)
	}
	s := &Store{
		root: abs,
		own:  ownershipOf(fi, os.Geteuid(), os.Getegid()),
	}
	s.buffers.New = func() any {
		b := make([]byte, copyBlockBytes)
		return &b
	}
	// A reader (a restore host, restore_command as the server's user)
	// may not be allowed to write: it gets the error on its first Put,
	// which writeTemp retries the directory for, not on opening.
	if err := s.makeTmpDir(); err != nil && !isPermission(err) {
		return nil, fmt.Errorf("open file store %s: %w", abs, err)
	}
	return s, nil
}

// makeTmpDir creates the upload directory if it is missing and gives it
// the repository's owner and mode. An existing one with another owner or
// mode is corrected too: it is the store's own, and a root-owned one (left
// by a version that did not adopt the owner, or by a crash between mkdir
// and chown) would keep every other user of the repository from writing.
// When it adjusts owners or modes it refuses one that is not a real
// directory (adoptDir says why).
func (s *Store) makeTmpDir() error {
	dir := filepath.Join(s.root, tmpDir)
	err := os.Mkdir(dir, dirMode)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if !s.own.adjusts() {
		return nil
	}
	if err != nil { // it existed
		fi, err := os.Lstat(dir)
		if err != nil {
			return err
		}
		// A symlink the repository's owner put there would otherwise
		// take root's uploads elsewhere.
		if !fi.IsDir() {
			return notDirError(dir, syscall.ENOTDIR)
		}
		if !s.own.differs(fi) {
			return nil
		}
	}
	return s.own.adoptDir(dir)
}

// inTmpDir calls create with the upload directory, recreating the
// directory once if someone removed it, e.g. while cleaning up after a
// crash, rather than failing every Put.
func (s *Store) inTmpDir(create func(dir string) error) error {
	dir := filepath.Join(s.root, tmpDir)
	err := create(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err = s.makeTmpDir(); err == nil {
			err = create(dir)
		}
	}
	return err
}

// urlExample is quoted in URL errors: the commonest mistake is
// file://relative/path, which a URL parser reads as host "relative".
const urlExample = "file:///var/backups/pgstow"

// OpenURL opens a file:///absolute/path repository URL. Hosts other than
// "localhost", relative paths, queries and fragments are rejected rather
// than ignored, since each suggests the user meant something this store
// would silently not do.
func OpenURL(ctx context.Context, u *url.URL) (*Store, error) {
	if u == nil {
		return nil, fmt.Errorf("open file store: no URL")
	}
	if u.Scheme != "file" {
		return nil, fmt.Errorf("open file store %q: scheme %q is not file", providers.RedactURL(u), u.Scheme)
	}
	if u.Opaque != "" || u.Path == "" || !strings.HasPrefix(u.Path, "/") {
		return nil, fmt.Errorf("open file store %q: file:// URL needs an absolute path, e.g. %s", providers.RedactURL(u), urlExample)
	}
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("open file store %q: host %q is not supported; a file:// URL needs an absolute path, e.g. %s", providers.RedactURL(u), u.Host, urlExample)
	}
	if u.User != nil {
		return nil, fmt.Errorf("open file store %q: user information is not supported", providers.RedactURL(u))
	}
	if u.RawQuery != "" || u.ForceQuery {
		return nil, fmt.Errorf("open file store %q: query parameters are not supported", providers.RedactURL(u))
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("open file store %q: fragments are not supported", providers.RedactURL(u))
	}
	return Open(ctx, filepath.Clean(u.Path))
}

// String names the store as a file URL.
func (s *Store) String() string { return "file://" + s.root }

// Close does nothing: the store holds no open files between calls.
func (s *Store) Close() error { return nil }

// keyPath maps a key to its path below root. Since ValidateKey rules out
// empty, "." and ".." elements and leading slashes, the joined path is
// always strictly inside root. Keys under tmpDir are refused so that an
// object can never collide with an upload in progress.
func keyPath(root, key string) (string, error) {
	if err := providers.ValidateKey(key); err != nil {
		return "", err
	}
	if key == tmpDir || strings.HasPrefix(key, tmpDir+"/") {
		return "", fmt.Errorf("object key %q: %q is reserved for the file store's uploads in progress", key, tmpDir)
	}
	return filepath.Join(root, filepath.FromSlash(key)), nil
}

func (s *Store) path(key string) (string, error) { return keyPath(s.root, key) }

// isNotExist also treats ENOTDIR as missing: a path through a file, as
// for key "a/b" when "a" is an object, names no object.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Put writes body to a temporary file, checks its length and CRC32C, syncs
// it and only then moves it into place, so a crash or a failure never
// leaves a partial object under key.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts providers.PutOptions) error {
	final, err := providers.CheckPut(ctx, s, key, size, s.path)
	if err != nil {
		return err
	}
	tmp, err := s.writeTemp(ctx, key, body, size, opts)
	if err != nil {
		return err
	}
	err = s.publish(ctx, key, tmp, final, opts.IfAbsent)
	// After a rename tmp is gone, and removing it again could hit another
	// Put's new temporary file of the same name; after a link or a
	// failure it must go.
	if err != nil || opts.IfAbsent {
		_ = os.Remove(tmp)
	}
	return err
}

// writeTemp copies exactly size bytes of body into a new, synced and
// closed temporary file and returns its name. On failure the file is gone.
func (s *Store) writeTemp(ctx context.Context, key string, body io.Reader, size int64, opts providers.PutOptions) (name string, err error) {
	var f *os.File
	err = s.inTmpDir(func(uploads string) (err error) {
		f, err = os.CreateTemp(uploads, "put-*")
		return err
	})
	if err != nil {
		return "", fmt.Errorf("put %q into %s: create temporary file: %w", key, s, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	// Before any data and long before the rename, so that the object is
	// never visible with another owner, not even after a crash.
	if err := s.own.adoptFile(f); err != nil {
		return "", fmt.Errorf("put %q into %s: %w", key, s, err)
	}

	crc, err := s.copyBody(ctx, key, &directWriter{f: f}, body, size)
	if err != nil {
		return "", err
	}
	if opts.HasCRC32C && crc != opts.CRC32C {
		return "", fmt.Errorf("put %q into %s: body has CRC32C %08x, expected %08x: %w", key, s, crc, opts.CRC32C, providers.ErrChecksum)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("put %q into %s: sync: %w", key, s, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("put %q into %s: close: %w", key, s, err)
	}
	return f.Name(), nil
}

// copyBody copies exactly size bytes from body to w in blocks, checking
// ctx between blocks so that cancelling a large Put stops it promptly, and
// returns their CRC32C. A body that ends early or goes on past size is an
// error: the caller's size is wrong, and storing a prefix would silently
// truncate the object.
func (s *Store) copyBody(ctx context.Context, key string, w io.Writer, body io.Reader, size int64) (uint32, error) {
	if wt, ok := body.(io.WriterTo); ok {
		return s.writeBodyTo(ctx, key, w, wt, size)
	}
	bufp := s.buffers.Get().(*[]byte)
	defer s.buffers.Put(bufp)
	buf := *bufp
	var crc uint32
	var done int64
	for done < size {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("put %q into %s: %w", key, s, err)
		}
		n, err := io.ReadFull(body, buf[:min(int64(len(buf)), size-done)])
		crc = crc32.Update(crc, manifest.Castagnoli, buf[:n])
		if _, werr := w.Write(buf[:n]); werr != nil {
			return 0, fmt.Errorf("put %q into %s: write: %w", key, s, werr)
		}
		done += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("put %q into %s: body ended after %d of %d bytes: %w", key, s, done, size, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return 0, fmt.Errorf("put %q into %s: read body: %w", key, s, err)
		}
	}
	var extra [1]byte
	switch _, err := io.ReadFull(body, extra[:]); {
	case err == nil:
		return 0, fmt.Errorf("put %q into %s: body is longer than the given size %d", key, s, size)
	case !errors.Is(err, io.EOF):
		return 0, fmt.Errorf("put %q into %s: read body: %w", key, s, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put %q into %s: %w", key, s, err)
	}
	return crc, nil
}

// writeBodyTo is copyBody's fast path for a body that writes itself out
// (a *bytes.Reader over a pooled chunk buffer, as the uploader sends): the
// bytes go from the caller's memory to the file in one write, not through
// a copy buffer. The same rules hold: exactly size bytes, CRC32C of what
// was written.
func (s *Store) writeBodyTo(ctx context.Context, key string, w io.Writer, body io.WriterTo, size int64) (uint32, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put %q into %s: %w", key, s, err)
	}
	sw := &sizedWriter{w: w, left: size, table: manifest.Castagnoli}
	_, err := body.WriteTo(sw)
	switch {
	case sw.over:
		return 0, fmt.Errorf("put %q into %s: body is longer than the given size %d", key, s, size)
	case sw.werr != nil:
		return 0, fmt.Errorf("put %q into %s: write: %w", key, s, sw.werr)
	case err != nil:
		return 0, fmt.Errorf("put %q into %s: read body: %w", key, s, err)
	case sw.left > 0:
		return 0, fmt.Errorf("put %q into %s: body ended after %d of %d bytes: %w", key, s, size-sw.left, size, io.ErrUnexpectedEOF)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put %q into %s: %w", key, s, err)
	}
	return sw.crc, nil
}

// sizedWriter passes at most left bytes on to w, computing their CRC32C,
// and fails a write that would go past them.
type sizedWriter struct {
	w     io.Writer
	left  int64
	table *crc32.Table
	crc   uint32
	over  bool
	werr  error
}

var errBodyTooLong = errors.New("body longer than its size")

func (sw *sizedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > sw.left {
		sw.over = true
		return 0, errBodyTooLong
	}
	sw.crc = crc32.Update(sw.crc, sw.table, p)
	n, err := sw.w.Write(p)
	sw.left -= int64(n)
	if err != nil {
		sw.werr = err
	}
	return n, err
}

// publish moves the finished temporary file tmp to final. With ifAbsent it
// hard-links instead of renaming, because link, unlike rename, fails
// atomically when the target exists; the caller then removes tmp. The
// directories whose entries changed are synced so that the object survives
// a crash once Put has returned.
func (s *Store) publish(ctx context.Context, key, tmp, final string, ifAbsent bool) error {
	dir := filepath.Dir(final)
	for attempt := 1; ; attempt++ {
		changed, err := s.mkdirs(dir)
		if err != nil {
			return fmt.Errorf("put %q into %s: %w", key, s, err)
		}
		// The last chance to honour a cancellation: after this the
		// object is visible.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("put %q into %s: %w", key, s, err)
		}
		if ifAbsent {
			err = os.Link(tmp, final)
		} else {
			err = os.Rename(tmp, final)
		}
		if err == nil {
			for _, d := range changed {
				if err := syncDir(d); err != nil {
					return fmt.Errorf("put %q into %s: %w", key, s, err)
				}
			}
			return nil
		}
		// A concurrent Delete prunes empty directories and may remove
		// the one just created before the object lands in it.
		if errors.Is(err, fs.ErrNotExist) && attempt < publishAttempts {
			continue
		}
		if fi, serr := os.Lstat(final); serr == nil && fi.IsDir() {
			// Not wrapped: the rename's EEXIST/ENOTEMPTY would read as
			// ErrExist, which writers of immutable objects treat as
			// success.
			return fmt.Errorf("put %q into %s: a directory of other objects has this name", key, s)
		}
		if ifAbsent && errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put %q into %s: %w", key, s, providers.ErrExist)
		}
		return fmt.Errorf("put %q into %s: %w", key, s, err)
	}
}

// mkdirs creates dir and its missing parents and returns the directories
// whose entries publishing will have changed: dir itself and the parent of
// every directory created.
func (s *Store) mkdirs(dir string) ([]string, error) {
	changed := []string{dir}
	fi, err := os.Stat(dir)
	if err == nil && fi.IsDir() {
		return changed, nil
	}
	var missing []string // deepest first
	for d := dir; d != s.root; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	for _, d := range slices.Backward(missing) {
		if err := s.mkdir(d); err != nil {
			return nil, err
		}
		changed = append(changed, filepath.Dir(d))
	}
	return changed, nil
}

// mkdir creates one directory, accepting one that a concurrent Put has
// just created. When the directory needs another owner or mode than
// creation gives it, it is made in the upload directory, adjusted there and
// renamed into place, so that it never appears, not even after a crash,
// with an owner that would lock the repository's owner out of it. The
// rename never replaces a directory another Put made first (renameDir),
// so concurrent creators agree on the first one.
func (s *Store) mkdir(dir string) error {
	if !s.own.adjusts() {
		if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return nil
	}
	var tmp string
	err := s.inTmpDir(func(uploads string) (err error) {
		tmp, err = os.MkdirTemp(uploads, "dir-*")
		return err
	})
	if err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	if err := s.own.adoptDir(tmp); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := renameDir(tmp, dir); err != nil {
		_ = os.Remove(tmp)
		// EEXIST and ENOTEMPTY both match ErrExist: another Put made
		// it first. A file in the way is left for the caller's rename
		// into it to report.
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return nil
}

// syncDir makes a directory's entries durable. File systems that cannot
// sync directories (EINVAL, e.g. some network ones) are accepted as is.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}

// Get opens the object and returns a reader of the requested range. The
// open file keeps the object's content even if it is overwritten or
// deleted while being read.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	p, err := providers.CheckGet(ctx, s, key, offset, s.path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if isNotExist(err) {
		return nil, fmt.Errorf("get %q from %s: %w", key, s, providers.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("get %q from %s: %w", key, s, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("get %q from %s: %w", key, s, err)
	}
	if fi.IsDir() {
		_ = f.Close()
		return nil, fmt.Errorf("get %q from %s: %w", key, s, providers.ErrNotExist)
	}
	n := max(fi.Size()-offset, 0)
	if length >= 0 {
		n = min(n, length)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, offset, n), f}, nil
}

// Stat reports the object's size and modification time.
func (s *Store) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	p, err := providers.CheckStat(ctx, s, key, s.path)
	if err != nil {
		return providers.ObjectInfo{}, err
	}
	fi, err := os.Stat(p)
	if isNotExist(err) || (err == nil && fi.IsDir()) {
		return providers.ObjectInfo{}, fmt.Errorf("stat %q in %s: %w", key, s, providers.ErrNotExist)
	}
	if err != nil {
		return providers.ObjectInfo{}, fmt.Errorf("stat %q in %s: %w", key, s, err)
	}
	return providers.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete removes the object, then the directories it leaves empty, so that
// deleted prefixes do not pile up as empty directories that every List
// would have to walk. The root itself is never removed.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := providers.CheckDelete(ctx, s, key, s.path)
	if err != nil {
		return err
	}
	// os.Remove would also remove an empty directory, which is no object.
	fi, err := os.Lstat(p)
	if isNotExist(err) || (err == nil && fi.IsDir()) {
		return fmt.Errorf("delete %q from %s: %w", key, s, providers.ErrNotExist)
	}
	if err != nil {
		return fmt.Errorf("delete %q from %s: %w", key, s, err)
	}
	if err := os.Remove(p); isNotExist(err) {
		return fmt.Errorf("delete %q from %s: %w", key, s, providers.ErrNotExist)
	} else if err != nil {
		return fmt.Errorf("delete %q from %s: %w", key, s, err)
	}
	// Best effort: removing a non-empty directory fails, which ends the
	// pruning; a concurrent Put recreates what it needs (see publish).
	for d := filepath.Dir(p); len(d) > len(s.root); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
	return nil
}

// List walks the directory tree in key order. A directory's entries are
// sorted by name, but with a "/" appended to directory names: the keys
// below directory "a" all start with "a/", so they sort after a sibling
// object "a-c" ('-' < '/') although a plain walk would visit "a" first.
// Only directories that can hold keys with the prefix are entered, and only
// the listings of the directories on the current path are held in memory.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		// Start in the deepest directory the prefix names in full.
		dirKey := ""
		if i := strings.LastIndex(prefix, "/"); i >= 0 {
			dirKey = prefix[:i+1]
			if _, err := s.path(dirKey[:i]); err != nil {
				return // no valid key has this prefix
			}
		}
		s.walk(ctx, dirKey, prefix, yield)
	}
}

// listEntry is a directory entry that can hold keys with the listed prefix.
type listEntry struct {
	sortKey string // the key, with a trailing "/" for directories
	entry   fs.DirEntry
}

// walk yields the objects with prefix below the directory of dirKey ("" for
// the root, otherwise ending in "/"). It reports whether to go on.
func (s *Store) walk(ctx context.Context, dirKey, prefix string, yield func(providers.ObjectInfo, error) bool) bool {
	if err := ctx.Err(); err != nil {
		yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, err))
		return false
	}
	dir := filepath.Join(s.root, filepath.FromSlash(dirKey))
	dirents, err := os.ReadDir(dir)
	if isNotExist(err) {
		// The prefix's directory does not exist, is an object, or was
		// pruned by a concurrent Delete: no keys here.
		return true
	}
	if err != nil {
		yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, err))
		return false
	}
	entries := make([]listEntry, 0, len(dirents))
	for _, e := range dirents {
		if dirKey == "" && e.Name() == tmpDir {
			continue
		}
		key := dirKey + e.Name()
		switch {
		case e.IsDir():
			key += "/"
			if !strings.HasPrefix(key, prefix) && !strings.HasPrefix(prefix, key) {
				continue
			}
		case e.Type().IsRegular():
			if !strings.HasPrefix(key, prefix) {
				continue
			}
		default:
			continue // symlinks and the like were not written by Put
		}
		entries = append(entries, listEntry{sortKey: key, entry: e})
	}
	dirents = nil
	slices.SortFunc(entries, func(a, b listEntry) int { return strings.Compare(a.sortKey, b.sortKey) })

	for _, e := range entries {
		if e.entry.IsDir() {
			if !s.walk(ctx, e.sortKey, prefix, yield) {
				return false
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, err))
			return false
		}
		fi, err := e.entry.Info()
		if isNotExist(err) {
			continue // deleted since the directory was read
		}
		if err != nil {
			yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, err))
			return false
		}
		if !yield(providers.ObjectInfo{Key: e.sortKey, Size: fi.Size(), ModTime: fi.ModTime()}, nil) {
			return false
		}
	}
	return true
}
