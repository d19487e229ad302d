package azblob

import "github.com/pgstow/pgstow/providers"

// Scheme opens azblob://container/prefix URLs for a providers.Registry:
// the URL is checked in full (ParseURL) before anything is contacted.
func Scheme() providers.Scheme {
	return providers.URLScheme("azblob", "azblob://container/prefix", ParseURL, nil, Open)
}
