package gcs

import (
	"context"
	"net/url"

	"github.com/pgstow/pgstow/providers"
)

// Scheme opens gs://bucket/prefix URLs for a providers.Registry: the URL
// is checked in full (ParseURL) before anything is contacted.
func Scheme() providers.Scheme {
	return providers.Scheme{Name: "gs", Example: "gs://bucket/prefix", Parse: parseScheme}
}

func parseScheme(u *url.URL, _ providers.OpenOptions) (providers.Opener, error) {
	cfg, err := ParseURL(u)
	if err != nil {
		return nil, providers.BadURL(err)
	}
	return func(ctx context.Context) (providers.Store, error) {
		s, err := Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return s, nil
	}, nil
}
