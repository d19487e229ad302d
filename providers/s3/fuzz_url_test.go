package s3

import (
	"net/url"
	"strings"
	"testing"

	"github.com/pgstow/pgstow/providers/providertest"
)

// FuzzS3URL checks how an s3:// repository URL becomes a Config, which
// happens before any network access: providers.ParseURL, then parseURL
// (which applies Config.withDefaults). It checks that
//
//   - parsing the same URL always gives the same Config or the same error;
//   - an accepted URL has scheme s3, no user information, port or
//     fragment, and only known parameters, and its Config keeps the
//     promises of withDefaults (a bucket without '/', ':', '?' or '#', a
//     prefix that is a valid key, sizes within S3's limits, no static
//     credentials) both before and after the defaults are filled in;
//   - no error and no store name shows a password given in the URL's user
//     information (which parseURL refuses) or in an endpoint given as
//     ?endpoint=http://user:password@host (which withDefaults refuses).
//
// Run it longer by hand with
//
//	go test -run '^$' -fuzz '^FuzzS3URL$' -fuzztime 10m ./providers/s3
func FuzzS3URL(f *testing.F) {
	providertest.FuzzConfigURL(f, []string{
		"s3://bucket",
		"s3://bucket/",
		"s3://my.bucket/db1/main/?region=eu-west-1",
		"s3://b/p?endpoint=http://127.0.0.1:9000&path_style=true&part_size=16MiB&max_parts=1000&request_checksum=when_required",
		"s3://b?endpoint=https://[::1]:9000/s3&part_size=5242880&request_checksum=when_supported",
		"s3://b?part_size=4MiB",
		"s3://b?part_size=5GiB",
		"s3://b?part_size=99999999999999999999",
		"s3://b?max_parts=10001",
		"s3://b?path_style=yes",
		"s3://b?regoin=eu-west-1",
		"s3://b?region=a&region=b",
		"s3://b?%zz",
		"s3://b?endpoint=127.0.0.1:9000",
		"s3://b/a/../c",
		"s3://b/a%2F..%2Fc",
		"s3://b//a//",
		"s3://b/a%00b",
		"s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI%2FK7MDENG@bucket/p",
		"s3://bucket:9000/p",
		"s3://bucket:/p",
		"s3://[::1]/p",
		"s3://b#frag",
		"s3:bucket",
		"s3:///prefix",
		"S3://Bucket/P",
		"gs://bucket/p",
		"bucket/prefix",
		"",
	}, providertest.ConfigURL[Config]{
		Scheme:   "s3",
		Params:   urlParams,
		Parse:    parseURL,
		Defaults: Config.withDefaults,
		// The name depends on the SDK's resolved endpoint, which is the
		// configured one.
		Name:     func(full Config) string { return storeName(full.Bucket, full.Prefix, &full.Endpoint) },
		Location: func(c Config) (string, string) { return c.Bucket, c.Prefix },
		Secrets:  s3Secrets,
		Accepted: checkS3Accepted,
	})
}

// checkS3Accepted checks what parseURL and withDefaults promise about an
// accepted URL beyond what every provider promises.
func checkS3Accepted(t *testing.T, u *url.URL, cfg, full Config) {
	t.Helper()
	switch {
	case cfg.Bucket == "" || cfg.Bucket != u.Host || strings.ContainsAny(cfg.Bucket, "/:?#"):
		t.Fatalf("%s: bucket %q", u, cfg.Bucket)
	case cfg.Prefix != strings.Trim(u.Path, "/"):
		t.Fatalf("%s: prefix %q, want the path %q without its slashes", u, cfg.Prefix, u.Path)
	case cfg.PartSize != 0 && (cfg.PartSize < MinPartSize || cfg.PartSize > maxPartSize):
		t.Fatalf("%s: part size %d", u, cfg.PartSize)
	case cfg.MaxParts < 0 || cfg.MaxParts > DefaultMaxParts:
		t.Fatalf("%s: max parts %d", u, cfg.MaxParts)
	case cfg.MultipartThreshold != 0 || cfg.AccessKey != "" || cfg.SecretKey != "":
		t.Fatalf("%s: sets what no URL parameter sets: %+v", u, cfg)
	case full.PartSize < MinPartSize || full.PartSize > maxPartSize:
		t.Fatalf("%s: part size %d after defaults", u, full.PartSize)
	case full.MaxParts < 1 || full.MaxParts > DefaultMaxParts:
		t.Fatalf("%s: max parts %d after defaults", u, full.MaxParts)
	case full.MultipartThreshold < 1 || full.MultipartThreshold > maxPartSize:
		t.Fatalf("%s: multipart threshold %d after defaults", u, full.MultipartThreshold)
	}
	query := u.Query()
	if cfg.Endpoint != query.Get("endpoint") || cfg.Region != query.Get("region") {
		t.Fatalf("%s: endpoint %q and region %q are not the parameters'", u, cfg.Endpoint, cfg.Region)
	}
	if cfg.Endpoint != "" {
		e, err := url.Parse(cfg.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || e.User != nil {
			t.Fatalf("%s: accepted endpoint %q (%v)", u.Redacted(), cfg.Endpoint, err)
		}
	}
}

// s3Secrets returns the passwords raw carries where parseURL must not
// show them: in its user information, and in that of an endpoint
// parameter.
func s3Secrets(raw string) []string {
	secrets := []string{providertest.URLPassword(raw)}
	for _, endpoint := range providertest.QueryValues(raw, "endpoint") {
		secrets = append(secrets, providertest.URLPassword(endpoint))
	}
	return secrets
}
