package gcs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

// testPrefix puts the conformance suite's objects below a prefix, so that
// it also checks that keys map to names under it and back.
const testPrefix = "repo/x"

// openStore returns an open function for the conformance suite: each call
// gets a store on a new bucket of srv with the smallest legal chunk size
// and a threshold of one chunk.
func openStore(srv *testserver.GCSServer) func(t *testing.T) providers.Store {
	return func(t *testing.T) providers.Store {
		t.Helper()
		return openOn(t, srv.Endpoint, srv.NewBucket(t), testPrefix)
	}
}

func openOn(t *testing.T, endpoint, bucket, prefix string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{
		Bucket:             bucket,
		Prefix:             prefix,
		ChunkSize:          chunkUnitBytes,
		MultipartThreshold: chunkUnitBytes,
		Endpoint:           endpoint,
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	srv := testserver.StartFakeGCS(t)
	t.Run("Run", func(t *testing.T) {
		t.Parallel()
		providertest.Run(t, openStore(srv))
	})
	t.Run("Multipart", func(t *testing.T) {
		t.Parallel()
		providertest.RunMultipart(t, openStore(srv), chunkUnitBytes)
	})
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, manifest.Castagnoli) }

// TestPrefixMapping checks where objects land: below the prefix, and a
// store on the same bucket without a prefix sees them there.
func TestPrefixMapping(t *testing.T) {
	srv := testserver.StartFakeGCS(t)
	bucket := srv.NewBucket(t)
	inner := openOn(t, srv.Endpoint, bucket, "/backups/db1/")
	if got, want := inner.String(), "gs://"+bucket+"/backups/db1"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	outer := openOn(t, srv.Endpoint, bucket, "")
	ctx := t.Context()
	for _, key := range []string{"a", "dir/b"} {
		if err := inner.Put(ctx, key, strings.NewReader(key), int64(len(key)), providers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := outer.Put(ctx, "backups/db10/c", strings.NewReader("c"), 1, providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for info, err := range outer.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.Key)
	}
	if diff := cmp.Diff([]string{"backups/db1/a", "backups/db1/dir/b", "backups/db10/c"}, got); diff != "" {
		t.Errorf("objects in the bucket (-want +got):\n%s", diff)
	}
	got = nil
	for info, err := range inner.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.Key)
	}
	if diff := cmp.Diff([]string{"a", "dir/b"}, got); diff != "" {
		t.Errorf("objects below the prefix (-want +got):\n%s", diff)
	}
}

// TestServerChecksum checks that GCS itself (here fake-gcs-server)
// verifies the CRC32C a single-request upload carries, with Put's own
// check turned off. fake-gcs-server forgets the checksum of a resumable
// upload after its first chunk, so only Put's own check covers those
// there (the conformance suite's multipart "wrong checksum" case).
func TestServerChecksum(t *testing.T) {
	srv := testserver.StartFakeGCS(t)
	s := openOn(t, srv.Endpoint, srv.NewBucket(t), "")
	s.skipLocalCRC32C = true
	data := bytes.Repeat([]byte("pgstow"), 1000)
	for _, opts := range []providers.PutOptions{
		{CRC32C: crc32c(data) ^ 1, HasCRC32C: true},
		{CRC32C: crc32c(data) ^ 1, HasCRC32C: true, IfAbsent: true},
	} {
		err := s.Put(t.Context(), "bad", bytes.NewReader(data), int64(len(data)), opts)
		if !errors.Is(err, providers.ErrChecksum) || errors.Is(err, providers.ErrTransient) {
			t.Errorf("Put with a wrong CRC32C (%+v) = %v, want ErrChecksum, not transient", opts, err)
		}
		if _, err := s.Stat(t.Context(), "bad"); !errors.Is(err, providers.ErrNotExist) {
			t.Errorf("after the refused Put, Stat = %v, want ErrNotExist", err)
		}
	}
	if err := s.Put(t.Context(), "good", bytes.NewReader(data), int64(len(data)), providers.PutOptions{CRC32C: crc32c(data), HasCRC32C: true}); err != nil {
		t.Fatalf("Put with the right CRC32C: %v", err)
	}
}

func TestOpenMissingBucket(t *testing.T) {
	srv := testserver.StartFakeGCS(t)
	_, err := Open(t.Context(), Config{Bucket: "no-such-bucket", Endpoint: srv.Endpoint})
	if !errors.Is(err, providers.ErrNoBucket) || errors.Is(err, providers.ErrTransient) {
		t.Fatalf("Open of a missing bucket = %v, want ErrNoBucket", err)
	}
	if !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
		t.Errorf("error %q does not say which bucket is missing", err)
	}
}

// TestOpenAccessDenied stands a server in for GCS that refuses the
// credentials as GCS does (fake-gcs-server checks none): 401 for a token
// it does not accept, 403 for an account without the permission.
func TestOpenAccessDenied(t *testing.T) {
	for _, tc := range []struct {
		status  int
		message string
	}{
		{http.StatusUnauthorized, "Invalid Credentials"},
		{http.StatusForbidden, "backup@project.iam.gserviceaccount.com does not have storage.objects.list access to the Google Cloud Storage bucket."},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			gcs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				fmt.Fprintf(w, `{"error":{"code":%d,"message":%q,"errors":[{"message":%q,"domain":"global","reason":"forbidden"}]}}`, tc.status, tc.message, tc.message)
			}))
			defer gcs.Close()
			_, err := Open(t.Context(), Config{Bucket: "some-bucket", Prefix: "p", Endpoint: gcs.URL})
			if !errors.Is(err, providers.ErrAccessDenied) || errors.Is(err, providers.ErrTransient) {
				t.Fatalf("Open with refused credentials = %v, want ErrAccessDenied", err)
			}
			for _, want := range []string{"gs://some-bucket/p", "check the Google credentials", tc.message} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// TestOpenNoCredentials checks the message when no application default
// credentials can be found. GOOGLE_APPLICATION_CREDENTIALS naming a
// missing file makes the search stop there, before it would ask the
// metadata server of Google Cloud.
func TestOpenNoCredentials(t *testing.T) {
	t.Setenv(emulatorEnv, "")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", t.TempDir()+"/missing.json")
	_, err := Open(t.Context(), Config{Bucket: "some-bucket"})
	if !errors.Is(err, providers.ErrAccessDenied) {
		t.Fatalf("Open without credentials = %v, want ErrAccessDenied", err)
	}
	for _, want := range []string{"gs://some-bucket", "no Google application default credentials", "missing.json"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestOpenUnreachable(t *testing.T) {
	endpoint := testserver.Addr(testserver.FreePort(t))
	start := time.Now()
	_, err := Open(t.Context(), Config{Bucket: "some-bucket", Endpoint: endpoint})
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("Open of an unreachable endpoint took %s", elapsed)
	}
	if err == nil {
		t.Fatal("Open of an unreachable endpoint succeeded")
	}
	if !errors.Is(err, providers.ErrTransient) {
		t.Errorf("Open of an unreachable endpoint = %v, want a transient error", err)
	}
	want := "cannot reach endpoint http://" + endpoint + "/storage/v1/"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

// TestEmulatorHostVariable checks that the URL form finds an emulator
// through STORAGE_EMULATOR_HOST, as the SDK and gcloud do.
func TestEmulatorHostVariable(t *testing.T) {
	srv := testserver.StartFakeGCS(t)
	bucket := srv.NewBucket(t)
	t.Setenv(emulatorEnv, srv.Endpoint)
	u, err := url.Parse("gs://" + bucket + "/prefix?chunk_size=256K")
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenURL(t.Context(), u)
	if err != nil {
		t.Fatalf("OpenURL with %s set: %v", emulatorEnv, err)
	}
	defer s.Close()
	if err := s.Put(t.Context(), "k", strings.NewReader("v"), 1, providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, err := providers.ReadAll(t.Context(), s, "k"); err != nil || string(b) != "v" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
}

// faultProxy forwards to fake-gcs-server and answers 503 to the requests
// fault selects, counting them. It keeps the Host header, so that the
// resumable upload URLs the server hands out lead back through it.
type faultProxy struct {
	*httptest.Server
	fault    func(r *http.Request) bool
	faulted  atomic.Int64
	requests atomic.Int64
}

func newFaultProxy(t *testing.T, endpoint string, fault func(r *http.Request) bool) *faultProxy {
	target := &url.URL{Scheme: "http", Host: endpoint}
	p := &faultProxy{fault: fault}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if p.fault(r) {
			p.faulted.Add(1)
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"code":503,"message":"Service Unavailable"}}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// TestNoSDKRetries checks that a 503 costs one request and comes back
// marked transient, for a metadata read and for a chunk of a resumable
// upload: the store never retries by itself (the HTTP transport does not
// replay a request whose body it cannot rewind, and the store gives it
// none).
func TestNoSDKRetries(t *testing.T) {
	srv := testserver.StartFakeGCS(t)
	bucket := srv.NewBucket(t)
	proxy := newFaultProxy(t, srv.Endpoint, func(r *http.Request) bool {
		// Chunks are PUT to the session's URL (a failed upload then
		// DELETEs it, which is no chunk).
		chunk := r.Method == http.MethodPut && r.URL.Query().Has("upload_id")
		stat := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/o/")
		return chunk || stat
	})
	s := openOn(t, proxy.URL, bucket, "")

	data := bytes.Repeat([]byte{7}, 3*chunkUnitBytes)
	start := time.Now()
	err := s.Put(t.Context(), "big", bytes.NewReader(data), int64(len(data)), providers.PutOptions{})
	if !errors.Is(err, providers.ErrTransient) {
		t.Errorf("Put answered 503 = %v, want a transient error", err)
	}
	if n := proxy.faulted.Load(); n != 1 {
		t.Errorf("Put answered 503 sent %d chunks, want 1 (no retries)", n)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Put answered 503 took %s", elapsed)
	}

	proxy.faulted.Store(0)
	if _, err := s.Stat(t.Context(), "big"); !errors.Is(err, providers.ErrTransient) {
		t.Errorf("Stat answered 503 = %v, want a transient error", err)
	}
	if n := proxy.faulted.Load(); n != 1 {
		t.Errorf("Stat answered 503 sent %d requests, want 1", n)
	}
}

func TestParseURL(t *testing.T) {
	providertest.CheckParseURL(t, parseURL, []providertest.URLCase[Config]{
		{URL: "gs://bucket", Want: Config{Bucket: "bucket"}},
		{URL: "gs://bucket/", Want: Config{Bucket: "bucket"}},
		{URL: "gs://my-bucket.example_1/backups/db1/", Want: Config{Bucket: "my-bucket.example_1", Prefix: "backups/db1"}},
		{URL: "gs://bucket/p?chunk_size=16MB", Want: Config{Bucket: "bucket", Prefix: "p", ChunkSize: 16 << 20}},
		{URL: "gs://bucket/p?chunk_size=256KiB&multipart_threshold=1M", Want: Config{Bucket: "bucket", Prefix: "p", ChunkSize: 256 << 10, MultipartThreshold: 1 << 20}},
		{URL: "gs://bucket?chunk_size=8388608", Want: Config{Bucket: "bucket", ChunkSize: 8 << 20}},
		{URL: "gs://bucket/p%20q", Want: Config{Bucket: "bucket", Prefix: "p q"}},

		{URL: "s3://bucket", Err: `scheme "s3" is not gs`},
		{URL: "gs:bucket", Err: "want gs://bucket/prefix"},
		{URL: "gs:///prefix", Err: "no bucket"},
		{URL: "gs://Bucket", Err: "lower-case"},
		{URL: "gs://ab", Err: "3 to 222 characters"},
		{URL: "gs://-bucket", Err: "start and end with a letter or digit"},
		{URL: "gs://bucket:4443/p", Err: "STORAGE_EMULATOR_HOST"},
		{URL: "gs://user@bucket", Err: "user information"},
		{URL: "gs://bucket/p#frag", Err: "fragments"},
		{URL: "gs://bucket/a//b", Err: "prefix"},
		{URL: "gs://bucket/a/../b", Err: "prefix"},
		{URL: "gs://bucket?region=us", Err: `unknown parameter "region"; known: chunk_size, multipart_threshold`},
		{URL: "gs://bucket?chunk_size=100000", Err: "multiple of 256 KiB"},
		{URL: "gs://bucket?chunk_size=0", Err: "must be positive"},
		{URL: "gs://bucket?chunk_size=2G", Err: "at most 1 GiB"},
		{URL: "gs://bucket?chunk_size=16XB", Err: "unknown unit"},
		{URL: "gs://bucket?chunk_size=", Err: "positive size"},
		{URL: "gs://bucket?chunk_size=1M&chunk_size=2M", Err: "given 2 times"},
		{URL: "gs://bucket?multipart_threshold=0", Err: "must be positive"},
		{URL: "gs://bucket?chunk_size=99999999999999999999", Err: "chunk_size"},
	})
}

func TestConfigDefaults(t *testing.T) {
	got, err := Config{Bucket: "bucket", Prefix: "/a/b/"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Bucket: "bucket", Prefix: "a/b", ChunkSize: DefaultChunkSize, MultipartThreshold: DefaultChunkSize}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("withDefaults (-want +got):\n%s", diff)
	}
	for _, bad := range []Config{
		{Bucket: "bucket", ChunkSize: 1000},
		{Bucket: "bucket", ChunkSize: -chunkUnitBytes},
		{Bucket: "bucket", ChunkSize: 2 << 30},
		{Bucket: "bucket", MultipartThreshold: -1},
		{Bucket: "bucket", MultipartThreshold: 2 << 30},
		{Bucket: "bucket", Prefix: "a/./b"},
		{Bucket: ""},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("withDefaults(%+v) accepted a bad configuration", bad)
		}
		if _, err := Open(t.Context(), bad); err == nil {
			t.Errorf("Open(%+v) accepted a bad configuration", bad)
		}
	}
}

func TestEmulatorEndpoint(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:4443", "http://127.0.0.1:4443/storage/v1/"},
		{"localhost:8000", "http://localhost:8000/storage/v1/"},
		{"http://127.0.0.1:4443", "http://127.0.0.1:4443/storage/v1/"},
		{"http://127.0.0.1:4443/", "http://127.0.0.1:4443/storage/v1/"},
		{"https://gcs.example:443/storage/v1", "https://gcs.example:443/storage/v1/"},
		{"ftp://host", ""},
		{"http://", ""},
		{"http://user:pw@host", ""},
	} {
		got, err := emulatorEndpoint(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("emulatorEndpoint(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("emulatorEndpoint(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestClassifyStatus(t *testing.T) {
	for _, tc := range []struct {
		code      int
		message   string
		notFound  error
		class     error
		transient bool
	}{
		{404, "No such object: b/k", providers.ErrNotExist, providers.ErrNotExist, false},
		{404, "The specified bucket does not exist.", providers.ErrNotExist, providers.ErrNoBucket, false},
		{404, "<Error><Code>NoSuchBucket</Code></Error>", providers.ErrNotExist, providers.ErrNoBucket, false},
		{404, "", providers.ErrNoBucket, providers.ErrNoBucket, false},
		{412, "At least one of the pre-conditions you specified did not hold.", nil, providers.ErrExist, false},
		{400, `Provided CRC32C "AAAAAQ==" doesn't match calculated CRC32C "AAAAAA==".`, nil, providers.ErrChecksum, false},
		{400, "Invalid argument.", nil, nil, false},
		{401, "Invalid Credentials", nil, providers.ErrAccessDenied, false},
		{403, "does not have storage.objects.create access", nil, providers.ErrAccessDenied, false},
		{408, "", nil, nil, true},
		{409, "", nil, nil, true},
		{429, "rate limit", nil, nil, true},
		{500, "", nil, nil, true},
		{503, "", nil, nil, true},
	} {
		class, transient := classifyStatus(tc.code, tc.message, tc.notFound)
		if class != tc.class || transient != tc.transient {
			t.Errorf("classifyStatus(%d, %q) = %v, %v; want %v, %v", tc.code, tc.message, class, transient, tc.class, tc.transient)
		}
	}
	for code, want := range map[int]struct {
		class     error
		transient bool
	}{400: {providers.ErrAccessDenied, false}, 401: {providers.ErrAccessDenied, false}, 429: {nil, true}, 503: {nil, true}} {
		class, transient := classify(&url.Error{Op: "Get", URL: "https://storage.googleapis.com/", Err: &oauth2.RetrieveError{Response: &http.Response{StatusCode: code}}}, providers.ErrNotExist)
		if class != want.class || transient != want.transient {
			t.Errorf("classify(token endpoint answered %d) = %v, %v; want %v, %v", code, class, transient, want.class, want.transient)
		}
	}
	if class, transient := classify(context.Canceled, providers.ErrNotExist); class != nil || transient {
		t.Errorf("classify(context.Canceled) = %v, %v; want neither a class nor transient", class, transient)
	}
	if class, transient := classify(fmt.Errorf("read: %w", io.ErrUnexpectedEOF), providers.ErrNotExist); class != nil || !transient {
		t.Errorf("classify(unexpected EOF) = %v, %v; want transient", class, transient)
	}
}
