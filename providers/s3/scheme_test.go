package s3_test

import (
	"errors"
	"net/url"
	"testing"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/s3"
)

// TestScheme checks that a URL ParseURL refuses is a bad URL to the
// registry, and that one it accepts reaches the opener (not called here:
// it would contact the store).
func TestScheme(t *testing.T) {
	s := s3.Scheme()
	for _, tc := range []struct {
		url    string
		badURL bool
	}{
		{"s3://b?part_size=16XB", true},
		{"s3://b/p?region=us-east-1", false},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		open, err := s.Parse(u, providers.OpenOptions{})
		if errors.Is(err, providers.ErrBadURL) != tc.badURL || (err == nil) != (open != nil) || (err != nil) != tc.badURL {
			t.Errorf("Parse(%s) = opener %v, %v; want a bad URL: %v", tc.url, open != nil, err, tc.badURL)
		}
		if _, perr := s3.ParseURL(u); (perr != nil) != tc.badURL {
			t.Errorf("ParseURL(%s) = %v, but Parse = %v", tc.url, perr, err)
		}
	}
}
