package testserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// S3Server is a running S3-compatible server (MinIO or versitygw) with
// the credentials it accepts.
type S3Server struct {
	// Endpoint is the server's base URL, e.g. http://127.0.0.1:9000.
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// Region is the region to sign requests for.
	Region string
}

const (
	s3TestAccessKey = "pgstowtest"
	s3TestSecretKey = "pgstowtestsecret" // MinIO wants 8+ characters
	s3TestRegion    = "us-east-1"
	// s3StartTimeout is generous for a loaded CI machine: MinIO usually
	// answers within a second or two.
	s3StartTimeout = 60 * time.Second
)

// StartMinIO starts MinIO (from .cache/bin/minio) on a fresh data
// directory and free loopback ports, and stops it when the test ends.
func StartMinIO(t testing.TB) *S3Server {
	t.Helper()
	bin := Binary(t, "bin/minio")
	env := []string{
		"MINIO_ROOT_USER=" + s3TestAccessKey,
		"MINIO_ROOT_PASSWORD=" + s3TestSecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	}
	var endpoint string
	startOnFreePort(t, func(port int) (*Process, error) {
		p := Start(t, "minio", env, bin, "server", "--quiet",
			"--address", Addr(port), "--console-address", Addr(FreePort(t)), t.TempDir())
		endpoint = "http://" + Addr(port)
		// "ready" (not just "live"): MinIO answers 503 to requests until
		// its storage is initialised.
		return p, p.waitUp(endpoint+"/minio/health/ready", s3StartTimeout, func(resp *http.Response) error {
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %s", resp.Status)
			}
			return nil
		})
	})
	return &S3Server{Endpoint: endpoint, AccessKey: s3TestAccessKey, SecretKey: s3TestSecretKey, Region: s3TestRegion}
}

// StartVersity starts versitygw (from .cache/bin/versitygw) with its posix
// backend on a fresh directory and a free loopback port, and stops it
// when the test ends.
func StartVersity(t testing.TB) *S3Server {
	t.Helper()
	bin := Binary(t, "bin/versitygw")
	var endpoint string
	startOnFreePort(t, func(port int) (*Process, error) {
		p := Start(t, "versitygw", nil, bin, "--port", Addr(port),
			"--access", s3TestAccessKey, "--secret", s3TestSecretKey, "--quiet", "posix", t.TempDir())
		endpoint = "http://" + Addr(port)
		// versitygw has no health endpoint: an anonymous request's answer
		// (403) shows that it listens.
		return p, p.waitUp(endpoint+"/", s3StartTimeout, listening)
	})
	return &S3Server{Endpoint: endpoint, AccessKey: s3TestAccessKey, SecretKey: s3TestSecretKey, Region: s3TestRegion}
}

var bucketSeq atomic.Int64

// NewBucket creates a new, uniquely named bucket through the S3 API and
// returns its name. The bucket goes away with the server.
func (s *S3Server) NewBucket(t testing.TB) string {
	t.Helper()
	return s.newBucket(t, false)
}

// NewLockedBucket creates a bucket with S3 Object Lock enabled (which
// turns versioning on) and no default retention, as pgstow's immutable
// repositories want it (docs/immutability.md).
func (s *S3Server) NewLockedBucket(t testing.TB) string {
	t.Helper()
	return s.newBucket(t, true)
}

func (s *S3Server) newBucket(t testing.TB, locked bool) string {
	t.Helper()
	var r [4]byte
	_, _ = rand.Read(r[:])
	name := fmt.Sprintf("test-%d-%d-%s", os.Getpid(), bucketSeq.Add(1), hex.EncodeToString(r[:]))
	// MinIO may still answer 503 for a moment after reporting ready.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.createBucket(name, locked)
		if err == nil {
			return name
		}
		if !strings.HasPrefix(err.Error(), "503") || time.Now().After(deadline) {
			t.Fatalf("testserver: create bucket %s at %s: %v", name, s.Endpoint, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// createBucket sends a CreateBucket request (PUT /bucket) signed with AWS
// Signature Version 4, so that this package needs no SDK.
func (s *S3Server) createBucket(name string, locked bool) error {
	req, err := http.NewRequest(http.MethodPut, s.Endpoint+"/"+name, nil)
	if err != nil {
		return err
	}
	if locked {
		req.Header.Set("X-Amz-Bucket-Object-Lock-Enabled", "true")
	}
	s.sign(req, time.Now().UTC())
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return nil
}

// sign adds SigV4 headers to a request with an empty body, path-style,
// whose query, if any, is already in canonical form (keys sorted, values
// escaped). An X-Amz-Bucket-Object-Lock-Enabled header is signed too.
func (s *S3Server) sign(req *http.Request, now time.Time) {
	emptyHash := sha256.Sum256(nil)
	payloadHash := hex.EncodeToString(emptyHash[:])
	amzDate := now.Format("20060102T150405Z")
	day := now.Format("20060102")
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)

	signedHeaders := "host;x-amz-content-sha256;x-amz-date"
	headers := []string{"host:" + req.URL.Host}
	if v := req.Header.Get("X-Amz-Bucket-Object-Lock-Enabled"); v != "" {
		signedHeaders = "host;x-amz-bucket-object-lock-enabled;x-amz-content-sha256;x-amz-date"
		headers = append(headers, "x-amz-bucket-object-lock-enabled:"+v)
	}
	headers = append(headers, "x-amz-content-sha256:"+payloadHash, "x-amz-date:"+amzDate)
	canonical := strings.Join(append(append([]string{
		req.Method,
		req.URL.EscapedPath(),
		req.URL.RawQuery, // callers give it in canonical form
	}, headers...), "", signedHeaders, payloadHash), "\n")
	canonicalHash := sha256.Sum256([]byte(canonical))
	scope := day + "/" + s.Region + "/s3/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(canonicalHash[:])

	mac := func(key []byte, data string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(data))
		return h.Sum(nil)
	}
	key := mac([]byte("AWS4"+s.SecretKey), day)
	key = mac(key, s.Region)
	key = mac(key, "s3")
	key = mac(key, "aws4_request")
	signature := hex.EncodeToString(mac(key, toSign))
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
		s.AccessKey, scope, signedHeaders, signature))
}

// ObjectVersion is one entry of a bucket's version listing.
type ObjectVersion struct {
	Key          string
	VersionID    string
	Latest       bool
	DeleteMarker bool
}

// Versions lists every version and delete marker under prefix in bucket
// (ListObjectVersions), for tests that must show that nothing is left
// behind in a versioned bucket. It fails the test if the listing does
// not fit one page (1,000 entries).
func (s *S3Server) Versions(t testing.TB, bucket, prefix string) []ObjectVersion {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.Endpoint+"/"+bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.RawQuery = "prefix=" + strings.ReplaceAll(url.QueryEscape(prefix), "+", "%20") + "&versions="
	s.sign(req, time.Now().UTC())
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("testserver: list versions in %s: %v", bucket, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("testserver: list versions in %s: %s: %s", bucket, resp.Status, body)
	}
	var out struct {
		IsTruncated bool
		Version     []struct {
			Key       string
			VersionId string
			IsLatest  bool
		}
		DeleteMarker []struct {
			Key       string
			VersionId string
			IsLatest  bool
		}
	}
	if err := xml.Unmarshal(body, &out); err != nil {
		t.Fatalf("testserver: list versions in %s: %v", bucket, err)
	}
	if out.IsTruncated {
		t.Fatalf("testserver: list versions in %s: more than one page", bucket)
	}
	var vs []ObjectVersion
	for _, v := range out.Version {
		vs = append(vs, ObjectVersion{Key: v.Key, VersionID: v.VersionId, Latest: v.IsLatest})
	}
	for _, v := range out.DeleteMarker {
		vs = append(vs, ObjectVersion{Key: v.Key, VersionID: v.VersionId, Latest: v.IsLatest, DeleteMarker: true})
	}
	return vs
}
