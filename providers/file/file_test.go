package file_test

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/file"
	"github.com/pgstow/pgstow/providers/providertest"
)

func open(t *testing.T, root string) *file.Store {
	t.Helper()
	s, err := file.Open(t.Context(), root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T) providers.Store { return open(t, t.TempDir()) })
}

// checkNoLeftovers fails unless the upload directory is empty.
func checkNoLeftovers(t *testing.T, root string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, ".tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("leftover temporary file %s", e.Name())
	}
}

// cancellingReader cancels a context after its first read. It has no
// WriteTo, so Put copies it block by block.
type cancellingReader struct {
	r      *bytes.Reader
	cancel context.CancelFunc
}

func (c cancellingReader) Read(p []byte) (int, error) {
	defer c.cancel()
	return c.r.Read(p)
}

func (c cancellingReader) Seek(off int64, whence int) (int64, error) { return c.r.Seek(off, whence) }

// cancellingWriterTo cancels a context while it writes itself out, as a
// body taking Put's one-write path would be cancelled meanwhile.
type cancellingWriterTo struct {
	*bytes.Reader
	cancel context.CancelFunc
}

func (c cancellingWriterTo) WriteTo(w io.Writer) (int64, error) {
	defer c.cancel()
	return c.Reader.WriteTo(w)
}

// TestNoLeftovers checks that no Put, failed or not, leaves a file in the
// upload directory.
func TestNoLeftovers(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	ctx := t.Context()
	data := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // 3.2 MB
	body := func() *bytes.Reader { return bytes.NewReader(data) }
	size := int64(len(data))

	if err := s.Put(ctx, "ok/plain", body(), size, providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "ok/absent", body(), size, providers.PutOptions{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "ok/dir/x", body(), size, providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	checkNoLeftovers(t, root)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	midway, cancelMidway := context.WithCancel(ctx)
	defer cancelMidway()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		key  string
		body *bytes.Reader
		size int64
		opts providers.PutOptions
	}{
		{"checksum", ctx, "fail", body(), size, providers.PutOptions{CRC32C: 1, HasCRC32C: true}},
		{"short body", ctx, "fail", body(), size + 1, providers.PutOptions{}},
		{"long body", ctx, "fail", body(), size - 1, providers.PutOptions{}},
		{"exists", ctx, "ok/absent", body(), size, providers.PutOptions{IfAbsent: true}},
		{"cancelled", cancelled, "fail", body(), size, providers.PutOptions{}},
		{"directory in the way", ctx, "ok/dir", body(), size, providers.PutOptions{}},
		{"directory in the way, if absent", ctx, "ok/dir", body(), size, providers.PutOptions{IfAbsent: true}},
		{"object in the way", ctx, "ok/plain/below", body(), size, providers.PutOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Put(tc.ctx, tc.key, tc.body, tc.size, tc.opts); err == nil {
				t.Fatal("Put succeeded")
			}
			checkNoLeftovers(t, root)
		})
	}
	t.Run("cancelled midway", func(t *testing.T) {
		err := s.Put(midway, "fail", cancellingReader{body(), cancelMidway}, size, providers.PutOptions{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put = %v, want context.Canceled", err)
		}
		checkNoLeftovers(t, root)
	})
	t.Run("cancelled while writing itself out", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		err := s.Put(ctx, "fail", cancellingWriterTo{body(), cancel}, size, providers.PutOptions{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put = %v, want context.Canceled", err)
		}
		checkNoLeftovers(t, root)
	})
	if _, err := s.Stat(ctx, "fail"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(fail) = %v, want ErrNotExist", err)
	}
}

// TestDirectoryInTheWay checks that a key that is a directory of other
// keys is refused with an error that does not read as ErrExist, which
// writers of immutable objects would take for success.
func TestDirectoryInTheWay(t *testing.T) {
	s := open(t, t.TempDir())
	if err := s.Put(t.Context(), "a/b", bytes.NewReader(nil), 0, providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, opts := range []providers.PutOptions{{}, {IfAbsent: true}} {
		err := s.Put(t.Context(), "a", bytes.NewReader(nil), 0, opts)
		if err == nil || errors.Is(err, providers.ErrExist) {
			t.Errorf("Put(a) with %+v = %v, want an error other than ErrExist", opts, err)
		}
	}
}

func TestOpenURL(t *testing.T) {
	dir := t.TempDir()
	spaced := filepath.Join(dir, "with space")
	for _, tc := range []struct {
		url  string
		root string // "" when an error containing wantErr is expected
		err  string
	}{
		{url: "file://" + dir, root: dir},
		{url: "file://" + dir + "/", root: dir},
		{url: "file://localhost" + dir + "/repo", root: dir + "/repo"},
		{url: (&url.URL{Scheme: "file", Path: spaced}).String(), root: spaced},
		{url: "FILE://" + dir, root: dir},
		{url: "file://relative/path", err: "file:// URL needs an absolute path, e.g. file:///var/backups/pgstow"},
		{url: "file://relative", err: "file:// URL needs an absolute path"},
		{url: "file:relative", err: "file:// URL needs an absolute path"},
		{url: "file:", err: "file:// URL needs an absolute path"},
		{url: "file://", err: "file:// URL needs an absolute path"},
		{url: "file://localhost", err: "file:// URL needs an absolute path"},
		{url: "file://otherhost" + dir, err: `host "otherhost"`},
		{url: "file://localhost:22" + dir, err: `host "localhost:22"`},
		{url: "file://user@localhost" + dir, err: "user information"},
		{url: "file://" + dir + "?sync=false", err: "query"},
		{url: "file://" + dir + "?", err: "query"},
		{url: "file://" + dir + "#frag", err: "fragment"},
		{url: "s3://bucket/prefix", err: `scheme "s3"`},
	} {
		t.Run(tc.url, func(t *testing.T) {
			u, err := providers.ParseURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			s, err := file.OpenURL(t.Context(), u)
			if tc.root == "" {
				if err == nil {
					t.Fatalf("OpenURL succeeded as %s, want an error containing %q", s, tc.err)
				}
				if !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("OpenURL error %q does not contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got, want := s.String(), "file://"+tc.root; got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
			if fi, err := os.Stat(tc.root); err != nil || !fi.IsDir() {
				t.Errorf("root %s not created: %v", tc.root, err)
			}
		})
	}
	if _, err := file.OpenURL(t.Context(), nil); err == nil {
		t.Error("OpenURL(nil) succeeded")
	}
}

// TestRelativeURLRejected pins the message users see for the commonest
// mistake, file://path meant as a relative path.
func TestRelativeURLRejected(t *testing.T) {
	u, err := providers.ParseURL("file://backups/pgstow")
	if err != nil {
		t.Fatal(err)
	}
	_, err = file.OpenURL(t.Context(), u)
	const want = "file:// URL needs an absolute path, e.g. file:///var/backups/pgstow"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("OpenURL(%s) = %v, want an error containing %q", u, err, want)
	}
	if _, err := os.Stat("backups"); err == nil {
		t.Error("a relative directory was created")
	}
}

func TestPermissions(t *testing.T) {
	root := filepath.Join(t.TempDir(), "new", "repo")
	s := open(t, root)
	for _, opts := range []providers.PutOptions{{}, {IfAbsent: true}} {
		key := "a/b/c"
		if opts.IfAbsent {
			key = "a/d/e"
		}
		if err := s.Put(t.Context(), key, bytes.NewReader([]byte("x")), 1, opts); err != nil {
			t.Fatal(err)
		}
	}
	for path, want := range map[string]fs.FileMode{
		"new/repo":       fs.ModeDir | 0o700,
		"new/repo/.tmp":  fs.ModeDir | 0o700,
		"new/repo/a":     fs.ModeDir | 0o700,
		"new/repo/a/b":   fs.ModeDir | 0o700,
		"new/repo/a/b/c": 0o600,
		"new/repo/a/d/e": 0o600,
		"new/repo/a/d":   fs.ModeDir | 0o700,
	} {
		fi, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(root)), path))
		if err != nil {
			t.Error(err)
			continue
		}
		if got := fi.Mode(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
}

func TestOpenNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := file.Open(t.Context(), f); err == nil {
		t.Errorf("Open of a file succeeded as %s", s)
	}
	if s, err := file.Open(t.Context(), ""); err == nil {
		t.Errorf("Open(\"\") succeeded as %s", s)
	}
}

func TestRelativeOpenIsAbsolute(t *testing.T) {
	t.Chdir(t.TempDir())
	s := open(t, "repo")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "file://"+filepath.Join(wd, "repo"); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestTmpIsHidden checks that uploads in progress are neither listed nor
// addressable as objects.
func TestTmpIsHidden(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	if err := os.WriteFile(filepath.Join(root, ".tmp", "put-stray"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), ".tmpx", bytes.NewReader(nil), 0, providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for info, err := range s.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		if info.Key != ".tmpx" {
			t.Errorf("List yielded %q", info.Key)
		}
	}
	for info, err := range s.List(t.Context(), ".tmp/") {
		t.Errorf("List(.tmp/) yielded %q, %v", info.Key, err)
	}
	for _, key := range []string{".tmp", ".tmp/put-stray", ".tmp/x/y"} {
		if err := s.Put(t.Context(), key, bytes.NewReader(nil), 0, providers.PutOptions{}); err == nil {
			t.Errorf("Put(%q) succeeded", key)
		}
		if _, err := s.Stat(t.Context(), key); err == nil {
			t.Errorf("Stat(%q) succeeded", key)
		}
	}
}

// TestDeletePrunes checks that Delete removes the directories it empties
// but neither the root nor directories still in use.
func TestDeletePrunes(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	for _, key := range []string{"a/b/c/d", "a/x"} {
		if err := s.Put(t.Context(), key, bytes.NewReader(nil), 0, providers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(t.Context(), "a/b/c/d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a", "b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a/b still there: %v", err)
	}
	if err := s.Delete(t.Context(), "a/x"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != ".tmp" {
		t.Errorf("root holds %v, want only .tmp", entries)
	}
}

// TestBodySize checks both copy paths (a body that writes itself out, as
// the uploader's *bytes.Reader does, and a plain reader) against the size
// rule: exactly size bytes are stored, anything else fails and stores
// nothing, and the CRC32C is of what was written.
func TestBodySize(t *testing.T) {
	data := bytes.Repeat([]byte("pgstow-"), 1<<16)
	crc := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	type plain struct{ io.ReadSeeker }
	bodies := map[string]func() io.ReadSeeker{
		"writer-to": func() io.ReadSeeker { return bytes.NewReader(data) },
		"plain":     func() io.ReadSeeker { return plain{bytes.NewReader(data)} },
	}
	tests := []struct {
		name    string
		size    int64
		crc     uint32
		wantErr string
	}{
		{"exact", int64(len(data)), crc, ""},
		{"short body", int64(len(data)) + 1, 0, "body ended after"},
		{"long body", int64(len(data)) - 1, 0, "longer than the given size"},
		{"bad checksum", int64(len(data)), crc + 1, "CRC32C"},
	}
	for kind, body := range bodies {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				s := open(t, t.TempDir())
				err := s.Put(t.Context(), "k", body(), tt.size, providers.PutOptions{CRC32C: tt.crc, HasCRC32C: tt.crc != 0})
				if tt.wantErr == "" {
					if err != nil {
						t.Fatal(err)
					}
					got, err := providers.ReadAll(t.Context(), s, "k")
					if err != nil || !bytes.Equal(got, data) {
						t.Fatalf("stored %d bytes (%v), want the body", len(got), err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if _, err := s.Stat(t.Context(), "k"); !errors.Is(err, providers.ErrNotExist) {
					t.Fatalf("a failed put left an object (stat: %v)", err)
				}
			})
		}
	}
}
