package gcs

import "github.com/pgstow/pgstow/providers"

// Scheme opens gs://bucket/prefix URLs for a providers.Registry: the URL
// is checked in full (ParseURL) before anything is contacted.
func Scheme() providers.Scheme {
	return providers.URLScheme("gs", "gs://bucket/prefix", ParseURL, nil, Open)
}
