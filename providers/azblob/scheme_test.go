package azblob_test

import (
	"net/url"
	"testing"

	"github.com/pgstow/pgstow/providers/azblob"
	"github.com/pgstow/pgstow/providers/providertest"
)

// TestScheme checks that a URL ParseURL refuses is a bad URL to the
// registry, and that one it accepts reaches the opener.
func TestScheme(t *testing.T) {
	providertest.CheckScheme(t, azblob.Scheme(), func(u *url.URL) error { _, err := azblob.ParseURL(u); return err },
		"azblob://backups?block_size=16XB", "azblob://backups/p")
}
