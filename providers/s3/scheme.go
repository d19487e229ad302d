package s3

import (
	"context"
	"net/url"

	"github.com/pgstow/pgstow/providers"
)

// Scheme opens s3://bucket/prefix URLs for a providers.Registry: the URL
// is checked in full (ParseURL) before anything is contacted.
func Scheme() providers.Scheme {
	return providers.Scheme{Name: "s3", Example: "s3://bucket/prefix", Parse: parseScheme}
}

func parseScheme(u *url.URL, o providers.OpenOptions) (providers.Opener, error) {
	cfg, err := ParseURL(u)
	if err != nil {
		return nil, providers.BadURL(err)
	}
	cfg.Log = o.Log // the SDK's own lines, at debug
	return func(ctx context.Context) (providers.Store, error) {
		s, err := Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return s, nil
	}, nil
}
