package gcs

import (
	"net/url"
	"strings"
	"testing"

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
	providertest.FuzzConfigURL(f, []string{
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
	}, providertest.ConfigURL[Config]{
		Scheme:    "gs",
		Params:    []string{"chunk_size", "multipart_threshold"},
		Parse:     parseURL,
		Defaults:  Config.withDefaults,
		Name:      func(full Config) string { return (&Store{cfg: full}).String() },
		Location:  func(c Config) (string, string) { return c.Bucket, c.Prefix },
		ExactName: true,
		Secrets:   func(raw string) []string { return []string{providertest.URLPassword(raw)} },
		Accepted:  checkGCSAccepted,
	})
}

// checkGCSAccepted checks what parseURL and withDefaults promise about an
// accepted URL beyond what every provider promises.
func checkGCSAccepted(t *testing.T, u *url.URL, cfg, full Config) {
	t.Helper()
	switch {
	case cfg.Bucket != u.Host || checkBucketName(cfg.Bucket) != nil:
		t.Fatalf("%s: bucket %q (%v)", u, cfg.Bucket, checkBucketName(cfg.Bucket))
	case cfg.Prefix != strings.Trim(u.Path, "/"):
		t.Fatalf("%s: prefix %q, want the path %q without its slashes", u, cfg.Prefix, u.Path)
	case cfg.ChunkSize < 0 || cfg.ChunkSize%chunkUnitBytes != 0 || cfg.ChunkSize > maxChunkBytes:
		t.Fatalf("%s: chunk size %d", u, cfg.ChunkSize)
	case cfg.MultipartThreshold < 0 || cfg.MultipartThreshold > maxChunkBytes:
		t.Fatalf("%s: multipart threshold %d", u, cfg.MultipartThreshold)
	case cfg.Endpoint != "":
		t.Fatalf("%s: endpoint %q, which no URL parameter sets", u, cfg.Endpoint)
	case full.ChunkSize <= 0 || full.ChunkSize%chunkUnitBytes != 0 || full.ChunkSize > maxChunkBytes:
		t.Fatalf("%s: chunk size %d after defaults", u, full.ChunkSize)
	case full.MultipartThreshold <= 0 || full.MultipartThreshold > maxChunkBytes:
		t.Fatalf("%s: multipart threshold %d after defaults", u, full.MultipartThreshold)
	}
	query := u.Query()
	if (cfg.ChunkSize != 0) != query.Has("chunk_size") || (cfg.MultipartThreshold != 0) != query.Has("multipart_threshold") {
		t.Fatalf("%s: sizes %+v are not the parameters'", u, cfg)
	}
}
