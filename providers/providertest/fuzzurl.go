package providertest

// The shared body of the repository-URL fuzz targets: each provider keeps
// its own Fuzz function (CI finds them by name, and their corpora live in
// the provider's testdata/fuzz) and hands it here with what differs.

import (
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/providers"
)

// CheckURLParse checks what every provider promises of parsing the
// repository URL raw, before it opens anything: parse gives the same
// result every time, and no message it shows (shown) carries one of the
// secrets. It returns the first result.
func CheckURLParse[P any](t *testing.T, raw string, secrets []string, parse func(raw string) P, shown func(P) []string) P {
	t.Helper()
	got := parse(raw)
	// A parser may range over a map of the query. With two parameters
	// Go's maps give the rarer order about once in eight, so try often
	// enough to see it.
	tries := 2
	if strings.Contains(raw, "&") {
		tries = 64
	}
	for range tries - 1 {
		if again := parse(raw); !reflect.DeepEqual(got, again) {
			t.Fatalf("%q parses differently twice:\n%+v\n%+v", raw, got, again)
		}
	}
	CheckNoLeak(t, raw, secrets, func(raw string) []string { return shown(parse(raw)) })
	return got
}

// ConfigURL is what a provider whose URL becomes a configuration C tells
// FuzzConfigURL.
type ConfigURL[C any] struct {
	Scheme string   // the URL scheme, as "s3"
	Params []string // the query parameters the URL may carry, each once

	// Parse is the provider's parser (after providers.ParseURL), Defaults
	// fills in what a configuration leaves out, as Open does, and Name
	// is the name Open gives the store of a configuration with defaults.
	Parse    func(*url.URL) (C, error)
	Defaults func(C) (C, error)
	Name     func(full C) string
	// Location returns a configuration's bucket (or container) and
	// prefix, which Defaults must keep.
	Location func(C) (bucket, prefix string)
	// ExactName says the store is named scheme://bucket[/prefix]; else
	// the name need only begin with scheme://bucket.
	ExactName bool
	// Secrets returns the credentials raw may carry.
	Secrets func(raw string) []string
	// Accepted checks the provider's own promises about an accepted URL,
	// its configuration cfg, and full, that configuration with defaults.
	Accepted func(t *testing.T, u *url.URL, cfg, full C)
}

// URLParse is everything parsing one repository URL yields.
type URLParse[C any] struct {
	URL  *url.URL // nil when providers.ParseURL refuses the URL
	Cfg  C
	Err  string // "" when the URL is accepted
	Name string // the store's name, when accepted
}

// parse parses raw as the provider's OpenURL would, without opening
// anything.
func (h ConfigURL[C]) parse(raw string) URLParse[C] {
	var p URLParse[C]
	u, err := providers.ParseURL(raw)
	if err != nil {
		p.Err = err.Error()
		return p
	}
	p.URL = u
	cfg, err := h.Parse(u)
	if err != nil {
		p.Err = err.Error()
		return p
	}
	p.Cfg = cfg
	full, err := h.Defaults(cfg)
	if err != nil {
		p.Err = "defaults after parsing: " + err.Error()
		return p
	}
	p.Name = h.Name(full)
	return p
}

// FuzzConfigURL fuzzes how a repository URL becomes a configuration,
// which happens before any network access, starting from seeds. It checks
// CheckURLParse's promises and that an accepted URL has the provider's
// scheme, no user information, port, fragment or opaque part, and only
// known parameters, each once; that its prefix is a valid key; that
// Defaults accepts its configuration, keeps its location and is
// idempotent; what h.Accepted checks; and the store's name.
func FuzzConfigURL[C any](f *testing.F, seeds []string, h ConfigURL[C]) {
	for _, raw := range seeds {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := CheckURLParse(t, raw, h.Secrets(raw), h.parse, func(p URLParse[C]) []string {
			return []string{p.Err, p.Name}
		})
		if got.Err != "" {
			return
		}
		u, cfg := got.URL, got.Cfg
		bucket, prefix := h.Location(cfg)
		switch {
		case u.Scheme != h.Scheme:
			t.Fatalf("%s: accepted with scheme %q", u, u.Scheme)
		case u.User != nil || u.Port() != "" || u.Fragment != "" || u.Opaque != "":
			t.Fatalf("%s: accepted with user information, port, fragment or opaque part", u.Redacted())
		case prefix != "" && providers.ValidateKey(prefix) != nil:
			t.Fatalf("%s: prefix %q is no valid key: %v", u, prefix, providers.ValidateKey(prefix))
		}
		query, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			t.Fatalf("%s: accepted with a bad query: %v", u, err)
		}
		for name, values := range query {
			if !slices.Contains(h.Params, name) || len(values) != 1 {
				t.Fatalf("%s: accepted with parameter %q given %d times", u, name, len(values))
			}
		}

		full, err := h.Defaults(cfg)
		if err != nil {
			t.Fatalf("%s: accepted, but the defaults refuse %+v: %v", u, cfg, err)
		}
		if b, p := h.Location(full); b != bucket || p != prefix {
			t.Fatalf("%s: the defaults change bucket %q and prefix %q to %q and %q", u, bucket, prefix, b, p)
		}
		again, err := h.Defaults(full)
		if err != nil {
			t.Fatalf("%s: the defaults refuse their own result %+v: %v", u, full, err)
		}
		if diff := cmp.Diff(full, again); diff != "" {
			t.Fatalf("%s: the defaults are not idempotent (-once +twice):\n%s", u, diff)
		}
		h.Accepted(t, u, cfg, full)

		want := h.Scheme + "://" + bucket
		if !strings.HasPrefix(got.Name, want) {
			t.Errorf("%q: store name %q does not name bucket %q", raw, got.Name, bucket)
		}
		if prefix != "" {
			want += "/" + prefix
		}
		if h.ExactName && got.Name != want {
			t.Errorf("%q: store name %q, want %q", raw, got.Name, want)
		}
	})
}
