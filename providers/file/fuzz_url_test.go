package file

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

// FuzzFileURL checks how OpenURL takes a file:// repository URL apart,
// without touching anything outside a temporary directory: the URL's
// absolute path is moved below one (file:///a/b opens <tmp>/root/a/b),
// and the checks of the URL run first with a cancelled context, which
// Open refuses before it touches the file system. It checks that
//
//   - the same URL is always accepted or refused alike, with the same
//     message;
//   - an accepted URL has scheme file, no host but localhost, no user
//     information, query or fragment, and an absolute path;
//   - opening an accepted URL for real roots the store at the cleaned
//     path, which stays inside the temporary directory, names the store
//     by it, and creates it with its directory for uploads;
//   - no message shows the password of the URL's user information, which
//     OpenURL refuses.
//
// Run it longer by hand with
//
//	go test -run '^$' -fuzz '^FuzzFileURL$' -fuzztime 10m ./providers/file
func FuzzFileURL(f *testing.F) {
	for _, raw := range []string{
		"file:///var/backups/pgstow",
		"file:///var/backups/pgstow/",
		"file://localhost/srv/repo",
		"file:/srv/repo",
		"FILE:///srv/repo",
		"file:///",
		"file:///with%20space/and%2Fslash",
		"file:///a/./b/../../../../etc",
		"file:///a/.tmp/b",
		"file:///a%00b",
		"file:///" + strings.Repeat("x", 300),
		"file://relative/path",
		"file:relative",
		"file:",
		"file://",
		"file://localhost",
		"file://otherhost/srv/repo",
		"file://localhost:22/srv/repo",
		"file://backup:hunter2hunter2@localhost/srv/repo",
		"file:///srv/repo?sync=false",
		"file:///srv/repo?",
		"file:///srv/repo#frag",
		"file:///srv/%zz",
		"s3://bucket/prefix",
		"/srv/repo",
		"",
	} {
		f.Add(raw)
	}
	base := f.TempDir()
	root := filepath.Join(base, "root")
	f.Fuzz(func(t *testing.T, raw string) {
		// Should a relative path ever get through, it lands here too.
		// (Not f.Chdir: f.Fuzz reads the corpus in testdata/fuzz.)
		t.Chdir(base)
		parse := func(raw string) fileParse { return parseFile(raw, root) }
		got := providertest.CheckURLParse(t, raw, []string{providertest.URLPassword(raw)}, parse, func(p fileParse) []string {
			return []string{p.err}
		})
		if got.opened {
			t.Fatalf("%q: OpenURL with a cancelled context returned a store", raw)
		}
		if !got.accepted {
			return
		}
		u := got.url
		switch {
		case u.Scheme != "file":
			t.Fatalf("%q: accepted with scheme %q", raw, u.Scheme)
		case u.Host != "" && u.Host != "localhost":
			t.Fatalf("%q: accepted with host %q", raw, u.Host)
		case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "":
			t.Fatalf("%q: accepted with user information, query, fragment or opaque part", raw)
		case !strings.HasPrefix(u.Path, root+"/") && u.Path != root:
			t.Fatalf("%q: accepted with path %q, which was not moved below %s", raw, u.Path, root)
		}

		// Each real open starts from an empty directory.
		if err := os.RemoveAll(root); err != nil {
			t.Fatal(err)
		}
		s, err := OpenURL(t.Context(), u)
		if err != nil {
			if mayNotExist(u.Path) {
				return
			}
			t.Fatalf("%q: OpenURL(%s): %v", raw, u, err)
		}
		defer s.Close()
		if want := filepath.Clean(u.Path); s.root != want {
			t.Fatalf("%q: store root %q, want %q", raw, s.root, want)
		}
		if rel, err := filepath.Rel(root, s.root); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("%q: store root %q is outside %s", raw, s.root, root)
		}
		if want := "file://" + s.root; s.String() != want {
			t.Errorf("%q: store name %q, want %q", raw, s.String(), want)
		}
		if fi, err := os.Stat(filepath.Join(s.root, tmpDir)); err != nil || !fi.IsDir() {
			t.Errorf("%q: no upload directory in %s: %v", raw, s.root, err)
		}
	})
}

// fileParse is what OpenURL makes of one repository URL before it touches
// the file system.
type fileParse struct {
	url      *url.URL // nil when providers.ParseURL refuses the URL
	accepted bool     // OpenURL took url; err is then the cancelled context's
	err      string
	// opened says that OpenURL returned a store despite the cancelled
	// context, and so may have touched the file system.
	opened bool
}

// parseFile parses raw and calls OpenURL with a cancelled context, which
// checks the URL and then stops before Open touches the file system. An
// absolute path is first moved below root, so that not even a regression
// of that order could touch anything outside it.
func parseFile(raw, root string) fileParse {
	var p fileParse
	u, err := providers.ParseURL(raw)
	if err != nil {
		p.err = err.Error()
		return p
	}
	if strings.HasPrefix(u.Path, "/") {
		path := root + u.Path
		if rel, err := filepath.Rel(root, filepath.Clean(path)); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			path = filepath.Join(root, filepath.Clean(u.Path))
		}
		u.Path, u.RawPath = path, ""
	}
	p.url = u
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := OpenURL(ctx, u)
	if s != nil {
		s.Close()
		p.opened = true
		return p
	}
	p.accepted = errors.Is(err, context.Canceled)
	p.err = err.Error()
	return p
}

// mayNotExist reports whether Linux may refuse to create path: for a NUL,
// an element longer than 255 bytes, or a path of 4096 bytes or more.
func mayNotExist(path string) bool {
	if strings.ContainsRune(path, 0) || len(path) >= 4096 {
		return true
	}
	for _, el := range strings.Split(path, "/") {
		if len(el) > 255 {
			return true
		}
	}
	return false
}
