package s3

import (
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/providers"
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
	for _, raw := range []string{
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
	} {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := parseS3(raw)
		// parseURL ranges over a map of the query. With two parameters
		// Go's maps give the rarer order about once in eight, so try
		// often enough to see it.
		tries := 2
		if strings.Contains(raw, "&") {
			tries = 64
		}
		for range tries - 1 {
			if again := parseS3(raw); !reflect.DeepEqual(got, again) {
				t.Fatalf("%q parses differently twice:\n%+v\n%+v", raw, got, again)
			}
		}
		providertest.CheckNoLeak(t, raw, s3Secrets(raw), func(raw string) []string {
			o := parseS3(raw)
			return []string{o.err, o.name}
		})
		if got.err != "" {
			return
		}
		checkS3Accepted(t, got.url, got.cfg)
		if !strings.HasPrefix(got.name, "s3://"+got.cfg.Bucket) {
			t.Errorf("%q: store name %q does not name bucket %q", raw, got.name, got.cfg.Bucket)
		}
	})
}

// s3Parse is everything parsing one repository URL yields.
type s3Parse struct {
	url  *url.URL // nil when providers.ParseURL refuses the URL
	cfg  Config
	err  string // "" when the URL is accepted
	name string // the store's name (String), when accepted
}

// parseS3 parses raw as OpenURL would, without opening anything.
func parseS3(raw string) s3Parse {
	var p s3Parse
	u, err := providers.ParseURL(raw)
	if err != nil {
		p.err = err.Error()
		return p
	}
	p.url = u
	cfg, err := parseURL(u)
	if err != nil {
		p.err = err.Error()
		return p
	}
	p.cfg = cfg
	// The name Open gives the store, which depends on the configuration
	// and the SDK's resolved endpoint, which is the configured one.
	full, err := cfg.withDefaults()
	if err != nil {
		p.err = "withDefaults after parseURL: " + err.Error()
		return p
	}
	p.name = storeName(full.Bucket, full.Prefix, &full.Endpoint)
	return p
}

// checkS3Accepted checks what parseURL promises about an accepted URL.
func checkS3Accepted(t *testing.T, u *url.URL, cfg Config) {
	t.Helper()
	switch {
	case u.Scheme != "s3":
		t.Fatalf("%s: accepted with scheme %q", u, u.Scheme)
	case u.User != nil || u.Port() != "" || u.Fragment != "" || u.Opaque != "":
		t.Fatalf("%s: accepted with user information, port, fragment or opaque part", u.Redacted())
	case cfg.Bucket == "" || cfg.Bucket != u.Host || strings.ContainsAny(cfg.Bucket, "/:?#"):
		t.Fatalf("%s: bucket %q", u, cfg.Bucket)
	case cfg.Prefix != strings.Trim(u.Path, "/"):
		t.Fatalf("%s: prefix %q, want the path %q without its slashes", u, cfg.Prefix, u.Path)
	case cfg.Prefix != "" && providers.ValidateKey(cfg.Prefix) != nil:
		t.Fatalf("%s: prefix %q is no valid key: %v", u, cfg.Prefix, providers.ValidateKey(cfg.Prefix))
	case cfg.PartSize != 0 && (cfg.PartSize < MinPartSize || cfg.PartSize > maxPartSize):
		t.Fatalf("%s: part size %d", u, cfg.PartSize)
	case cfg.MaxParts < 0 || cfg.MaxParts > DefaultMaxParts:
		t.Fatalf("%s: max parts %d", u, cfg.MaxParts)
	case cfg.MultipartThreshold != 0 || cfg.AccessKey != "" || cfg.SecretKey != "":
		t.Fatalf("%s: sets what no URL parameter sets: %+v", u, cfg)
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		t.Fatalf("%s: accepted with a bad query: %v", u, err)
	}
	for name, values := range query {
		if !slices.Contains(urlParams, name) || len(values) != 1 {
			t.Fatalf("%s: accepted with parameter %q given %d times", u, name, len(values))
		}
	}
	if cfg.Endpoint != query.Get("endpoint") || cfg.Region != query.Get("region") {
		t.Fatalf("%s: endpoint %q and region %q are not the parameters'", u, cfg.Endpoint, cfg.Region)
	}
	if cfg.Endpoint != "" {
		e, err := url.Parse(cfg.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || e.User != nil {
			t.Fatalf("%s: accepted endpoint %q (%v)", u.Redacted(), cfg.Endpoint, err)
		}
	}

	full, err := cfg.withDefaults()
	if err != nil {
		t.Fatalf("%s: accepted, but withDefaults refuses %+v: %v", u, cfg, err)
	}
	switch {
	case full.PartSize < MinPartSize || full.PartSize > maxPartSize:
		t.Fatalf("%s: part size %d after defaults", u, full.PartSize)
	case full.MaxParts < 1 || full.MaxParts > DefaultMaxParts:
		t.Fatalf("%s: max parts %d after defaults", u, full.MaxParts)
	case full.MultipartThreshold < 1 || full.MultipartThreshold > maxPartSize:
		t.Fatalf("%s: multipart threshold %d after defaults", u, full.MultipartThreshold)
	case full.Prefix != cfg.Prefix:
		t.Fatalf("%s: withDefaults changes the prefix %q to %q", u, cfg.Prefix, full.Prefix)
	}
	again, err := full.withDefaults()
	if err != nil {
		t.Fatalf("%s: withDefaults refuses its own result %+v: %v", u, full, err)
	}
	if diff := cmp.Diff(full, again); diff != "" {
		t.Fatalf("%s: withDefaults is not idempotent (-once +twice):\n%s", u, diff)
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
