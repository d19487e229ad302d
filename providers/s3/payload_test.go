package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/pgstow/pgstow/integration/testserver"
	"github.com/pgstow/pgstow/providers"
)

// TestPayloadSigning checks which requests leave the body out of the
// signature: over TLS and to loopback only.
func TestPayloadSigning(t *testing.T) {
	body := []byte("chunk bytes")
	sum := sha256.Sum256(body)
	signed := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		url  string
		want string
	}{
		{"https://s3.eu-west-1.amazonaws.com/bucket/key", "UNSIGNED-PAYLOAD"},
		{"https://10.1.2.3:9000/bucket/key", "UNSIGNED-PAYLOAD"},
		{"http://127.0.0.1:9000/bucket/key", "UNSIGNED-PAYLOAD"},
		{"http://127.1.2.3:9000/bucket/key", "UNSIGNED-PAYLOAD"},
		{"http://[::1]:9000/bucket/key", "UNSIGNED-PAYLOAD"},
		{"http://localhost:9000/bucket/key", "UNSIGNED-PAYLOAD"},
		{"http://10.1.2.3:9000/bucket/key", signed},
		{"http://minio.internal:9000/bucket/key", signed},
		{"http://localhost.example.com/bucket/key", signed},
		{"http://[::ffff:10.1.2.3]:9000/bucket/key", signed},
	} {
		t.Run(tc.url, func(t *testing.T) {
			req := smithyhttp.NewStackRequest().(*smithyhttp.Request)
			r, err := http.NewRequest(http.MethodPut, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Request = r
			req, err = req.SetStream(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			var got string
			next := middleware.FinalizeHandlerFunc(func(ctx context.Context, in middleware.FinalizeInput) (middleware.FinalizeOutput, middleware.Metadata, error) {
				got = v4.GetPayloadHash(ctx)
				return middleware.FinalizeOutput{}, middleware.Metadata{}, nil
			})
			if _, _, err := (payloadSigning{}).HandleFinalize(context.Background(), middleware.FinalizeInput{Request: req}, next); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("payload hash %q, want %q", got, tc.want)
			}
		})
	}
}

// testUnsignedOnLoopback puts through a recording proxy in front of srv
// (both on loopback): bodies with our CRC32C go unsigned, single and
// multipart, and the server takes them; a body without one stays signed.
func testUnsignedOnLoopback(t *testing.T, srv *testserver.S3Server) {
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string // method, query and payload hash of each body-carrying request
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			what := "put"
			if r.URL.Query().Has("partNumber") {
				what = "part"
			}
			mu.Lock()
			seen = append(seen, what+" "+r.Header.Get("X-Amz-Content-Sha256"))
			mu.Unlock()
		}
		proxy.ServeHTTP(w, r) // the Host header stays the signed one
	}))
	defer front.Close()
	cfg := testConfig(srv, newBucket(t, srv), "unsigned")
	cfg.Endpoint = front.URL
	s := openStore(t, cfg)

	check := func(name string, data []byte, opts providers.PutOptions, want string) {
		t.Helper()
		mu.Lock()
		seen = nil
		mu.Unlock()
		if err := s.Put(t.Context(), name, bytes.NewReader(data), int64(len(data)), opts); err != nil {
			t.Fatalf("Put %s: %v", name, err)
		}
		checkGet(t, s, name, data)
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			t.Fatalf("Put %s: no PUT request seen", name)
		}
		for _, got := range seen {
			if !strings.HasSuffix(got, " "+want) {
				t.Errorf("Put %s: request %q, want payload hash %s", name, got, want)
			}
		}
	}
	small := bytes.Repeat([]byte("s"), 1000)
	large := bytes.Repeat([]byte("L"), 2*MinPartSize+5)
	check("small", small, providers.PutOptions{CRC32C: crc32c(small), HasCRC32C: true}, "UNSIGNED-PAYLOAD")
	check("large", large, providers.PutOptions{CRC32C: crc32c(large), HasCRC32C: true}, "UNSIGNED-PAYLOAD")
	sum := sha256.Sum256(small)
	check("no-crc", small, providers.PutOptions{}, hex.EncodeToString(sum[:]))
}
