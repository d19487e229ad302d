// Package gcs stores a repository in a Google Cloud Storage bucket, below
// an optional prefix, through cloud.google.com/go/storage over the JSON
// API (uploads, listing, metadata) and the XML API (ranged reads).
//
// Credentials are Google application default credentials. With
// STORAGE_EMULATOR_HOST set, or Config.Endpoint, the store talks plain
// HTTP to an emulator such as fake-gcs-server and sends no credentials.
//
// The SDK's retries are off: every call makes one attempt and classifies
// its failure (see errors.go), and the one retry layer above the
// providers decides what to try again.
package gcs

import (
	"context"
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
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/auth/httptransport"
	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/pgstow/pgstow/providers"
)

const (
	// chunkUnitBytes is the granularity of resumable uploads: every chunk
	// but the last must be a multiple of 256 KiB.
	chunkUnitBytes = 256 << 10
	// DefaultChunkSize is the resumable upload chunk size, the SDK's own
	// default.
	DefaultChunkSize = 16 << 20
	// maxChunkBytes bounds ChunkSize and MultipartThreshold, since each
	// upload in flight may hold that much memory (see Config).
	maxChunkBytes = 1 << 30
	// maxObjectBytes is the largest object GCS stores (5 TiB).
	maxObjectBytes = 5 << 40
	// copyBlockBytes is how much Put copies between context checks, and
	// the size of the pooled copy buffers.
	copyBlockBytes = 256 << 10
	// openTimeout bounds the request Open makes to check the bucket and
	// the credentials.
	openTimeout = 15 * time.Second
	// dialTimeout makes an unreachable endpoint fail within seconds
	// rather than after the operating system's TCP timeout.
	dialTimeout = 5 * time.Second
	// googleEndpoint names Google's endpoint in messages.
	googleEndpoint = "https://storage.googleapis.com"
	// emulatorEnv is the variable the SDK and the gcloud tools read to
	// talk to an emulator.
	emulatorEnv = "STORAGE_EMULATOR_HOST"
)

// Config describes a GCS repository.
//
// Memory: a Put holds a pooled 256 KiB copy buffer and, for an object of
// MultipartThreshold bytes or more, the SDK's chunk buffer of ChunkSize
// bytes (the SDK allocates it for each upload). Below the threshold a Put
// with a CRC32C streams its body without a further buffer; one without
// buffers the body (at most MultipartThreshold + 256 KiB) so that the
// SDK can compute the checksum the request carries. So n concurrent Puts
// hold at most n × (max(ChunkSize, MultipartThreshold) + 512 KiB).
type Config struct {
	// Bucket is the bucket's name; it must exist.
	Bucket string
	// Prefix is prepended, with a slash, to every object name; empty
	// stores the repository at the top of the bucket.
	Prefix string
	// ChunkSize is the size of the chunks of a resumable upload: a
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
	client    *storage.Client
	bucket    *storage.BucketHandle
	transport *http.Transport
	cfg       Config
	// namePrefix is cfg.Prefix + "/", or empty.
	namePrefix string
	// endpoint names where requests go, for messages.
	endpoint string
	// buffers holds *[]byte of copyBlockBytes for Put.
	buffers sync.Pool
	// skipLocalCRC32C turns off Put's own check of the CRC32C, so that
	// a test can see the server's.
	skipLocalCRC32C bool
}

var _ providers.Store = (*Store)(nil)

// Open opens the repository and checks, with one request bounded by
// 15 s, that the bucket exists and that the credentials may list it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open gs://%s/%s: %w", cfg.Bucket, strings.Trim(cfg.Prefix, "/"), err)
	}
	s := &Store{cfg: cfg, transport: newTransport()}
	if cfg.Prefix != "" {
		s.namePrefix = cfg.Prefix + "/"
	}
	s.buffers.New = func() any {
		b := make([]byte, copyBlockBytes)
		return &b
	}

	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv(emulatorEnv)
	}
	var opts []option.ClientOption
	if endpoint != "" {
		ep, err := emulatorEndpoint(endpoint)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", s, err)
		}
		s.endpoint = ep
		opts = append(opts, option.WithEndpoint(ep), option.WithHTTPClient(&http.Client{Transport: s.transport}))
	} else {
		s.endpoint = googleEndpoint
		hc, creds, err := googleClient(s.transport)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", s, err)
		}
		// The credentials too, or the SDK would search for them again.
		opts = append(opts, option.WithHTTPClient(hc), option.WithAuthCredentials(creds))
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		s.transport.CloseIdleConnections()
		return nil, fmt.Errorf("open %s: %w", s, err)
	}
	// One attempt per call: the retry layer above all providers retries
	// what classify marks transient, within its own budget. Uploads need
	// more than this policy, see writeRetry.
	client.SetRetry(storage.WithPolicy(storage.RetryNever))
	s.client = client
	s.bucket = client.Bucket(cfg.Bucket)

	if err := s.check(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// newTransport is http.DefaultTransport with a short dial timeout and,
// like the SDK's own, more idle connections per host, since Puts run in
// parallel against one host.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.MaxIdleConnsPerHost = 100
	return t
}

// googleClient finds the application default credentials and returns an
// HTTP client that authorises its requests with them over base. The SDK
// would find them itself, but only with its own transport, which has no
// short dial timeout.
func googleClient(base *http.Transport) (*http.Client, *auth.Credentials, error) {
	creds, err := credentials.DetectDefault(&credentials.DetectOptions{
		Scopes: []string{storage.ScopeReadWrite},
		Client: &http.Client{Transport: base},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: no Google application default credentials found (set GOOGLE_APPLICATION_CREDENTIALS to a key file, run gcloud auth application-default login, or run on Google Cloud; for an emulator set %s): %w",
			providers.ErrAccessDenied, emulatorEnv, err)
	}
	hc, err := httptransport.NewClient(&httptransport.Options{
		BaseRoundTripper: base,
		Credentials:      creds,
	})
	return hc, creds, err
}

// emulatorEndpoint turns host:port or a URL into the JSON API endpoint
// the SDK wants ("http://host:port/storage/v1/"), as the SDK does for
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
	return u.String(), nil
}

// check lists at most one object below the prefix: the cheapest request
// that proves the bucket exists and that the credentials may read it.
// Unlike fetching the bucket's metadata, it needs only the object
// permissions a backup account has anyway.
func (s *Store) check(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, openTimeout)
	defer cancel()
	it := s.bucket.Objects(ctx, &storage.Query{Prefix: s.namePrefix})
	it.PageInfo().MaxSize = 1
	_, err := it.Next()
	if err == nil || errors.Is(err, iterator.Done) {
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
		size, err := providers.ParseSize(values[0])
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

// Close releases the client and its idle connections.
func (s *Store) Close() error {
	var err error
	if s.client != nil {
		err = s.client.Close()
	}
	s.transport.CloseIdleConnections()
	return err
}

// objectName maps a key to its object name below the prefix.
func (s *Store) objectName(key string) string { return s.namePrefix + key }

// writeRetry makes uploads single attempts. RetryNever alone is not
// enough for them: it leaves the SDK's retry configuration of the upload
// unset, and the chunk uploads of a resumable upload then retry with the
// API library's default rules for up to 32 s. An error function that never
// retries reaches those too.
var writeRetry = []storage.RetryOption{
	storage.WithPolicy(storage.RetryAlways),
	storage.WithErrorFunc(func(error) bool { return false }),
	storage.WithMaxAttempts(1),
}

// chunkSizeFor returns the Writer's ChunkSize for an object of size bytes.
// From the threshold on, uploads are resumable in chunks of ChunkSize; GCS
// has no limit on their number, only the 5 TiB limit on the object, so
// the chunk size need not grow with the object. Below the threshold the
// object goes in one request: with a CRC32C of the caller's, streamed
// (ChunkSize 0) with the checksum in the request's metadata; without one,
// buffered whole (a ChunkSize larger than the object), so that the SDK
// can put the CRC32C it computes into the metadata. Either way GCS checks
// the checksum before it creates the object; streamed without a checksum
// the SDK would compare the CRC32C only after the object was written.
func chunkSizeFor(size, threshold int64, chunkSize int, hasCRC32C bool) int {
	switch {
	case size >= threshold:
		return chunkSize
	case hasCRC32C:
		return 0
	default:
		return int((size/chunkUnitBytes + 1) * chunkUnitBytes)
	}
}

// Put uploads body with a storage.Writer. The object appears only when the
// Writer is closed, and Put closes it only once it has copied exactly size
// bytes and found their CRC32C right; on any failure it aborts the Writer
// instead, so that its last request never completes and no object is
// created. IfAbsent is GCS's ifGenerationMatch=0, checked atomically when
// the object is created (412 → ErrExist).
//
// A resumable upload sends its chunks one after another: the protocol
// has each chunk continue where the last one ended, so parts of one
// object cannot be sent in parallel (only GCS's XML multipart API, which
// fake-gcs-server lacks, could). Parallelism comes from the callers'
// concurrent Puts. An aborted resumable upload leaves an open session
// without an object, which GCS discards after a week; the SDK does not
// expose the session to cancel it earlier.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, opts providers.PutOptions) error {
	if err := providers.ValidateKey(key); err != nil {
		return fmt.Errorf("put into %s: %w", s, err)
	}
	what := fmt.Sprintf("put %q into %s", key, s)
	if size < 0 || size > maxObjectBytes {
		return fmt.Errorf("%s: size %d out of range (0 to 5 TiB)", what, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	obj := s.bucket.Object(s.objectName(key)).Retryer(writeRetry...)
	if opts.IfAbsent {
		obj = obj.If(storage.Conditions{DoesNotExist: true})
	}
	w := obj.NewWriter(wctx)
	w.ContentType = "application/octet-stream"
	w.ChunkSize = chunkSizeFor(size, s.cfg.MultipartThreshold, s.cfg.ChunkSize, opts.HasCRC32C)
	if opts.HasCRC32C {
		w.CRC32C, w.SendCRC32C = opts.CRC32C, true
	}

	crc, err := s.copyBody(ctx, what, w, body, size)
	if err == nil && opts.HasCRC32C && crc != opts.CRC32C && !s.skipLocalCRC32C {
		err = fmt.Errorf("%s: body has CRC32C %08x, expected %08x: %w", what, crc, opts.CRC32C, providers.ErrChecksum)
	}
	if err != nil {
		// Failing the Writer's pipe first makes the upload's last
		// request fail on reading its body, whatever the order in
		// which the cancellation reaches it; Close then waits for the
		// upload goroutine to end.
		//lint:ignore SA1019 cancelling the context alone races with Close, see above.
		_ = w.CloseWithError(err)
		cancel()
		_ = w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("%s: %w", what, cerr)
			}
		}
		return s.fail(what, err, providers.ErrNoBucket)
	}
	return nil
}

// copyBody copies exactly size bytes from body to w in blocks, checking
// ctx between blocks, and returns their CRC32C. A body that ends early or
// goes on past size is an error.
func (s *Store) copyBody(ctx context.Context, what string, w io.Writer, body io.Reader, size int64) (uint32, error) {
	bufp := s.buffers.Get().(*[]byte)
	defer s.buffers.Put(bufp)
	buf := *bufp
	var crc uint32
	var done int64
	for done < size {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		n, err := io.ReadFull(body, buf[:min(int64(len(buf)), size-done)])
		crc = crc32.Update(crc, crcTable, buf[:n])
		done += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("%s: body ended after %d of %d bytes: %w", what, done, size, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return 0, fmt.Errorf("%s: read body: %w", what, err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return 0, fmt.Errorf("%s: %w", what, cerr)
			}
			return 0, s.fail(what, err, providers.ErrNoBucket)
		}
	}
	var extra [1]byte
	switch _, err := io.ReadFull(body, extra[:]); {
	case err == nil:
		return 0, fmt.Errorf("%s: body is longer than the given size %d", what, size)
	case !errors.Is(err, io.EOF):
		return 0, fmt.Errorf("%s: read body: %w", what, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return crc, nil
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Get reads a range with one ranged GET (the XML API). GCS answers a range
// that starts at or past the end with 416, which is an empty read here.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := providers.ValidateKey(key); err != nil {
		return nil, fmt.Errorf("get from %s: %w", s, err)
	}
	what := fmt.Sprintf("get %q from %s", key, s)
	if offset < 0 {
		return nil, fmt.Errorf("%s: negative offset %d", what, offset)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	if length < 0 {
		length = -1
	}
	r, err := s.bucket.Object(s.objectName(key)).NewRangeReader(ctx, offset, length)
	if err != nil {
		if isRangeNotSatisfiable(err) {
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, s.fail(what, err, providers.ErrNotExist)
	}
	return &reader{r: r, s: s, what: what}, nil
}

// reader classifies the errors of a download, which can fail after Get
// returned: a connection reset mid-body, or a CRC32C mismatch that the SDK
// finds at the end of a whole-object read.
//
// The SDK's reader reopens the download once where a read fails, asking
// for the remaining bytes of the same generation; that resumption cannot
// be turned off, and the reopening request itself is not retried.
type reader struct {
	r    *storage.Reader
	s    *Store
	what string
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = r.s.fail(r.what+": read", err, providers.ErrNotExist)
	}
	return n, err
}

func (r *reader) Close() error { return r.r.Close() }

// Stat reads the object's metadata.
func (s *Store) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	if err := providers.ValidateKey(key); err != nil {
		return providers.ObjectInfo{}, fmt.Errorf("stat in %s: %w", s, err)
	}
	what := fmt.Sprintf("stat %q in %s", key, s)
	if err := ctx.Err(); err != nil {
		return providers.ObjectInfo{}, fmt.Errorf("%s: %w", what, err)
	}
	attrs, err := s.bucket.Object(s.objectName(key)).Attrs(ctx)
	if err != nil {
		return providers.ObjectInfo{}, s.fail(what, err, providers.ErrNotExist)
	}
	return providers.ObjectInfo{Key: key, Size: attrs.Size, ModTime: modTime(attrs)}, nil
}

// modTime is when the object's generation was written. Updated changes
// with metadata too, but the store never changes metadata.
func modTime(attrs *storage.ObjectAttrs) time.Time {
	if !attrs.Updated.IsZero() {
		return attrs.Updated
	}
	return attrs.Created
}

// List pages through the objects whose names start with the prefix
// (GCS returns them in lexicographic order, 1,000 a page) and holds one
// page at a time. Names that are no valid keys, like the "folder/"
// placeholders the Cloud Console creates, are not objects of this store
// and are skipped.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		what := fmt.Sprintf("list %q in %s", prefix, s)
		if err := ctx.Err(); err != nil {
			yield(providers.ObjectInfo{}, fmt.Errorf("%s: %w", what, err))
			return
		}
		q := &storage.Query{Prefix: s.namePrefix + prefix}
		if err := q.SetAttrSelection([]string{"Name", "Size", "Created", "Updated"}); err != nil {
			yield(providers.ObjectInfo{}, fmt.Errorf("%s: %w", what, err))
			return
		}
		it := s.bucket.Objects(ctx, q)
		for {
			attrs, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return
			}
			if err != nil {
				if cerr := ctx.Err(); cerr != nil {
					err = cerr
				}
				yield(providers.ObjectInfo{}, s.fail(what, err, providers.ErrNoBucket))
				return
			}
			key, ok := strings.CutPrefix(attrs.Name, s.namePrefix)
			if !ok || providers.ValidateKey(key) != nil {
				continue
			}
			if !yield(providers.ObjectInfo{Key: key, Size: attrs.Size, ModTime: modTime(attrs)}, nil) {
				return
			}
		}
	}
}

// Delete removes the object; GCS answers 404 for a missing one.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := providers.ValidateKey(key); err != nil {
		return fmt.Errorf("delete from %s: %w", s, err)
	}
	what := fmt.Sprintf("delete %q from %s", key, s)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := s.bucket.Object(s.objectName(key)).Delete(ctx); err != nil {
		return s.fail(what, err, providers.ErrNotExist)
	}
	return nil
}
