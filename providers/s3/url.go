package s3

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// urlExample is quoted in URL errors.
const urlExample = "s3://bucket/prefix?region=us-east-1"

// urlParams are the query parameters OpenURL understands.
var urlParams = []string{"region", "endpoint", "path_style", "part_size", "max_parts", "request_checksum"}

// ParseURL checks an s3:// URL without contacting anything and returns
// the Config it names, for callers that want a bad URL told apart from a
// store that cannot be reached (Open does the rest).
func ParseURL(u *url.URL) (Config, error) { return parseURL(u) }

// parseURL turns an s3://bucket/prefix?… URL into a Config. It refuses
// what it does not understand (unknown or repeated parameters, user
// information, fragments) rather than ignore it, since each suggests the
// user meant something this store would silently not do.
func parseURL(u *url.URL) (Config, error) {
	var cfg Config
	if u == nil {
		return cfg, fmt.Errorf("open s3 store: no URL")
	}
	fail := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("open s3 store %q: %s", providers.RedactURL(u), fmt.Sprintf(format, args...))
	}
	if u.Scheme != "s3" {
		return fail("scheme %q is not s3", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return fail("no bucket: use %s", urlExample)
	}
	if u.User != nil {
		return fail("credentials do not belong in the URL; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
	}
	if u.Port() != "" {
		return fail("bucket %q has a port: the host of an s3:// URL is the bucket; give the server as ?endpoint=http://host:port", u.Host)
	}
	if u.Fragment != "" {
		return fail("fragments are not supported")
	}
	cfg.Bucket = u.Host
	cfg.Prefix = strings.Trim(u.Path, "/")

	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail("query: %v", err)
	}
	err = providers.EachURLParam(query, urlParams, "parameter", func(name, v string) error {
		switch name {
		case "region":
			cfg.Region = v
		case "endpoint":
			cfg.Endpoint = v
		case "path_style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("path_style=%q: want true or false", v)
			}
			cfg.PathStyle = b
		case "part_size":
			n, err := manifest.ParseSize(v)
			if err != nil {
				return fmt.Errorf("part_size=%q: %v", v, err)
			}
			cfg.PartSize = n
		case "max_parts":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return fmt.Errorf("max_parts=%q: want a positive number such as 1000", v)
			}
			cfg.MaxParts = n
		case "request_checksum":
			switch v {
			case "when_required":
				cfg.RequestChecksumWhenRequired = true
			case "when_supported":
			default:
				return fmt.Errorf("request_checksum=%q: want when_supported or when_required", v)
			}
		}
		return nil
	})
	if err != nil {
		return fail("%v", err)
	}
	// Check the rest now, so that a bad URL fails before any network
	// access.
	if _, err := cfg.withDefaults(); err != nil {
		return fail("%v", err)
	}
	return cfg, nil
}
