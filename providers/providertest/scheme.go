package providertest

import (
	"errors"
	"net/url"
	"testing"

	"github.com/pgstow/pgstow/providers"
)

// CheckScheme checks a provider's Scheme against its URL parser: a URL
// parse refuses (bad) is a bad URL to the registry, and one it accepts
// (good) gives an opener, which is not called: it would contact the store.
func CheckScheme(t *testing.T, s providers.Scheme, parse func(*url.URL) error, bad, good string) {
	t.Helper()
	for _, tc := range []struct {
		url    string
		badURL bool
	}{{bad, true}, {good, false}} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		open, err := s.Parse(u, providers.OpenOptions{})
		if errors.Is(err, providers.ErrBadURL) != tc.badURL || (err == nil) != (open != nil) || (err != nil) != tc.badURL {
			t.Errorf("Parse(%s) = opener %v, %v; want a bad URL: %v", tc.url, open != nil, err, tc.badURL)
		}
		if perr := parse(u); (perr != nil) != tc.badURL {
			t.Errorf("ParseURL(%s) = %v, but Parse = %v", tc.url, perr, err)
		}
	}
}
