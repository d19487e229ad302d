package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/google/go-cmp/cmp"

	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/providers/providertest"
)

// servers are the S3 implementations every test runs against: MinIO, the
// usual self-hosted store, and versitygw, which is stricter and closer to
// AWS in what it accepts.
//
// The conformance suite runs once per server, each with another kind of
// prefix (none, and one of two levels, which a file system backend such
// as versitygw's turns into directories), to keep the package's tests
// within a minute under the race detector on two cores.
var servers = []struct {
	name   string
	start  func(testing.TB) *testserver.S3Server
	prefix string
}{
	{"minio", testserver.StartMinIO, ""},
	{"versitygw", testserver.StartVersity, "pgstow/repo"},
}

// adminClient is an SDK client for setting up and inspecting buckets
// behind the store's back.
func adminClient(srv *testserver.S3Server) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(srv.Endpoint),
		Region:       srv.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, ""),
		Retryer:      aws.NopRetryer{},
	})
}

var bucketSeq atomic.Int64

// newBucket creates a uniquely named bucket with the SDK and, when the
// test ends, fails it if a multipart upload was left unfinished in it:
// every failed or cancelled Put must abort its upload.
func newBucket(t *testing.T, srv *testserver.S3Server) string {
	t.Helper()
	admin := adminClient(srv)
	name := fmt.Sprintf("pgstow-%d-%d", time.Now().UnixNano()%1e9, bucketSeq.Add(1))
	if _, err := admin.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	t.Cleanup(func() {
		out, err := admin.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(name)})
		if err != nil {
			t.Errorf("list multipart uploads in %s: %v", name, err)
			return
		}
		for _, u := range out.Uploads {
			t.Errorf("bucket %s: multipart upload %s of %q was left behind", name, aws.ToString(u.UploadId), aws.ToString(u.Key))
		}
	})
	return name
}

// testConfig is a store on bucket of srv with the smallest legal parts.
func testConfig(srv *testserver.S3Server, bucket, prefix string) Config {
	return Config{
		Bucket:             bucket,
		Prefix:             prefix,
		Region:             srv.Region,
		Endpoint:           srv.Endpoint,
		PathStyle:          true,
		PartSize:           MinPartSize,
		MultipartThreshold: MinPartSize,
		AccessKey:          srv.AccessKey,
		SecretKey:          srv.SecretKey,
	}
}

func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestServers(t *testing.T) {
	for _, server := range servers {
		t.Run(server.name, func(t *testing.T) {
			t.Parallel()
			srv := server.start(t)
			open := func(t *testing.T) providers.Store {
				return openStore(t, testConfig(srv, newBucket(t, srv), server.prefix))
			}
			for _, sub := range []struct {
				name string
				run  func(t *testing.T)
			}{
				{"conformance", func(t *testing.T) { providertest.Run(t, open) }},
				{"multipart", func(t *testing.T) { providertest.RunMultipart(t, open, MinPartSize) }},
				{"open errors", func(t *testing.T) { testOpenErrors(t, srv) }},
				{"prefix isolation", func(t *testing.T) { testPrefixIsolation(t, srv) }},
				{"store checksum errors", func(t *testing.T) { testStoreChecksumErrors(t, srv) }},
				{"sequential multipart body", func(t *testing.T) { testSequentialMultipart(t, srv) }},
				{"unsigned body on loopback", func(t *testing.T) { testUnsignedOnLoopback(t, srv) }},
			} {
				t.Run(sub.name, func(t *testing.T) {
					t.Parallel()
					sub.run(t)
				})
			}
			t.Run("request checksum when required", func(t *testing.T) {
				t.Parallel()
				cfg := testConfig(srv, newBucket(t, srv), "wr")
				cfg.RequestChecksumWhenRequired = true
				s := openStore(t, cfg)
				for _, n := range []int{0, 1000, MinPartSize + 3} {
					data := bytes.Repeat([]byte("w"), n)
					for _, opts := range []providers.PutOptions{{}, {CRC32C: crc32c(data), HasCRC32C: true}} {
						if err := s.Put(t.Context(), "k", bytes.NewReader(data), int64(n), opts); err != nil {
							t.Fatalf("Put %d bytes %+v: %v", n, opts, err)
						}
						checkGet(t, s, "k", data)
					}
				}
			})
		})
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

func checkGet(t *testing.T, s *Store, key string, want []byte) {
	t.Helper()
	got, err := providers.ReadAll(t.Context(), s, key)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q: got %d bytes, want %d (or different content)", key, len(got), len(want))
	}
}

// testOpenErrors checks that Open fails at once, with the right class and
// a message naming the cause, for the usual mistakes.
func testOpenErrors(t *testing.T, srv *testserver.S3Server) {
	bucket := newBucket(t, srv)
	t.Run("wrong secret", func(t *testing.T) {
		cfg := testConfig(srv, bucket, "")
		cfg.SecretKey = "not-the-secret"
		_, err := Open(t.Context(), cfg)
		if !errors.Is(err, providers.ErrAccessDenied) {
			t.Fatalf("Open with a wrong secret key: %v, want ErrAccessDenied", err)
		}
		if strings.Contains(err.Error(), "not-the-secret") {
			t.Errorf("error shows the secret: %v", err)
		}
		t.Log(err)
	})
	t.Run("unknown access key", func(t *testing.T) {
		cfg := testConfig(srv, bucket, "")
		cfg.AccessKey = "nobody"
		if _, err := Open(t.Context(), cfg); !errors.Is(err, providers.ErrAccessDenied) {
			t.Fatalf("Open with an unknown access key: %v, want ErrAccessDenied", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		_, err := Open(t.Context(), testConfig(srv, "no-such-bucket-here", "x"))
		if !errors.Is(err, providers.ErrNoBucket) {
			t.Fatalf("Open of a missing bucket: %v, want ErrNoBucket", err)
		}
		if !strings.Contains(err.Error(), `bucket "no-such-bucket-here" does not exist`) {
			t.Errorf("error does not say what is missing: %v", err)
		}
		t.Log(err)
	})
	t.Run("unreachable endpoint", func(t *testing.T) {
		cfg := testConfig(srv, bucket, "")
		cfg.Endpoint = "http://" + testserver.Addr(testserver.FreePort(t))
		start := time.Now()
		_, err := Open(t.Context(), cfg)
		if err == nil {
			t.Fatal("Open of an unreachable endpoint succeeded")
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Open took %s to fail", d)
		}
		if !strings.Contains(err.Error(), "cannot reach endpoint "+cfg.Endpoint) {
			t.Errorf("error does not name the endpoint: %v", err)
		}
		if !errors.Is(err, providers.ErrTransient) {
			t.Errorf("error is not transient: %v", err)
		}
		t.Log(err)
	})
}

// testPrefixIsolation checks that a store sees only the objects under its
// prefix, also next to a prefix that extends its own.
func testPrefixIsolation(t *testing.T, srv *testserver.S3Server) {
	bucket := srv.NewBucket(t) // the test server's own way, checked here
	admin := adminClient(srv)
	// Not "repo" itself: a file system backend (versitygw posix)
	// cannot have both "repo" and "repo/a/b".
	for _, name := range []string{"rep", "repo-2/x", "repox", "other/repo/y"} {
		if _, err := admin.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(name), Body: strings.NewReader("outside")}); err != nil {
			t.Fatal(err)
		}
	}
	s := openStore(t, testConfig(srv, bucket, "/repo/")) // slashes are trimmed
	if err := s.Put(t.Context(), "a/b", strings.NewReader("in"), 2, providers.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for info, err := range s.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, info.Key)
	}
	if diff := cmp.Diff([]string{"a/b"}, keys); diff != "" {
		t.Errorf("List mismatch (-want +got):\n%s", diff)
	}
	if _, err := admin.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("repo/a/b")}); err != nil {
		t.Errorf("object is not at repo/a/b: %v", err)
	}
	if got := s.String(); got != "s3://"+bucket+"/repo?endpoint="+srv.Endpoint {
		t.Errorf("String() = %q", got)
	}
}

// testStoreChecksumErrors sends wrong checksums straight to the store,
// past Put's own check, to prove that the store verifies them and that its
// answers are classified as ErrChecksum.
func testStoreChecksumErrors(t *testing.T, srv *testserver.S3Server) {
	bucket := newBucket(t, srv)
	s := openStore(t, testConfig(srv, bucket, ""))
	data := []byte("some data whose checksum is not the one sent")
	wrong := crcHeader(crc32c(data) ^ 1)
	_, err := s.client.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("single"), Body: bytes.NewReader(data),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c, ChecksumCRC32C: aws.String(wrong),
	})
	if err := classify(err); !errors.Is(err, providers.ErrChecksum) {
		t.Errorf("PutObject with a wrong CRC32C: %v, want ErrChecksum", err)
	}

	created, err := s.client.CreateMultipartUpload(t.Context(), &s3.CreateMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String("multi"), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c,
	})
	if err != nil {
		t.Fatal(err)
	}
	up := &multipartUpload{s: s, name: "multi", uploadID: aws.ToString(created.UploadId), what: "test"}
	_, err = s.client.UploadPart(t.Context(), &s3.UploadPartInput{
		Bucket: aws.String(bucket), Key: aws.String("multi"), UploadId: created.UploadId, PartNumber: aws.Int32(1),
		Body: bytes.NewReader(data), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c, ChecksumCRC32C: aws.String(wrong),
	})
	if err := classify(err); !errors.Is(err, providers.ErrChecksum) {
		t.Errorf("UploadPart with a wrong CRC32C: %v, want ErrChecksum", err)
	}
	if err := up.abort(t.Context()); err != nil {
		t.Error(err)
	}
}

// sequentialReader hides bytes.Reader's ReadAt, so that Put takes the
// path that reads parts into buffers.
type sequentialReader struct{ r *bytes.Reader }

func (s sequentialReader) Read(p []byte) (int, error)                { return s.r.Read(p) }
func (s sequentialReader) Seek(off int64, whence int) (int64, error) { return s.r.Seek(off, whence) }

// testSequentialMultipart runs multipart uploads from a body without
// ReadAt, starting past its beginning, and with wrong sizes and checksums.
func testSequentialMultipart(t *testing.T, srv *testserver.S3Server) {
	s := openStore(t, testConfig(srv, newBucket(t, srv), "seq"))
	const skip = 1000
	data := bytes.Repeat([]byte("0123456789abcdef"), (2*MinPartSize+777)/16)
	whole := append(bytes.Repeat([]byte("-"), skip), data...)
	open := func() io.ReadSeeker {
		r := sequentialReader{bytes.NewReader(whole)}
		if _, err := r.Seek(skip, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		return r
	}
	opts := providers.PutOptions{IfAbsent: true, CRC32C: crc32c(data), HasCRC32C: true}
	if err := s.Put(t.Context(), "obj", open(), int64(len(data)), opts); err != nil {
		t.Fatal(err)
	}
	checkGet(t, s, "obj", data)
	if err := s.Put(t.Context(), "obj", open(), int64(len(data)), opts); !errors.Is(err, providers.ErrExist) {
		t.Errorf("second IfAbsent Put: %v, want ErrExist", err)
	} else if errorCode(err) != "PreconditionFailed" {
		// The store itself refused the completion.
		t.Errorf("second IfAbsent Put: %v, want the store's PreconditionFailed", err)
	}
	bad := opts
	bad.CRC32C ^= 1
	for _, tc := range []struct {
		name string
		size int64
		opts providers.PutOptions
		want error
	}{
		{"wrong crc", int64(len(data)), bad, providers.ErrChecksum},
		{"long body", int64(len(data)) - 1, providers.PutOptions{}, nil},
		{"short body", int64(len(data)) + 1, providers.PutOptions{}, io.ErrUnexpectedEOF},
		{"short by a part", int64(len(data)) + MinPartSize, providers.PutOptions{}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Put(t.Context(), "bad", open(), tc.size, tc.opts)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Put: %v, want %v", err, tc.want)
			}
			if _, err := s.Stat(t.Context(), "bad"); !errors.Is(err, providers.ErrNotExist) {
				t.Errorf("Stat after the failed Put: %v, want ErrNotExist", err)
			}
		})
	}
}

// TestOpenURLEnvironment opens a store from a URL with credentials, region
// and endpoint from the environment, as a user would.
func TestOpenURLEnvironment(t *testing.T) {
	srv := testserver.StartVersity(t)
	bucket := srv.NewBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_ENDPOINT_URL_S3", srv.Endpoint)
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	u, err := url.Parse("s3://" + bucket + "/from/url?path_style=true&part_size=5MiB&max_parts=1000&request_checksum=when_required")
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenURL(t.Context(), u)
	if err != nil {
		t.Fatalf("OpenURL: %v", err)
	}
	defer s.Close()
	if s.partSize != MinPartSize || s.maxParts != 1000 || !s.whenRequired || s.client.Options().Region != "us-east-1" {
		t.Errorf("store has part size %d, max parts %d, when required %v, region %q",
			s.partSize, s.maxParts, s.whenRequired, s.client.Options().Region)
	}
	data := []byte("hello")
	if err := s.Put(t.Context(), "k", bytes.NewReader(data), 5, providers.PutOptions{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	checkGet(t, s, "k", data)
	if want := "s3://" + bucket + "/from/url?endpoint=" + srv.Endpoint; s.String() != want {
		t.Errorf("String() = %q, want %q", s.String(), want)
	}
}

func TestParseURL(t *testing.T) {
	providertest.CheckParseURL(t, parseURL, []providertest.URLCase[Config]{
		{URL: "s3://bucket", Want: Config{Bucket: "bucket"}},
		{URL: "s3://bucket/", Want: Config{Bucket: "bucket"}},
		{URL: "s3://bucket/a/b/", Want: Config{Bucket: "bucket", Prefix: "a/b"}},
		{URL: "s3://my.bucket/p?region=eu-west-1", Want: Config{Bucket: "my.bucket", Prefix: "p", Region: "eu-west-1"}},
		{
			URL: "s3://b/p?endpoint=http://127.0.0.1:9000&path_style=true&part_size=16MB&max_parts=1000&request_checksum=when_required",
			Want: Config{Bucket: "b", Prefix: "p", Endpoint: "http://127.0.0.1:9000", PathStyle: true,
				PartSize: 16 << 20, MaxParts: 1000, RequestChecksumWhenRequired: true},
		},
		{URL: "s3://b?part_size=5242880", Want: Config{Bucket: "b", PartSize: 5 << 20}},
		{URL: "s3://b?part_size=1G&path_style=false&request_checksum=when_supported", Want: Config{Bucket: "b", PartSize: 1 << 30}},
		{URL: "s3://b?part_size=6MiB", Want: Config{Bucket: "b", PartSize: 6 << 20}},

		{URL: "file:///x", Err: `scheme "file" is not s3`},
		{URL: "s3:///prefix", Err: "no bucket"},
		{URL: "s3:bucket", Err: "no bucket"},
		{URL: "s3://key:secret@bucket/p", Err: "credentials do not belong in the URL"},
		{URL: "s3://bucket:9000/p", Err: "give the server as ?endpoint="},
		{URL: "s3://b/p#frag", Err: "fragments"},
		{URL: "s3://b?regoin=x", Err: `unknown parameter "regoin" (known: region, endpoint`},
		{URL: "s3://b?region=a&region=b", Err: `parameter "region" given 2 times`},
		{URL: "s3://b?path_style=yes", Err: "path_style"},
		{URL: "s3://b?part_size=4MiB", Err: "between 5 MiB and 5 GiB"},
		{URL: "s3://b?part_size=6GiB", Err: "between 5 MiB and 5 GiB"},
		{URL: "s3://b?part_size=16XB", Err: "unknown unit"},
		{URL: "s3://b?part_size=-5M", Err: "positive size"},
		{URL: "s3://b?part_size=", Err: "positive size"},
		{URL: "s3://b?max_parts=0", Err: "max_parts"},
		{URL: "s3://b?max_parts=20000", Err: "between 1 and 10000"},
		{URL: "s3://b?request_checksum=never", Err: "request_checksum"},
		{URL: "s3://b?endpoint=127.0.0.1:9000", Err: "want an http:// or https:// URL"},
		{URL: "s3://b?endpoint=http://u:p@127.0.0.1:9000", Err: "credentials do not belong in the endpoint"},
		{URL: "s3://b/a//b", Err: "prefix"},
		{URL: "s3://b/a/../b", Err: "prefix"},
		{URL: "s3://b?%zz", Err: "query"},
	})
}

func TestKeyPrefix(t *testing.T) {
	for prefix, want := range map[string]bool{
		"": true, "a": true, "a/": true, "a/b": true, "a/.": true, "a/..x": true, ".hidden/x": true,
		"/": false, "/a": false, "a//": false, "a//b": false, "./a": false, "a/../b": false, "a\x00": false,
	} {
		if got := keyPrefix(prefix); got != want {
			t.Errorf("keyPrefix(%q) = %v, want %v", prefix, got, want)
		}
	}
}

func TestPartSizeFor(t *testing.T) {
	const (
		mib = int64(1) << 20
		gib = int64(1) << 30
		tib = int64(1) << 40
	)
	for _, tc := range []struct {
		size, partSize int64
		maxParts       int
		want           int64
		err            bool
	}{
		{0, 16 * mib, 10000, 16 * mib, false},
		{100 * mib, 16 * mib, 10000, 16 * mib, false},
		{160000 * mib, 16 * mib, 10000, 16 * mib, false}, // exactly 10,000 parts
		{160000*mib + 1, 16 * mib, 10000, 17 * mib, false},
		{tib, 16 * mib, 10000, 105 * mib, false},  // 1 TiB / 10,000 = 104.86 MiB
		{tib, 16 * mib, 1000, 1049 * mib, false},  // 1 TiB / 1,000 = 1048.58 MiB
		{tib, 200 * mib, 10000, 200 * mib, false}, // configured size is enough
		{5 * tib, 16 * mib, 10000, 525 * mib, false},
		{5 * tib, 16 * mib, 1000, 0, true}, // would need 5.1 GiB parts
		{5 * gib * 1000, 5 * mib, 1000, 5 * gib, false},
		{5*gib*1000 + 1, 5 * mib, 1000, 0, true},
	} {
		got, err := partSizeFor(tc.size, tc.partSize, tc.maxParts)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("partSizeFor(%d, %d, %d) = %d, %v; want %d, error %v", tc.size, tc.partSize, tc.maxParts, got, err, tc.want, tc.err)
			continue
		}
		if err == nil && tc.size > 0 {
			parts := (tc.size + got - 1) / got
			if parts > int64(tc.maxParts) || got%mib != 0 {
				t.Errorf("partSizeFor(%d, …, %d) = %d: %d parts", tc.size, tc.maxParts, got, parts)
			}
		}
	}
}

func TestCRC32CCombine(t *testing.T) {
	data := make([]byte, 300000)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	for _, split := range []int{0, 1, 2, 3, 4, 5, 8, 100, 4096, 65537, 299999, 300000} {
		a, b := data[:split], data[split:]
		if got, want := crc32cCombine(crc32c(a), crc32c(b), int64(len(b))), crc32c(data); got != want {
			t.Errorf("split at %d: combined %08x, want %08x", split, got, want)
		}
	}
}

func TestCRCHeader(t *testing.T) {
	// S3's documented example: CRC32C of "hello world" is c99465aa,
	// sent as the base64 of its big-endian bytes.
	if got := crcHeader(crc32c([]byte("hello world"))); got != "yZRlqg==" {
		t.Errorf("crcHeader = %q, want yZRlqg==", got)
	}
}

func TestClassify(t *testing.T) {
	answer := func(status int, code string) error {
		return &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      &smithy.GenericAPIError{Code: code, Message: "test"},
		}
	}
	for _, tc := range []struct {
		err  error
		want error // nil: none of the classes
	}{
		{answer(404, "NoSuchKey"), providers.ErrNotExist},
		{answer(404, "NotFound"), providers.ErrNotExist},
		{answer(404, ""), providers.ErrNotExist},
		{answer(404, "NoSuchBucket"), providers.ErrNoBucket},
		{answer(403, "AccessDenied"), providers.ErrAccessDenied},
		{answer(403, "SignatureDoesNotMatch"), providers.ErrAccessDenied},
		{answer(403, "InvalidAccessKeyId"), providers.ErrAccessDenied},
		{answer(404, "XAdminUserNotFound"), providers.ErrAccessDenied},
		{answer(403, ""), providers.ErrAccessDenied},
		{answer(400, "BadDigest"), providers.ErrChecksum},
		{answer(400, "XAmzContentChecksumMismatch"), providers.ErrChecksum},
		{answer(400, "InvalidDigest"), providers.ErrChecksum},
		{answer(412, "PreconditionFailed"), providers.ErrExist},
		{answer(412, ""), providers.ErrExist},
		{answer(409, "ConditionalRequestConflict"), providers.ErrTransient},
		{answer(503, "SlowDown"), providers.ErrTransient},
		{answer(429, ""), providers.ErrTransient},
		{answer(500, "InternalError"), providers.ErrTransient},
		{answer(502, ""), providers.ErrTransient},
		{answer(400, "InvalidArgument"), nil},
		{context.DeadlineExceeded, providers.ErrTransient},
		{io.ErrUnexpectedEOF, providers.ErrTransient},
		{&smithyhttp.RequestSendError{Err: syscall.ECONNRESET}, providers.ErrTransient},
		{&net.DNSError{Err: "no such host", Name: "nowhere.invalid", IsNotFound: true}, nil},
		{context.Canceled, nil},
	} {
		got := classify(tc.err)
		if !errors.Is(got, tc.err) {
			t.Errorf("classify(%v) = %v: lost the original error", tc.err, got)
		}
		for _, class := range []error{providers.ErrNotExist, providers.ErrNoBucket, providers.ErrAccessDenied,
			providers.ErrChecksum, providers.ErrExist, providers.ErrTransient} {
			if is := errors.Is(got, class); is != (class == tc.want) {
				t.Errorf("classify(%v): errors.Is(%v) = %v", tc.err, class, is)
			}
		}
	}
}

// TestExactBody checks the request body's refusals without a server.
func TestExactBody(t *testing.T) {
	data := []byte("0123456789")
	read := func(b *exactBody) ([]byte, error) {
		var out []byte
		buf := make([]byte, 3)
		for {
			n, err := b.Read(buf)
			out = append(out, buf[:n]...)
			if err == io.EOF {
				return out, nil
			}
			if err != nil {
				return out, err
			}
		}
	}
	newBody := func(r []byte, start, size int64, crc uint32, check bool) *exactBody {
		br := bytes.NewReader(r)
		br.Seek(start, io.SeekStart)
		return &exactBody{ctx: t.Context(), r: br, start: start, size: size, wantCRC: crc, checkCRC: check}
	}

	b := newBody(data, 2, 8, crc32c(data[2:]), true)
	got, err := read(b)
	if err != nil || string(got) != "23456789" {
		t.Fatalf("read = %q, %v", got, err)
	}
	// A second pass after seeking back gives the same bytes.
	if pos, err := b.Seek(0, io.SeekStart); pos != 0 || err != nil {
		t.Fatalf("Seek = %d, %v", pos, err)
	}
	if got, err := read(b); err != nil || string(got) != "23456789" {
		t.Fatalf("second read = %q, %v", got, err)
	}
	if n, err := b.Seek(0, io.SeekEnd); n != 8 || err != nil {
		t.Errorf("Seek(0, SeekEnd) = %d, %v", n, err)
	}
	if _, err := b.Seek(9, io.SeekStart); err == nil {
		t.Error("Seek past the end succeeded")
	}

	for _, tc := range []struct {
		name  string
		body  *exactBody
		want  error
		wantN int // bytes handed out before the failure: never all of them
	}{
		{"short", newBody(data, 0, 11, 0, false), io.ErrUnexpectedEOF, 9},
		{"long", newBody(data, 0, 9, 0, false), nil, 6},
		{"long empty", newBody(data, 0, 0, 0, false), nil, 0},
		{"wrong crc", newBody(data, 0, 10, crc32c(data)^1, true), providers.ErrChecksum, 9},
	} {
		got, err := read(tc.body)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: read = %q, %v; want error %v", tc.name, got, err, tc.want)
		}
		if len(got) != tc.wantN {
			t.Errorf("%s: handed out %d bytes before failing, want %d", tc.name, len(got), tc.wantN)
		}
	}

	b = newBody(data, 0, 10, 0, false)
	b.finish()
	if _, err := b.Read(make([]byte, 4)); !errors.Is(err, errFinished) {
		t.Errorf("Read after finish = %v", err)
	}
}

// TestSDKWords: what the SDK says reaches the user in pgstow's words. Its
// own log lines (here "falling back to IMDSv1", which every run off EC2
// without credentials triggers) go to Config.Log at debug, never to
// stderr; and a refusal over plain HTTP is not called an "https response
// error".
func TestSDKWords(t *testing.T) {
	srv := testserver.StartVersity(t)
	bucket := srv.NewBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "")
	// The metadata service's place is taken by the S3 server, which
	// refuses the IMDSv2 token request as IMDS does off EC2.
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", srv.Endpoint)

	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, err := Open(t.Context(), Config{Bucket: bucket, Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true, Log: log})
	if err == nil || !errors.Is(err, providers.ErrAccessDenied) {
		t.Fatalf("Open without credentials: %v, want access denied", err)
	}
	if !strings.Contains(logged.String(), "falling back to IMDSv1") || !strings.Contains(logged.String(), "level=DEBUG") {
		t.Errorf("the SDK's IMDSv1 warning did not reach the logger at debug; logged:\n%s", logged.String())
	}

	_, err = Open(t.Context(), Config{Bucket: bucket, Endpoint: srv.Endpoint, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: "wrong-secret", Log: log})
	if err == nil || !errors.Is(err, providers.ErrAccessDenied) {
		t.Fatalf("Open with a wrong secret: %v, want access denied", err)
	}
	var resp *smithyhttp.ResponseError
	if msg := err.Error(); strings.Contains(msg, "https response error") || !strings.Contains(msg, "HTTP status 403") || !errors.As(err, &resp) {
		t.Errorf("Open over http with a wrong secret: %q; want HTTP status 403, no 'https', the SDK's error inside", msg)
	}
}

// TestReword: the store's answer is described from its parts, whatever
// wraps it; errors without an answer are left alone.
func TestReword(t *testing.T) {
	answer := &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 403}},
		Err:      &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied."},
	}
	op := &smithy.OperationError{ServiceID: "S3", OperationName: "ListObjectsV2", Err: answer}
	got := classify(op)
	if want := "S3 ListObjectsV2: HTTP status 403: api error AccessDenied: Access Denied."; !strings.Contains(got.Error(), want) {
		t.Errorf("classify(%v) = %q, want it to contain %q", op, got, want)
	}
	if !errors.Is(got, providers.ErrAccessDenied) || !errors.Is(got, op) {
		t.Errorf("classify(%v) = %v: lost its class or the SDK's error", op, got)
	}
	if plain := io.ErrUnexpectedEOF; reword(plain) != plain {
		t.Errorf("reword changed an error without an HTTP answer")
	}
}
