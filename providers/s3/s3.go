// Package s3 stores a repository in an Amazon S3 bucket or an
// S3-compatible store (MinIO, versitygw, Ceph, …) through aws-sdk-go-v2.
//
// The provider is deliberately thin: it maps the providers.Store calls onto
// single S3 requests (or one multipart upload for a large Put), makes the
// store verify a CRC32C on every upload, and classifies every failure into
// the providers error classes. It never retries: the SDK's retryer is
// replaced by one that gives up at once, so that the single retry layer
// above all providers decides, within one budget, whether and when to try
// again. Credentials and the region come from the SDK's default chain
// (environment, shared profiles, web identity, IMDS) unless a test passes
// static keys.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/logging"

	"github.com/pgstow/pgstow/providers"
)

const (
	// MinPartSize is S3's smallest part size for every part but the last.
	MinPartSize = 5 << 20
	// DefaultPartSize is the part size when Config.PartSize is zero. Parts
	// are buffered in memory when the body cannot be read at random, at
	// most maxConcurrentParts per Put, so this bounds a Put's memory to
	// 64 MiB in that case.
	DefaultPartSize = 16 << 20
	// maxPartSize is S3's largest part (and largest single PUT).
	maxPartSize = 5 << 30
	// DefaultMaxParts is S3's limit on the parts of one upload. Some
	// S3-compatible stores allow only 1,000.
	DefaultMaxParts = 10000
	// maxConcurrentParts bounds the parts of one Put in flight at once.
	maxConcurrentParts = 4
	// openTimeout bounds Open's check of the bucket and credentials.
	openTimeout = 15 * time.Second
	// dialTimeout makes an unreachable endpoint fail within seconds.
	dialTimeout = 5 * time.Second
	// cleanupTimeout bounds aborting a failed multipart upload, which
	// runs even when the caller's context is cancelled.
	cleanupTimeout = 30 * time.Second
)

// Config configures a Store. Only Bucket is required.
type Config struct {
	// Bucket is the bucket's name.
	Bucket string
	// Prefix is prepended with a "/" to every object key; empty for the
	// bucket's root. Leading and trailing slashes are ignored.
	Prefix string
	// Region overrides the SDK's region (AWS_REGION, profile). When no
	// region is found and an endpoint is set, us-east-1 is used.
	Region string
	// Endpoint overrides the S3 endpoint (AWS_ENDPOINT_URL_S3), e.g.
	// http://127.0.0.1:9000 for MinIO.
	Endpoint string
	// PathStyle addresses the bucket as a path (http://host/bucket/key)
	// rather than a host name (http://bucket.host/key), as most
	// S3-compatible stores need.
	PathStyle bool
	// PartSize is the multipart part size in bytes; 0 means
	// DefaultPartSize; at least MinPartSize. Objects too large for
	// MaxParts parts of this size get larger parts.
	PartSize int64
	// MaxParts is the store's limit on parts per upload; 0 means
	// DefaultMaxParts.
	MaxParts int
	// MultipartThreshold is the size from which Put uses a multipart
	// upload; 0 means PartSize. At most 5 GiB, S3's largest single PUT.
	MultipartThreshold int64
	// RequestChecksumWhenRequired turns the SDK's own request checksums
	// and response validation down to operations that require them, for
	// S3-compatible stores that reject the SDK's default (trailing)
	// checksums. The CRC32C that Put is given is still sent.
	RequestChecksumWhenRequired bool
	// AccessKey and SecretKey are static credentials, for tests. Empty
	// means the SDK's default credential chain.
	AccessKey, SecretKey string
	// Log receives the SDK's own log lines, at debug level (nil discards
	// them). Left to itself the SDK writes them to stderr, such as "falling
	// back to IMDSv1" on every run off EC2, which reads as a problem of
	// ours and breaks the one-line error output scripts rely on.
	Log *slog.Logger
}

// withDefaults fills in the zero fields and checks the others.
func (c Config) withDefaults() (Config, error) {
	if c.Bucket == "" {
		return c, errors.New("no bucket given")
	}
	if strings.ContainsAny(c.Bucket, "/:?#") {
		return c, fmt.Errorf("bucket name %q: must not contain '/', ':', '?' or '#'", c.Bucket)
	}
	c.Prefix = strings.Trim(c.Prefix, "/")
	if c.Prefix != "" {
		if err := providers.ValidateKey(c.Prefix); err != nil {
			return c, fmt.Errorf("prefix: %w", err)
		}
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil:
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // url.Error quotes the input, which may hold a password
			}
			return c, fmt.Errorf("endpoint does not parse (%v): want an http:// or https:// URL such as http://127.0.0.1:9000", err)
		case u.User != nil:
			return c, fmt.Errorf("endpoint %q: credentials do not belong in the endpoint; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", providers.RedactURL(u))
		case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			return c, fmt.Errorf("endpoint %q: want an http:// or https:// URL such as http://127.0.0.1:9000", providers.RedactURL(u))
		}
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.PartSize < MinPartSize || c.PartSize > maxPartSize {
		return c, fmt.Errorf("part size %d: must be between 5 MiB and 5 GiB", c.PartSize)
	}
	if c.MaxParts == 0 {
		c.MaxParts = DefaultMaxParts
	}
	if c.MaxParts < 1 || c.MaxParts > DefaultMaxParts {
		return c, fmt.Errorf("max parts %d: must be between 1 and %d", c.MaxParts, DefaultMaxParts)
	}
	if c.MultipartThreshold == 0 {
		c.MultipartThreshold = c.PartSize
	}
	if c.MultipartThreshold < 1 || c.MultipartThreshold > maxPartSize {
		return c, fmt.Errorf("multipart threshold %d: must be between 1 byte and 5 GiB", c.MultipartThreshold)
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return c, errors.New("give both an access key and a secret key, or neither")
	}
	return c, nil
}

// Store is a providers.Store in an S3 bucket. It is safe for concurrent
// use.
type Store struct {
	client *s3.Client
	bucket string
	// prefix is the key prefix including its trailing "/", or "".
	prefix string
	// name is the store's URL for messages (no credentials).
	name string
	// endpoint names where requests go, for messages about reaching it.
	endpoint string

	partSize     int64
	maxParts     int
	threshold    int64
	whenRequired bool

	// buffers holds *[]byte part buffers for bodies that cannot be read
	// at random, reused across Puts; see partBuffer.
	buffers sync.Pool
}

var _ providers.Store = (*Store)(nil)

// Open connects to the bucket and checks, with one listing request of at
// most one key bounded by 15 s, that the bucket exists and that the
// credentials may list it. The error names the cause: a missing bucket
// (providers.ErrNoBucket), refused credentials (providers.ErrAccessDenied)
// or an unreachable endpoint (providers.ErrTransient).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open s3 store: %w", err)
	}
	s := &Store{
		bucket:       cfg.Bucket,
		partSize:     cfg.PartSize,
		maxParts:     cfg.MaxParts,
		threshold:    cfg.MultipartThreshold,
		whenRequired: cfg.RequestChecksumWhenRequired,
		prefix:       providers.KeyPrefix(cfg.Prefix),
	}

	// The SDK's buildable client (a plain http.Client would break
	// AWS_CA_BUNDLE), with a short dial timeout so that an unreachable
	// endpoint fails within seconds rather than the system's TCP
	// timeout. It follows no redirects: S3 answers a request to the
	// wrong region with one whose body says so.
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = dialTimeout }).
		WithTransportOptions(func(tr *http.Transport) { tr.MaxIdleConnsPerHost = 32 })

	loadOpts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		config.WithLogger(sdkLogger(cfg.Log)),
	}
	if cfg.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKey != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	if cfg.RequestChecksumWhenRequired {
		loadOpts = append(loadOpts,
			config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
			config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("open s3 store: load AWS configuration: %w", err)
	}

	var regionErr error
	s.client = s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		o.Retryer = aws.NopRetryer{}
		o.RetryMaxAttempts = 0
		// Ranged reads of multipart objects carry no whole-object
		// checksum to validate; the SDK would log that for every one.
		o.DisableLogOutputChecksumValidationSkipped = true
		if o.Region == "" {
			if o.BaseEndpoint != nil && *o.BaseEndpoint != "" {
				o.Region = "us-east-1"
			} else {
				regionErr = errors.New("no region: set AWS_REGION or ?region= in the repository URL")
			}
		}
	})
	opts := s.client.Options()
	s.name = storeName(cfg.Bucket, cfg.Prefix, opts.BaseEndpoint)
	if regionErr != nil {
		return nil, fmt.Errorf("open %s: %w", s.name, regionErr)
	}
	if opts.BaseEndpoint != nil && *opts.BaseEndpoint != "" {
		s.endpoint = *opts.BaseEndpoint
	} else {
		s.endpoint = fmt.Sprintf("the AWS S3 endpoint of region %s", opts.Region)
	}

	if err := s.check(ctx, awsCfg.Credentials); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// sdkLogger hands the SDK's log lines to log at debug level. Its warnings
// are about its own fallbacks (IMDSv1, skipped checksum validation), not
// failures: a failure comes back as an error, which pgstow reports.
func sdkLogger(log *slog.Logger) logging.Logger {
	if log == nil {
		return logging.Nop{}
	}
	return logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
		log.Debug(fmt.Sprintf(format, v...), "source", "aws-sdk", "classification", string(c))
	})
}

// storeName formats the store as a URL for messages.
func storeName(bucket, prefix string, endpoint *string) string {
	name := "s3://" + bucket
	if prefix != "" {
		name += "/" + prefix
	}
	if endpoint != nil && *endpoint != "" {
		name += "?endpoint=" + *endpoint
	}
	return name
}

// check resolves the credentials and lists at most one key under the
// prefix, which proves that the endpoint answers, the bucket exists and
// the credentials may list it (which pgstow needs anyway). Listing rather
// than HeadBucket keeps it working for credentials limited to the prefix.
func (s *Store) check(ctx context.Context, creds aws.CredentialsProvider) error {
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	if creds != nil {
		if _, err := creds.Retrieve(ctx); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("open %s: no credentials within %s: %w", s, openTimeout, err)
			}
			return fmt.Errorf("open %s: %w: no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an IAM role): %w",
				s, providers.ErrAccessDenied, err)
		}
	}
	_, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket:  aws.String(s.bucket),
		Prefix:  aws.String(s.prefix),
		MaxKeys: aws.Int32(1),
	})
	if err == nil {
		return nil
	}
	// The messages say the cause in words; the SDK's error follows
	// without its class repeated in front.
	err = reword(err)
	cerr := classify(err)
	switch {
	case isRedirect(err):
		msg := "the bucket is in another region"
		if r := bucketRegion(err); r != "" {
			msg += ": set ?region=" + r + " or AWS_REGION=" + r
		}
		return fmt.Errorf("open %s: %s: %w", s, msg, err)
	case errors.Is(cerr, providers.ErrNoBucket):
		return fmt.Errorf("open %s: bucket %q does not exist: %w", s, s.bucket, classed{err, providers.ErrNoBucket})
	case errors.Is(cerr, providers.ErrAccessDenied):
		return fmt.Errorf("open %s: access denied: check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and that they may list bucket %q: %w",
			s, s.bucket, classed{err, providers.ErrAccessDenied})
	case errors.Is(cerr, providers.ErrTransient) && !isAPIError(err):
		return fmt.Errorf("open %s: cannot reach endpoint %s: %w", s, s.endpoint, cerr)
	}
	return fmt.Errorf("open %s: list bucket %q: %w", s, s.bucket, cerr)
}

// OpenURL opens an s3://bucket/prefix URL. Query parameters:
//
//	region=us-west-2        the bucket's region (else AWS_REGION, the profile, or us-east-1 with an endpoint)
//	endpoint=http://host:p  an S3-compatible endpoint (else AWS_ENDPOINT_URL_S3 or AWS)
//	path_style=true         address buckets as paths, as most S3-compatible stores need
//	part_size=16MiB         multipart part size (K/M/G suffixes are binary: 16MB = 16 MiB)
//	max_parts=1000          the store's part-count limit (default 10000)
//	request_checksum=when_required  only the checksums S3 requires (or when_supported, the default)
//
// Unknown parameters are refused rather than ignored.
func OpenURL(ctx context.Context, u *url.URL) (*Store, error) {
	cfg, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg)
}

// String names the store as an s3:// URL, with the endpoint if one is set.
func (s *Store) String() string { return s.name }

// Close does nothing: the SDK's HTTP client offers no way to drop its
// idle connections, which close by themselves after 90 s.
func (s *Store) Close() error { return nil }

// objectName maps a key to its S3 object name, checking the key.
func (s *Store) objectName(key string) (string, error) {
	return providers.PrefixedKey(s.prefix, key)
}

// Get returns a reader of length bytes from offset (to the end when length
// is negative). A zero length needs no request; an offset at or past the
// end, which S3 answers with 416, yields an empty reader.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	name, err := providers.CheckGet(ctx, s, key, offset, s.objectName)
	if err != nil {
		return nil, err
	}
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name)}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		if isInvalidRange(err) {
			// Only an existing object has a range to miss: S3
			// answers 416 for a start at or past the end, and for
			// any range of an empty object.
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, fmt.Errorf("get %q from %s: %w", key, s, classify(err))
	}
	return &getBody{body: out.Body, what: fmt.Sprintf("get %q from %s", key, s)}, nil
}

// getBody classifies read errors of an object's body: a connection reset
// half-way is transient, a failed response checksum is ErrChecksum.
type getBody struct {
	body io.ReadCloser
	what string
}

func (b *getBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s: read: %w", b.what, classifyRead(err))
	}
	return n, err
}

func (b *getBody) Close() error { return b.body.Close() }

// Stat reports the object's size and modification time.
func (s *Store) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	name, err := providers.CheckStat(ctx, s, key, s.objectName)
	if err != nil {
		return providers.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name)})
	if err != nil {
		return providers.ObjectInfo{}, fmt.Errorf("stat %q in %s: %w", key, s, classify(err))
	}
	return providers.ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// List yields the objects under prefix a page (up to 1,000 keys) at a
// time. S3 lists keys in the byte order of their UTF-8 names, which is
// Go's string order. Names under the store's prefix that are no valid key
// (folder markers ending in "/" made by other tools) are skipped.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		if !keyPrefix(prefix) {
			// No valid key starts with it, and some stores refuse
			// such prefixes (MinIO: "list//").
			if err := ctx.Err(); err != nil {
				yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, err))
			}
			return
		}
		in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix + prefix)}
		for {
			if err := ctx.Err(); err != nil {
				yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, err))
				return
			}
			out, err := s.client.ListObjectsV2(ctx, in)
			if err != nil {
				yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, classify(err)))
				return
			}
			for _, obj := range out.Contents {
				key, ok := strings.CutPrefix(aws.ToString(obj.Key), s.prefix)
				if !ok || providers.ValidateKey(key) != nil {
					continue
				}
				info := providers.ObjectInfo{Key: key, Size: aws.ToInt64(obj.Size), ModTime: aws.ToTime(obj.LastModified)}
				if !yield(info, nil) {
					return
				}
			}
			if !aws.ToBool(out.IsTruncated) {
				return
			}
			if aws.ToString(out.NextContinuationToken) == "" {
				yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: the store says the listing goes on but gives no continuation token", prefix, s))
				return
			}
			in.ContinuationToken = out.NextContinuationToken
		}
	}
}

// keyPrefix reports whether some valid key starts with prefix: every
// element but the last (which a key may extend) must be a valid one.
func keyPrefix(prefix string) bool {
	if strings.ContainsRune(prefix, 0) {
		return false
	}
	elems := strings.Split(prefix, "/")
	for _, el := range elems[:len(elems)-1] {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}
