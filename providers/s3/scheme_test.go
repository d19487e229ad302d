package s3_test

import (
	"net/url"
	"testing"

	"github.com/pgstow/pgstow/providers/providertest"
	"github.com/pgstow/pgstow/providers/s3"
)

// TestScheme checks that a URL ParseURL refuses is a bad URL to the
// registry, and that one it accepts reaches the opener.
func TestScheme(t *testing.T) {
	providertest.CheckScheme(t, s3.Scheme(), func(u *url.URL) error { _, err := s3.ParseURL(u); return err },
		"s3://b?part_size=16XB", "s3://b/p?region=us-east-1")
}
