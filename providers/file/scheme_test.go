package file_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/file"
)

func TestScheme(t *testing.T) {
	reg := providers.NewRegistry(file.Scheme())
	for _, tc := range []struct {
		name    string
		url     func(dir string) string
		create  bool
		badURL  bool
		missing bool   // a *file.MissingDirError
		wantErr string // "" when the store opens
		made    bool   // the directory exists afterwards
	}{
		{name: "existing", url: func(d string) string { return "file://" + d }, made: true},
		{name: "existing, localhost", url: func(d string) string { return "file://localhost" + d }, made: true},
		{name: "created", url: func(d string) string { return "file://" + d + "/new/repo" }, create: true, made: true},
		{
			// Only writers create it: a typo must not read as an
			// empty repository, nor leave a directory behind.
			name: "missing", url: func(d string) string { return "file://" + d + "/new/repo" }, missing: true,
			wantErr: "the directory {dir}/new/repo does not exist; check the path",
		},
		{name: "relative", url: func(string) string { return "file://backups/pgstow" }, create: true, badURL: true, wantErr: "a file:// URL needs an absolute path"},
		{name: "opaque", url: func(string) string { return "file:backups" }, create: true, badURL: true, wantErr: "a file:// URL needs an absolute path"},
		{name: "query", url: func(d string) string { return "file://" + d + "?mode=0700" }, create: true, badURL: true, wantErr: "takes no user, query parameters or fragment"},
		{name: "user", url: func(d string) string { return "file://u:pw@localhost" + d }, create: true, badURL: true, wantErr: "takes no user"},
		{name: "fragment", url: func(d string) string { return "file://" + d + "#x" }, create: true, badURL: true, wantErr: "takes no user, query parameters or fragment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			raw := tc.url(dir)
			s, err := reg.Open(t.Context(), raw, providers.OpenOptions{Create: tc.create})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Open(%s): %v", raw, err)
				}
				s.Close()
			} else {
				want := strings.ReplaceAll(tc.wantErr, "{dir}", dir)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("Open(%s) = %v, want an error containing %q", raw, err, want)
				}
				if errors.Is(err, providers.ErrBadURL) != tc.badURL {
					t.Errorf("Open(%s) = %v: ErrBadURL %v, want %v", raw, err, !tc.badURL, tc.badURL)
				}
				var md *file.MissingDirError
				if errors.As(err, &md) != tc.missing || (tc.missing && !errors.Is(err, providers.ErrNotExist)) {
					t.Errorf("Open(%s) = %v: MissingDirError %v, want %v (and ErrNotExist)", raw, err, !tc.missing, tc.missing)
				}
			}
			_, statErr := os.Stat(filepath.Join(dir, "new", "repo"))
			if strings.Contains(raw, "/new/repo") && (statErr == nil) != tc.made {
				t.Errorf("after Open(%s) the directory exists: %v, want %v", raw, statErr == nil, tc.made)
			}
		})
	}
}
