package gcs

import (
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

// FuzzGCSURL checks how a gs:// repository URL becomes a Config, which
// happens before any network access: providers.ParseURL, then parseURL.
// It checks that
//
//   - parsing the same URL always gives the same Config or the same error;
//   - an accepted URL has scheme gs, no user information, port or
//     fragment, and only known parameters, and its Config keeps the
//     promises of checkBucketName, cleanPrefix and withDefaults (a bucket
//     name GCS's rules allow, a prefix that is a valid key, a chunk size
//     that is a positive multiple of 256 KiB and at most 1 GiB, a
//     threshold of at most 1 GiB, no endpoint), so that withDefaults
//     accepts it;
//   - no error and no store name shows the password of the URL's user
//     information, which parseURL refuses.
//
// Run it longer by hand with
//
//	go test -run '^$' -fuzz '^FuzzGCSURL$' -fuzztime 10m ./providers/gcs
func FuzzGCSURL(f *testing.F) {
	for _, raw := range []string{
		"gs://bucket",
		"gs://bucket/",
		"gs://my-bucket_01.example.com/db1/main/",
		"gs://bucket/p?chunk_size=256KiB&multipart_threshold=1M",
		"gs://bucket?chunk_size=8388608",
		"gs://bucket?chunk_size=1GiB&multipart_threshold=1G",
		"gs://bucket/p%20q",
		"gs://bucket?chunk_size=100000",
		"gs://bucket?chunk_size=0",
		"gs://bucket?chunk_size=2G",
		"gs://bucket?chunk_size=99999999999999999999",
		"gs://bucket?multipart_threshold=1T",
		"gs://bucket?chunk_size=1M&chunk_size=2M",
		"gs://bucket?region=us",
		"gs://bucket?%zz",
		"gs://bucket/a//b",
		"gs://bucket/a/../b",
		"gs://bucket/a%2F..%2Fb",
		"gs://bucket/a%00b",
		"gs://Bucket",
		"gs://ab",
		"gs://-bucket",
		"gs://bucket.",
		"gs://" + strings.Repeat("a", 223),
		"gs://bucket:4443/p",
		"gs://bucket:/p",
		"gs://[::1]/p",
		"gs://user@bucket",
		"gs://service-account:correct-horse-battery@bucket/p",
		"gs://bucket/p#frag",
		"gs:bucket",
		"gs:///prefix",
		"GS://bucket",
		"s3://bucket",
		"",
	} {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := parseGCS(raw)
		// parseURL ranges over a map of the query. With two parameters
		// Go's maps give the rarer order about once in eight, so try
		// often enough to see it.
		tries := 2
		if strings.Contains(raw, "&") {
			tries = 64
		}
		for range tries - 1 {
			if again := parseGCS(raw); !reflect.DeepEqual(got, again) {
				t.Fatalf("%q parses differently twice:\n%+v\n%+v", raw, got, again)
			}
		}
		providertest.CheckNoLeak(t, raw, []string{providertest.URLPassword(raw)}, func(raw string) []string {
			o := parseGCS(raw)
			return []string{o.err, o.name}
		})
		if got.err != "" {
			return
		}
		checkGCSAccepted(t, got.url, got.cfg)
		want := "gs://" + got.cfg.Bucket
		if got.cfg.Prefix != "" {
			want += "/" + got.cfg.Prefix
		}
		if got.name != want {
			t.Errorf("%q: store name %q, want %q", raw, got.name, want)
		}
	})
}

// gcsParse is everything parsing one repository URL yields.
type gcsParse struct {
	url  *url.URL // nil when providers.ParseURL refuses the URL
	cfg  Config
	err  string // "" when the URL is accepted
	name string // the store's name (String), when accepted
}

// parseGCS parses raw as OpenURL would, without opening anything.
func parseGCS(raw string) gcsParse {
	var p gcsParse
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
	// Open names the store by the configuration withDefaults returns.
	full, err := cfg.withDefaults()
	if err != nil {
		p.err = "withDefaults after parseURL: " + err.Error()
		return p
	}
	p.name = (&Store{cfg: full}).String()
	return p
}

// checkGCSAccepted checks what parseURL promises about an accepted URL.
func checkGCSAccepted(t *testing.T, u *url.URL, cfg Config) {
	t.Helper()
	switch {
	case u.Scheme != "gs":
		t.Fatalf("%s: accepted with scheme %q", u, u.Scheme)
	case u.User != nil || u.Port() != "" || u.Fragment != "" || u.Opaque != "":
		t.Fatalf("%s: accepted with user information, port, fragment or opaque part", u.Redacted())
	case cfg.Bucket != u.Host || checkBucketName(cfg.Bucket) != nil:
		t.Fatalf("%s: bucket %q (%v)", u, cfg.Bucket, checkBucketName(cfg.Bucket))
	case cfg.Prefix != strings.Trim(u.Path, "/"):
		t.Fatalf("%s: prefix %q, want the path %q without its slashes", u, cfg.Prefix, u.Path)
	case cfg.Prefix != "" && providers.ValidateKey(cfg.Prefix) != nil:
		t.Fatalf("%s: prefix %q is no valid key: %v", u, cfg.Prefix, providers.ValidateKey(cfg.Prefix))
	case cfg.ChunkSize < 0 || cfg.ChunkSize%chunkUnitBytes != 0 || cfg.ChunkSize > maxChunkBytes:
		t.Fatalf("%s: chunk size %d", u, cfg.ChunkSize)
	case cfg.MultipartThreshold < 0 || cfg.MultipartThreshold > maxChunkBytes:
		t.Fatalf("%s: multipart threshold %d", u, cfg.MultipartThreshold)
	case cfg.Endpoint != "":
		t.Fatalf("%s: endpoint %q, which no URL parameter sets", u, cfg.Endpoint)
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		t.Fatalf("%s: accepted with a bad query: %v", u, err)
	}
	for name, values := range query {
		if name != "chunk_size" && name != "multipart_threshold" || len(values) != 1 {
			t.Fatalf("%s: accepted with parameter %q given %d times", u, name, len(values))
		}
	}
	if (cfg.ChunkSize != 0) != query.Has("chunk_size") || (cfg.MultipartThreshold != 0) != query.Has("multipart_threshold") {
		t.Fatalf("%s: sizes %+v are not the parameters'", u, cfg)
	}

	full, err := cfg.withDefaults()
	if err != nil {
		t.Fatalf("%s: accepted, but withDefaults refuses %+v: %v", u, cfg, err)
	}
	switch {
	case full.ChunkSize <= 0 || full.ChunkSize%chunkUnitBytes != 0 || full.ChunkSize > maxChunkBytes:
		t.Fatalf("%s: chunk size %d after defaults", u, full.ChunkSize)
	case full.MultipartThreshold <= 0 || full.MultipartThreshold > maxChunkBytes:
		t.Fatalf("%s: multipart threshold %d after defaults", u, full.MultipartThreshold)
	case full.Prefix != cfg.Prefix || full.Bucket != cfg.Bucket:
		t.Fatalf("%s: withDefaults changes bucket %q and prefix %q to %q and %q", u, cfg.Bucket, cfg.Prefix, full.Bucket, full.Prefix)
	}
	again, err := full.withDefaults()
	if err != nil {
		t.Fatalf("%s: withDefaults refuses its own result %+v: %v", u, full, err)
	}
	if diff := cmp.Diff(full, again); diff != "" {
		t.Fatalf("%s: withDefaults is not idempotent (-once +twice):\n%s", u, diff)
	}
}
