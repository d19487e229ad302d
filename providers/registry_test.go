package providers_test

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/mem"
)

// fakeScheme opens a mem store, refuses URLs with a "bad" parameter and
// fails to open those with a "down" one; it records the options it got.
func fakeScheme(name, example string, got *providers.OpenOptions) providers.Scheme {
	return providers.Scheme{Name: name, Example: example, Parse: func(u *url.URL, o providers.OpenOptions) (providers.Opener, error) {
		*got = o
		q := u.Query()
		if q.Has("bad") {
			return nil, providers.BadURL(errors.New("repository " + providers.RedactURL(u) + ": bad parameter"))
		}
		if q.Has("missing") {
			return nil, errors.New("the directory does not exist")
		}
		return func(ctx context.Context) (providers.Store, error) {
			if q.Has("down") {
				return nil, providers.ErrAccessDenied
			}
			return mem.New(), nil
		}, nil
	}}
}

func TestRegistryOpen(t *testing.T) {
	var got providers.OpenOptions
	reg := providers.NewRegistry(fakeScheme("a", "a://x", &got), fakeScheme("b", "b://y", &got), fakeScheme("c", "c://z", &got))
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name, url string
		badURL    bool   // errors.Is(err, ErrBadURL)
		wantErr   string // "" when the store opens
		is        error  // the error wraps this too
	}{
		{name: "opens", url: "b://bucket/p"},
		{name: "empty", url: "", badURL: true, wantErr: "no repository given"},
		{name: "no scheme", url: "/var/backups", badURL: true, wantErr: "has no scheme"},
		{name: "unknown scheme", url: "ftp://u:secret@host/x", badURL: true, wantErr: `repository ftp://u:xxxxx@host/x: unknown scheme "ftp"; use a://x, b://y or c://z`},
		{name: "bad URL", url: "a://x?bad=1", badURL: true, wantErr: "repository a://x: bad parameter"},
		{name: "parse failure", url: "a://x?missing=1", wantErr: "the directory does not exist"},
		{name: "open failure", url: "c://z?down=1&sig=secret", wantErr: "open repository c://z: access denied", is: providers.ErrAccessDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got = providers.OpenOptions{}
			s, err := reg.Open(t.Context(), tc.url, providers.OpenOptions{Create: true, Log: log})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Open(%q): %v", tc.url, err)
				}
				defer s.Close()
				if !got.Create || got.Log != log {
					t.Errorf("the scheme got options %+v, want those given to Open", got)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded, want an error containing %q", tc.url, tc.wantErr)
			}
			if err.Error() != tc.wantErr && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Open(%q) = %q, want it to contain %q", tc.url, err, tc.wantErr)
			}
			if errors.Is(err, providers.ErrBadURL) != tc.badURL {
				t.Errorf("Open(%q) = %v: errors.Is(ErrBadURL) = %v, want %v", tc.url, err, !tc.badURL, tc.badURL)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Open(%q) = %v, want it to wrap %v", tc.url, err, tc.is)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("Open(%q) = %q: the message holds a secret", tc.url, err)
			}
		})
	}
}

func TestRegistryExamples(t *testing.T) {
	var got providers.OpenOptions
	for _, tc := range []struct {
		schemes []providers.Scheme
		want    string
	}{
		{[]providers.Scheme{fakeScheme("a", "a://x", &got)}, "; use a://x"},
		{[]providers.Scheme{fakeScheme("a", "a://x", &got), fakeScheme("b", "b://y", &got)}, "; use a://x or b://y"},
		{nil, "; use "},
	} {
		_, err := providers.NewRegistry(tc.schemes...).Open(t.Context(), "zz://q", providers.OpenOptions{})
		if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%d schemes: %v, want it to end %q", len(tc.schemes), err, tc.want)
		}
	}
}

func TestNewRegistryRefuses(t *testing.T) {
	var got providers.OpenOptions
	for name, schemes := range map[string][]providers.Scheme{
		"twice":    {fakeScheme("a", "a://x", &got), fakeScheme("a", "a://y", &got)},
		"no name":  {fakeScheme("", "a://x", &got)},
		"no Parse": {{Name: "a", Example: "a://x"}},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("NewRegistry accepted it")
				}
			}()
			providers.NewRegistry(schemes...)
		})
	}
}

func TestBadURL(t *testing.T) {
	if providers.BadURL(nil) != nil {
		t.Error("BadURL(nil) is not nil")
	}
	inner := errors.New("inner")
	err := providers.BadURL(inner)
	if err.Error() != "inner" || !errors.Is(err, inner) || !errors.Is(err, providers.ErrBadURL) {
		t.Errorf("BadURL(inner) = %q, is inner %v, is ErrBadURL %v", err, errors.Is(err, inner), errors.Is(err, providers.ErrBadURL))
	}
}
