package s3

import "github.com/pgstow/pgstow/providers"

// Scheme opens s3://bucket/prefix URLs for a providers.Registry: the URL
// is checked in full (ParseURL) before anything is contacted.
func Scheme() providers.Scheme {
	return providers.URLScheme("s3", "s3://bucket/prefix", ParseURL,
		func(cfg *Config, o providers.OpenOptions) { cfg.Log = o.Log }, // the SDK's own lines, at debug
		Open)
}
