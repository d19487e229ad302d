// Package gcs stores a repository in a Google Cloud Storage bucket, below
// an optional prefix. It speaks GCS's JSON API over net/http itself:
// uploads (multipart or resumable), ranged media downloads, object
// metadata, listing, deletion and object retention (lock.go) are each a
// request or two, and the Google Cloud client library is not needed: it
// links gRPC,
// OpenTelemetry and the Envoy xDS control plane for features the store
// does not use, which made up more than half of pgstow's binary, and the
// kernel maps a binary's code into every command's memory.
//
// Credentials are Google application default credentials, found by
// golang.org/x/oauth2/google: a key file named by
// GOOGLE_APPLICATION_CREDENTIALS (service account, workload identity
// federation, impersonation), gcloud's application-default login, or the
// metadata server on Google Cloud. With STORAGE_EMULATOR_HOST set, or
// Config.Endpoint, the store talks plain HTTP to an emulator such as
// fake-gcs-server and sends no credentials.
//
// Every call makes one attempt and classifies its failure (see
// errors.go); the one retry layer above the providers decides what to
// try again.
package gcs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"iter"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

const (
	// chunkUnitBytes is the granularity of resumable uploads: every chunk
	// but the last must be a multiple of 256 KiB.
	chunkUnitBytes = 256 << 10
	// DefaultChunkSize is the size of the requests of a resumable upload.
	DefaultChunkSize = 16 << 20
	// maxChunkBytes bounds ChunkSize and MultipartThreshold.
	maxChunkBytes = 1 << 30
	// maxObjectBytes is the largest object GCS stores (5 TiB).
	maxObjectBytes = 5 << 40
	// copyBlockBytes is how much Put reads from a body at a time, between
	// context checks, and the size of the pooled buffers it reads into.
	copyBlockBytes = 256 << 10
	// openTimeout bounds the request Open makes to check the bucket and
	// the credentials.
	openTimeout = 15 * time.Second
	// dialTimeout makes an unreachable endpoint fail within seconds
	// rather than after the operating system's TCP timeout.
	dialTimeout = 5 * time.Second
	// tokenTimeout bounds a request for an access token. The oauth2
	// token sources take no context, so this is the only bound.
	tokenTimeout = 30 * time.Second
	// googleEndpoint names Google's endpoint in messages.
	googleEndpoint = "https://storage.googleapis.com"
	// googleAPI is the JSON API's root on Google.
	googleAPI = googleEndpoint + "/storage/v1/"
	// scopeReadWrite is the OAuth scope the store asks its tokens for.
	scopeReadWrite = "https://www.googleapis.com/auth/devstorage.read_write"
	// quotaProjectEnv names the quota project, as for the client
	// libraries.
	quotaProjectEnv = "GOOGLE_CLOUD_QUOTA_PROJECT"
	// emulatorEnv is the variable the client libraries and the gcloud
	// tools read to talk to an emulator.
	emulatorEnv = "STORAGE_EMULATOR_HOST"
	// userAgent names pgstow to the server.
	userAgent = "pgstow"
)

// Config describes a GCS repository.
//
// Memory: a Put holds one pooled 256 KiB buffer, whatever the object's
// size. It streams its body into the request, into one request below
// MultipartThreshold and into chunks of ChunkSize above, and where GCS
// keeps only part of a chunk it seeks the body back rather than keeping
// the chunk. So n concurrent Puts hold at most n × 256 KiB besides the
// HTTP connections' own buffers; ChunkSize and MultipartThreshold cost no
// memory.
type Config struct {
	// Bucket is the bucket's name; it must exist.
	Bucket string
	// Prefix is prepended, with a slash, to every object name; empty
	// stores the repository at the top of the bucket.
	Prefix string
	// ChunkSize is the size of the requests of a resumable upload: a
	// multiple of 256 KiB, at most 1 GiB; zero means DefaultChunkSize.
	ChunkSize int
	// MultipartThreshold is the object size from which uploads are
	// resumable (chunked); smaller objects go in a single request. Zero
	// means ChunkSize; at most 1 GiB.
	MultipartThreshold int64
	// Endpoint points the store at an emulator, as host:port (plain
	// HTTP) or as a URL; requests then carry no credentials. Empty means
	// STORAGE_EMULATOR_HOST if that is set, else Google.
	Endpoint string
}

// withDefaults fills in the defaults and checks the sizes.
func (c Config) withDefaults() (Config, error) {
	if err := checkBucketName(c.Bucket); err != nil {
		return c, err
	}
	prefix, err := cleanPrefix(c.Prefix)
	if err != nil {
		return c, err
	}
	c.Prefix = prefix
	if c.ChunkSize == 0 {
		c.ChunkSize = DefaultChunkSize
	}
	if c.ChunkSize < 0 || c.ChunkSize%chunkUnitBytes != 0 || c.ChunkSize > maxChunkBytes {
		return c, fmt.Errorf("chunk size %d: must be a positive multiple of 256 KiB, at most 1 GiB", c.ChunkSize)
	}
	if c.MultipartThreshold == 0 {
		c.MultipartThreshold = int64(c.ChunkSize)
	}
	if c.MultipartThreshold < 0 || c.MultipartThreshold > maxChunkBytes {
		return c, fmt.Errorf("multipart threshold %d: must be positive and at most 1 GiB", c.MultipartThreshold)
	}
	return c, nil
}

// checkBucketName applies GCS's naming rules, so that a typo in a URL
// fails with a clear message rather than a puzzling 400 from the server.
func checkBucketName(name string) error {
	if name == "" {
		return fmt.Errorf("no bucket given")
	}
	if len(name) < 3 || len(name) > 222 {
		return fmt.Errorf("bucket name %q: must be 3 to 222 characters long", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("bucket name %q: only lower-case letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return fmt.Errorf("bucket name %q: must start and end with a letter or digit", name)
	}
	return nil
}

func isAlnum(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }

// cleanPrefix drops the slashes around a prefix and checks its elements
// as those of a key, so that no object name has empty, "." or ".."
// elements.
func cleanPrefix(prefix string) (string, error) {
	p := strings.Trim(prefix, "/")
	if p == "" {
		return "", nil
	}
	if err := providers.ValidateKey(p); err != nil {
		return "", fmt.Errorf("prefix %q: %w", prefix, err)
	}
	return p, nil
}

// Store is a providers.Store in a GCS bucket. It is safe for concurrent
// use.
type Store struct {
	client    *http.Client
	transport *http.Transport
	// tokens authorises requests to Google; nil for an emulator.
	tokens oauth2.TokenSource
	// quotaProject, if set, is the project requests to Google are
	// accounted to (X-Goog-User-Project), as the client libraries do.
	quotaProject string
	cfg          Config
	// namePrefix is cfg.Prefix + "/", or empty.
	namePrefix string
	// endpoint names where requests go, for messages.
	endpoint string
	// api is the JSON API's root ("https://host/storage/v1/"), upload
	// the root of its uploads ("https://host/upload/storage/v1/").
	api, upload *url.URL
	// buffers holds *[]byte of copyBlockBytes for Put.
	buffers sync.Pool
	// skipLocalCRC32C turns off Put's own check of the CRC32C, so that
	// a test can see the server's.
	skipLocalCRC32C bool
	// lockable is set once the bucket was seen to have object
	// retention (see checkLockable).
	lockable atomic.Bool
}

var _ providers.Store = (*Store)(nil)

// Open opens the repository and checks, with one request bounded by
// 15 s, that the bucket exists and that the credentials may list it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open gs://%s/%s: %w", cfg.Bucket, strings.Trim(cfg.Prefix, "/"), err)
	}
	s := &Store{cfg: cfg, transport: newTransport(), namePrefix: providers.KeyPrefix(cfg.Prefix)}
	// Redirects are not followed: resumable uploads answer 308 for "go
	// on", and nothing else the store asks for redirects.
	s.client = &http.Client{
		Transport:     s.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s.buffers.New = func() any {
		b := make([]byte, copyBlockBytes)
		return &b
	}

	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv(emulatorEnv)
	}
	api := googleAPI
	if endpoint != "" {
		if api, err = emulatorEndpoint(endpoint); err != nil {
			return nil, fmt.Errorf("open %s: %w", s, err)
		}
		s.endpoint = api
	} else {
		s.endpoint = googleEndpoint
		if s.tokens, s.quotaProject, err = googleTokens(s.transport); err != nil {
			return nil, fmt.Errorf("open %s: %w", s, err)
		}
	}
	// emulatorEndpoint returned a URL that parses.
	s.api, _ = url.Parse(api)
	// As the client libraries do, uploads go to /upload/storage/v1/ on
	// the same host, whatever the API's path.
	s.upload = &url.URL{Scheme: s.api.Scheme, Host: s.api.Host, Path: "/upload/storage/v1/"}

	if err := s.check(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// newTransport is http.DefaultTransport with a short dial timeout and more
// idle connections per host, since Puts run in parallel against one host.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.MaxIdleConnsPerHost = 100
	return t
}

// googleTokens finds the application default credentials and returns the
// source of the access tokens that authorise requests with them, and the
// quota project: GOOGLE_CLOUD_QUOTA_PROJECT, else the credentials file's
// quota_project_id (gcloud's application-default login writes one), as
// the client libraries have it.
//
// golang.org/x/oauth2/google keeps the context it is given for the token
// requests it makes later, whenever a token expires, so it gets one that
// never ends and carries an HTTP client over base (for its dial timeout)
// with a timeout of its own, rather than the context of Open.
func googleTokens(base *http.Transport) (tokens oauth2.TokenSource, quotaProject string, err error) {
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: base, Timeout: tokenTimeout})
	creds, err := google.FindDefaultCredentialsWithParams(ctx, google.CredentialsParams{Scopes: []string{scopeReadWrite}})
	if err != nil {
		return nil, "", fmt.Errorf("%w: no Google application default credentials found (set GOOGLE_APPLICATION_CREDENTIALS to a key file, run gcloud auth application-default login, or run on Google Cloud; for an emulator set %s): %w",
			providers.ErrAccessDenied, emulatorEnv, err)
	}
	quotaProject = os.Getenv(quotaProjectEnv)
	if quotaProject == "" && len(creds.JSON) > 0 {
		var file struct {
			QuotaProject string `json:"quota_project_id"`
		}
		if json.Unmarshal(creds.JSON, &file) == nil {
			quotaProject = file.QuotaProject
		}
	}
	// Most sources cache their token already; one that does not would
	// otherwise fetch a token for every request.
	return oauth2.ReuseTokenSource(nil, creds.TokenSource), quotaProject, nil
}

// emulatorEndpoint turns host:port or a URL into the JSON API's root
// ("http://host:port/storage/v1/"), as the client libraries do for
// STORAGE_EMULATOR_HOST.
func emulatorEndpoint(endpoint string) (string, error) {
	u := &url.URL{Scheme: "http", Host: endpoint}
	if strings.Contains(endpoint, "://") {
		var err error
		if u, err = url.Parse(endpoint); err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // url.Error quotes the input, which may hold a password
			}
			return "", fmt.Errorf("endpoint does not parse: %w", err)
		}
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("endpoint %q: want host:port or http(s)://host:port", providers.RedactURL(u))
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/storage/v1/"
	} else if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawPath = ""
	out := u.String()
	if _, err := url.Parse(out); err != nil {
		return "", fmt.Errorf("endpoint %q does not parse", providers.RedactURL(u))
	}
	return out, nil
}

// check lists at most one object below the prefix: the cheapest request
// that proves the bucket exists and that the credentials may read it.
// Unlike fetching the bucket's metadata, it needs only the object
// permissions a backup account has anyway.
func (s *Store) check(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, openTimeout)
	defer cancel()
	q := url.Values{"prefix": {s.namePrefix}, "maxResults": {"1"}, "fields": {"items(name)"}}
	resp, err := s.send(ctx, http.MethodGet, s.bucketURL(q), nil, http.StatusOK)
	if err == nil {
		discard(resp)
		return nil
	}
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("open %s: %w", s, perr)
	}
	class, transient := classify(err, providers.ErrNoBucket)
	// The cause without the request's long URL, where there is one.
	cause := err
	if urlErr := (*url.Error)(nil); errors.As(err, &urlErr) {
		cause = urlErr.Err
	}
	switch {
	case errors.Is(class, providers.ErrNoBucket):
		return classed(class, err, "open %s: bucket %q does not exist (at %s)", s, s.cfg.Bucket, s.endpoint)
	case errors.Is(class, providers.ErrAccessDenied):
		return classed(class, err, "open %s: access denied: check the Google credentials (application default credentials: GOOGLE_APPLICATION_CREDENTIALS or gcloud auth application-default login) and that they may list objects in bucket %q", s, s.cfg.Bucket)
	case errors.Is(err, context.DeadlineExceeded):
		return providers.MarkTransient(fmt.Errorf("open %s: cannot reach endpoint %s: no answer within %s: %w", s, s.endpoint, openTimeout, err))
	case transient:
		return providers.MarkTransient(classed(err, cause, "open %s: cannot reach endpoint %s", s, s.endpoint))
	default:
		return fmt.Errorf("open %s: list bucket %q at %s: %w", s, s.cfg.Bucket, s.endpoint, err)
	}
}

// OpenURL opens gs://bucket/prefix?chunk_size=16MiB&multipart_threshold=8MiB
// (both parameters optional; sizes in bytes or with a binary unit: K, M,
// G, KiB, MB, ...). Unknown parameters are refused rather than ignored.
// STORAGE_EMULATOR_HOST points it at an emulator.
func OpenURL(ctx context.Context, u *url.URL) (*Store, error) {
	cfg, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg)
}

// urlExample is quoted in URL errors.
const urlExample = "gs://bucket/prefix?chunk_size=16MiB"

// ParseURL checks a gs:// URL without contacting anything and returns the
// Config it names, for callers that want a bad URL told apart from a store
// that cannot be reached (Open does the rest).
func ParseURL(u *url.URL) (Config, error) { return parseURL(u) }

// parseURL turns a gs:// URL into a Config without contacting anything.
func parseURL(u *url.URL) (Config, error) {
	if u == nil {
		return Config{}, fmt.Errorf("open GCS store: no URL")
	}
	fail := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("open GCS store %q: %s (e.g. %s)", providers.RedactURL(u), fmt.Sprintf(format, args...), urlExample)
	}
	switch {
	case u.Scheme != "gs":
		return fail("scheme %q is not gs", u.Scheme)
	case u.Opaque != "":
		return fail("want gs://bucket/prefix")
	case u.User != nil:
		return fail("user information is not supported; credentials come from the application default credentials")
	case u.Fragment != "":
		return fail("fragments are not supported")
	case u.Host == "":
		return fail("no bucket")
	case u.Port() != "" || strings.Contains(u.Host, ":"):
		return fail("%q is no bucket name; to use an emulator set %s", u.Host, emulatorEnv)
	}
	cfg := Config{Bucket: u.Host}
	if err := checkBucketName(cfg.Bucket); err != nil {
		return fail("%v", err)
	}
	prefix, err := cleanPrefix(u.Path)
	if err != nil {
		return fail("%v", err)
	}
	cfg.Prefix = prefix
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail("query: %v", err)
	}
	// Sorted, so that a URL with two bad parameters always names the same.
	for _, name := range slices.Sorted(maps.Keys(query)) {
		values := query[name]
		if name != "chunk_size" && name != "multipart_threshold" {
			return fail("unknown parameter %q; known: chunk_size, multipart_threshold", name)
		}
		if len(values) != 1 {
			return fail("parameter %s given %d times", name, len(values))
		}
		size, err := manifest.ParseSize(values[0])
		n := uint64(size)
		if err != nil {
			return fail("%s: %v", name, err)
		}
		switch name {
		case "chunk_size":
			if n > maxChunkBytes {
				return fail("chunk_size %s: at most 1 GiB", values[0])
			}
			cfg.ChunkSize = int(n)
			if n == 0 || n%chunkUnitBytes != 0 {
				return fail("chunk_size %s: must be a positive multiple of 256 KiB", values[0])
			}
		case "multipart_threshold":
			if n == 0 || n > maxChunkBytes {
				return fail("multipart_threshold %s: must be positive and at most 1 GiB", values[0])
			}
			cfg.MultipartThreshold = int64(n)
		}
	}
	return cfg, nil
}

// String names the store as a gs:// URL.
func (s *Store) String() string {
	if s.cfg.Prefix == "" {
		return "gs://" + s.cfg.Bucket
	}
	return "gs://" + s.cfg.Bucket + "/" + s.cfg.Prefix
}

// Close releases the idle connections.
func (s *Store) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// objectName maps a key to its object name below the prefix.
func (s *Store) objectName(key string) string { return s.namePrefix + key }

// checkedName is objectName after checking key.
func (s *Store) checkedName(key string) (string, error) {
	return providers.PrefixedKey(s.namePrefix, key)
}

// Get reads a range with one media download from the JSON API. GCS
// answers a range that starts at or past the end with 416, which is an
// empty read here; an answer with the whole object to a ranged request is
// read from the offset on. A read of the whole object checks the CRC32C
// GCS declares for it at the end (GCS declares only the whole object's,
// so a ranged read cannot be checked).
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	name, err := providers.CheckGet(ctx, s, key, offset, s.checkedName)
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("get %q from %s", key, s)
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.objectURL(name, url.Values{"alt": {"media"}}).String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	ranged := offset > 0 || length > 0
	if r := rangeHeader(offset, length); r != "" {
		req.Header.Set("Range", r)
	}
	resp, err := s.do(req)
	if err != nil {
		return nil, s.fail(what, err, providers.ErrNotExist)
	}
	switch {
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		discard(resp)
		return io.NopCloser(strings.NewReader("")), nil
	case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent:
		return nil, s.fail(what, responseError(resp), providers.ErrNotExist)
	case resp.StatusCode == http.StatusOK && offset > 0:
		// The whole object for a range: GCS answers 206, but a proxy
		// that drops the Range header would not. Skip to the offset.
		switch _, err := io.CopyN(io.Discard, resp.Body, offset); {
		case errors.Is(err, io.EOF):
			resp.Body.Close()
			return io.NopCloser(strings.NewReader("")), nil
		case err != nil:
			resp.Body.Close()
			return nil, s.fail(what, err, providers.ErrNotExist)
		}
	}
	r := &reader{body: resp.Body, s: s, what: what, left: -1}
	if length > 0 {
		r.left = length
	}
	if !ranged {
		r.wantCRC, r.checkCRC = downloadCRC32C(resp)
	}
	return r, nil
}

// rangeHeader returns the Range header for length bytes from offset
// (length < 0: to the end), or "" for the whole object.
func rangeHeader(offset, length int64) string {
	switch {
	case length > 0:
		return fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)
	case offset > 0:
		return fmt.Sprintf("bytes=%d-", offset)
	}
	return ""
}

// downloadCRC32C returns the CRC32C that a download of a whole object
// declares, if the body is the object's bytes as stored: not for an
// object stored compressed, which GCS may decompress on the way, nor for
// a body that the HTTP transport decompressed.
func downloadCRC32C(resp *http.Response) (uint32, bool) {
	if resp.Uncompressed || resp.Header.Get("Content-Encoding") != "" {
		return 0, false
	}
	if enc := resp.Header.Get("X-Goog-Stored-Content-Encoding"); enc != "" && enc != "identity" {
		return 0, false
	}
	return hashCRC32C(resp.Header.Values("X-Goog-Hash"))
}

// hashCRC32C finds the CRC32C in X-Goog-Hash header values
// ("crc32c=n03x6A==,md5=..." in one value or several).
func hashCRC32C(values []string) (uint32, bool) {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			if b64, ok := strings.CutPrefix(strings.TrimSpace(part), "crc32c="); ok {
				return decodeCRC32C(b64)
			}
		}
	}
	return 0, false
}

// reader classifies the errors of a download, which can fail after Get
// returned (a connection reset mid-body), stops a ranged read at its
// length, and checks the CRC32C of a whole object at its end.
type reader struct {
	body     io.ReadCloser
	s        *Store
	what     string
	left     int64 // bytes still wanted; -1: to the end
	crc      uint32
	wantCRC  uint32
	checkCRC bool
}

func (r *reader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.left > 0 && int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.body.Read(p)
	if r.left > 0 {
		r.left -= int64(n)
	}
	if r.checkCRC {
		r.crc = crc32.Update(r.crc, manifest.Castagnoli, p[:n])
	}
	if err == io.EOF && r.checkCRC && r.crc != r.wantCRC {
		err = fmt.Errorf("object has CRC32C %08x, read %08x: %w", r.wantCRC, r.crc, providers.ErrChecksum)
	}
	if err != nil && err != io.EOF {
		err = r.s.fail(r.what+": read", err, providers.ErrNotExist)
	}
	return n, err
}

func (r *reader) Close() error { return r.body.Close() }

// objectResource is the part of the JSON API's object resource the store
// reads. Sizes are int64s, which JSON carries as strings.
type objectResource struct {
	Name        string    `json:"name"`
	Size        int64     `json:"size,string"`
	CRC32C      string    `json:"crc32c"`
	Updated     time.Time `json:"updated"`
	TimeCreated time.Time `json:"timeCreated"`
	// Generation and Retention are asked for by uploads only
	// (uploadFields).
	Generation int64            `json:"generation,string"`
	Retention  *objectRetention `json:"retention"`
}

// modTime is when the object's generation was written. Updated changes
// with metadata too, but the store never changes metadata.
func (o *objectResource) modTime() time.Time {
	if !o.Updated.IsZero() {
		return o.Updated
	}
	return o.TimeCreated
}

// objectFields asks the JSON API for only what objectResource holds.
const objectFields = "name,size,crc32c,updated,timeCreated"

// uploadFields is what an upload asks of the object it created: also its
// generation and retention, to check that a lock asked for was set.
const uploadFields = objectFields + ",generation,retention"

// Stat reads the object's metadata.
func (s *Store) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	name, err := providers.CheckStat(ctx, s, key, s.checkedName)
	if err != nil {
		return providers.ObjectInfo{}, err
	}
	what := fmt.Sprintf("stat %q in %s", key, s)
	resp, err := s.send(ctx, http.MethodGet, s.objectURL(name, url.Values{"fields": {objectFields}}), nil, http.StatusOK)
	if err != nil {
		return providers.ObjectInfo{}, s.fail(what, err, providers.ErrNotExist)
	}
	var obj objectResource
	if err := decodeJSON(resp, &obj); err != nil {
		return providers.ObjectInfo{}, s.fail(what, err, providers.ErrNotExist)
	}
	return providers.ObjectInfo{Key: key, Size: obj.Size, ModTime: obj.modTime()}, nil
}

// listPageSize is how many objects a page of a listing holds, GCS's
// largest page.
const listPageSize = 1000

// List pages through the objects whose names start with the prefix
// (GCS returns them in lexicographic order) and holds one page at a time.
// Names that are no valid keys, like the "folder/" placeholders the Cloud
// Console creates, are not objects of this store and are skipped.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		what := fmt.Sprintf("list %q in %s", prefix, s)
		q := url.Values{
			"prefix":     {s.namePrefix + prefix},
			"maxResults": {strconv.Itoa(listPageSize)},
			"fields":     {"nextPageToken,items(" + objectFields + ")"},
		}
		for {
			if err := ctx.Err(); err != nil {
				yield(providers.ObjectInfo{}, fmt.Errorf("%s: %w", what, err))
				return
			}
			var page struct {
				Items         []objectResource `json:"items"`
				NextPageToken string           `json:"nextPageToken"`
			}
			resp, err := s.send(ctx, http.MethodGet, s.bucketURL(q), nil, http.StatusOK)
			if err == nil {
				err = decodeJSON(resp, &page)
			}
			if err != nil {
				if cerr := ctx.Err(); cerr != nil {
					err = cerr
				}
				yield(providers.ObjectInfo{}, s.fail(what, err, providers.ErrNoBucket))
				return
			}
			for _, obj := range page.Items {
				key, ok := strings.CutPrefix(obj.Name, s.namePrefix)
				if !ok || providers.ValidateKey(key) != nil {
					continue
				}
				if !yield(providers.ObjectInfo{Key: key, Size: obj.Size, ModTime: obj.modTime()}, nil) {
					return
				}
			}
			if page.NextPageToken == "" {
				return
			}
			if page.NextPageToken == q.Get("pageToken") {
				yield(providers.ObjectInfo{}, fmt.Errorf("%s: the server returned the same page token twice", what))
				return
			}
			q.Set("pageToken", page.NextPageToken)
		}
	}
}

// Delete removes the object's current generation, named explicitly (read
// with one request before): in a bucket with versioning a plain delete
// would keep the object as a noncurrent version, even a retained one. A
// refusal (403) of an object under retention or a hold is a
// *providers.LockedError with the date that request read; GCS answers 404
// for a missing object.
func (s *Store) Delete(ctx context.Context, key string) error {
	name, err := providers.CheckDelete(ctx, s, key, s.checkedName)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("delete %q from %s", key, s)
	st, err := s.lockState(ctx, name, what)
	if err != nil {
		return err
	}
	q := url.Values{"generation": {strconv.FormatInt(st.Generation, 10)}}
	resp, err := s.send(ctx, http.MethodDelete, s.objectURL(name, q), nil, http.StatusNoContent, http.StatusOK)
	if err != nil {
		var apiErr *apiError
		if errors.As(err, &apiErr) && apiErr.code == http.StatusForbidden {
			if le := lockedError(key, st); le != nil {
				return fmt.Errorf("%s: %w", what, le)
			}
		}
		return s.fail(what, err, providers.ErrNotExist)
	}
	discard(resp)
	return nil
}
