package gcs_test

import (
	"net/url"
	"testing"

	"github.com/pgstow/pgstow/providers/gcs"
	"github.com/pgstow/pgstow/providers/providertest"
)

// TestScheme checks that a URL ParseURL refuses is a bad URL to the
// registry, and that one it accepts reaches the opener.
func TestScheme(t *testing.T) {
	providertest.CheckScheme(t, gcs.Scheme(), func(u *url.URL) error { _, err := gcs.ParseURL(u); return err },
		"gs://bucket?chunk_size=16XB", "gs://bucket/p")
}
