// Package azblob stores a repository in an Azure Blob Storage container,
// as block blobs named prefix + "/" + key. Small objects go up in one Put
// Blob request, large ones as blocks staged in parallel and committed
// with one Put Block List, which is what makes them appear atomically and
// only once complete. Every request carries the MD5 of its body, which
// the service checks; the CRC32C the callers give is checked here, since
// Azure has none, before anything is committed. Objects can be locked
// with version-level immutability (lock.go), and Delete removes a blob's
// versions by ID, so that a versioned account keeps nothing of it.
//
// The SDK's retries are off: failures are classified (see classify) for
// the one retry layer above all providers.
package azblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/pgstow/pgstow/providers"
)

const (
	// openTimeout bounds the request Open makes to check the container
	// and the credentials.
	openTimeout = 15 * time.Second
	// listPageSize is the service's largest page of a listing; a List
	// holds one page at a time.
	listPageSize = 5000
)

// Store is a providers.Store in an Azure Blob Storage container. It is
// safe for concurrent use.
type Store struct {
	client    *container.Client
	transport *http.Transport
	container string
	// keyPrefix is the configured prefix with a trailing slash, or "".
	keyPrefix string
	// endpoint is the account's blob service URL, for messages.
	endpoint  string
	blockSize int64
	maxBlocks int
	threshold int64
	// pageSize is the number of objects a List asks for per page; tests
	// lower it to cross page boundaries with fewer objects.
	pageSize int32
	// buffers holds *[]byte of blockSize for bodies that must be read
	// sequentially (see bodyReader).
	buffers sync.Pool
	// lockable is set once the container was seen to support
	// version-level immutability (see checkLockable).
	lockable atomic.Bool
}

var _ providers.Store = (*Store)(nil)

// Open returns a store for cfg.Container after checking, with one listing
// request bounded by 15 seconds, that the container exists and the
// credentials may list it.
//
// The account and credentials come from cfg.ConnectionString or, when it
// is empty, from the environment, in this order:
// AZURE_STORAGE_CONNECTION_STRING; AZURE_STORAGE_ACCOUNT with
// AZURE_STORAGE_KEY (shared key); AZURE_STORAGE_ACCOUNT with
// AZURE_STORAGE_SAS_TOKEN; AZURE_STORAGE_ACCOUNT alone with
// azidentity.DefaultAzureCredential. The service URL is
// https://<account>.blob.core.windows.net/ unless AZURE_STORAGE_ENDPOINT
// names another.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open azblob store: %w", err)
	}
	s := &Store{
		container: cfg.Container,
		blockSize: cfg.BlockSize,
		maxBlocks: cfg.MaxBlocks,
		threshold: cfg.MultipartThreshold,
		pageSize:  listPageSize,
		keyPrefix: providers.KeyPrefix(cfg.Prefix),
	}
	s.buffers.New = func() any {
		b := make([]byte, s.blockSize)
		return &b
	}
	creds, err := resolveCredentials(cfg.ConnectionString, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s, err)
	}
	hc, tr := newHTTPClient()
	s.transport = tr
	s.client, err = newContainerClient(cfg, creds, hc)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s, err)
	}
	s.endpoint = serviceEndpoint(s.client, cfg.Container)
	if err := s.check(ctx, creds); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// check lists at most one object to prove that the container exists and
// that the credentials work, and explains the failure if not.
func (s *Store) check(ctx context.Context, creds credentials) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("open %s: %w", s, err)
	}
	tctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	pager := s.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix:     s.listPrefix(""),
		MaxResults: to.Ptr[int32](1),
	})
	_, err := pager.NextPage(tctx)
	if err == nil {
		return nil
	}
	cerr := classify(ctx, err)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("open %s: %w", s, err)
	case errors.Is(cerr, providers.ErrNoBucket):
		return fmt.Errorf("open %s: container %q does not exist at %s: %w", s, s.container, s.endpoint, cerr)
	case errors.Is(cerr, providers.ErrAccessDenied):
		return fmt.Errorf("open %s: at %s with %s: %w", s, s.endpoint, creds.source, cerr)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("open %s: no answer from %s within %s: %w", s, s.endpoint, openTimeout, providers.MarkTransient(err))
	case isNetworkFailure(cerr):
		return fmt.Errorf("open %s: cannot reach endpoint %s: %w", s, s.endpoint, cerr)
	}
	return fmt.Errorf("open %s: checking the container at %s: %w", s, s.endpoint, cerr)
}

// OpenURL opens an azblob://container/prefix URL. Its query may set
// block_size (e.g. 16MiB; KB, MB and GB are read as binary units),
// multipart_threshold and max_blocks (see Config); other parameters are
// refused. The account comes from the environment, as for Open.
func OpenURL(ctx context.Context, u *url.URL) (*Store, error) {
	cfg, err := configFromURL(u)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg)
}

// String names the store as its repository URL, without the account's
// credentials.
func (s *Store) String() string {
	if s.keyPrefix == "" {
		return "azblob://" + s.container
	}
	return "azblob://" + s.container + "/" + strings.TrimSuffix(s.keyPrefix, "/")
}

// Close releases idle connections.
func (s *Store) Close() error {
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	return nil
}

// objectName validates key and returns its blob name.
func (s *Store) objectName(key string) (string, error) {
	return providers.PrefixedKey(s.keyPrefix, key)
}

// listPrefix is the blob name prefix for listing keys with prefix, nil for
// the whole container.
func (s *Store) listPrefix(prefix string) *string {
	if p := s.keyPrefix + prefix; p != "" {
		return &p
	}
	return nil
}

// Get downloads the range with one request. The body is streamed, not
// buffered; a failure while reading it is classified like one of the
// request.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	name, err := providers.CheckGet(ctx, s, key, offset, s.objectName)
	if err != nil {
		return nil, err
	}
	if length == 0 {
		return http.NoBody, nil
	}
	rng := blob.HTTPRange{Offset: offset} // Count 0: to the end
	if length > 0 {
		rng.Count = length
	}
	resp, err := s.client.NewBlobClient(name).DownloadStream(ctx, &blob.DownloadStreamOptions{Range: rng})
	if err != nil {
		// A range starting at or past the end, also of an empty blob,
		// is refused with 416; a missing blob is 404, so this is an
		// existing object with nothing in the range.
		var re *azcore.ResponseError
		if bloberror.HasCode(err, bloberror.InvalidRange) || errors.As(err, &re) && re.StatusCode == http.StatusRequestedRangeNotSatisfiable {
			return http.NoBody, nil
		}
		return nil, fmt.Errorf("get %q from %s: %w", key, s, classify(ctx, err))
	}
	if resp.Body == nil {
		return http.NoBody, nil
	}
	return &downloadBody{ctx: ctx, body: resp.Body, key: key, store: s}, nil
}

// downloadBody classifies the errors of reading a download, so that a
// connection reset mid-object is retried like one before the answer.
type downloadBody struct {
	ctx   context.Context
	body  io.ReadCloser
	key   string
	store *Store
}

func (d *downloadBody) Read(p []byte) (int, error) {
	n, err := d.body.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read %q from %s: %w", d.key, d.store, classify(d.ctx, err))
	}
	return n, err
}

func (d *downloadBody) Close() error { return d.body.Close() }

// Stat reads the blob's properties.
func (s *Store) Stat(ctx context.Context, key string) (providers.ObjectInfo, error) {
	name, err := providers.CheckStat(ctx, s, key, s.objectName)
	if err != nil {
		return providers.ObjectInfo{}, err
	}
	props, err := s.client.NewBlobClient(name).GetProperties(ctx, nil)
	if err != nil {
		return providers.ObjectInfo{}, fmt.Errorf("stat %q in %s: %w", key, s, classify(ctx, err))
	}
	info := providers.ObjectInfo{Key: key}
	if props.ContentLength != nil {
		info.Size = *props.ContentLength
	}
	if props.LastModified != nil {
		info.ModTime = *props.LastModified
	}
	return info, nil
}

// List pages through a flat listing, which the service returns in
// lexicographic order of the names. Blobs with only uncommitted blocks
// (failed or running uploads) are not listed. Names below the prefix that
// are no valid key (written by other tools, e.g. "dir/" markers) are
// skipped.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[providers.ObjectInfo, error] {
	return func(yield func(providers.ObjectInfo, error) bool) {
		pager := s.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
			Prefix:     s.listPrefix(prefix),
			MaxResults: to.Ptr(s.pageSize),
		})
		for pager.More() {
			if err := ctx.Err(); err != nil {
				yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, err))
				return
			}
			page, err := pager.NextPage(ctx)
			if err != nil {
				yield(providers.ObjectInfo{}, fmt.Errorf("list %q in %s: %w", prefix, s, classify(ctx, err)))
				return
			}
			if page.Segment == nil {
				continue
			}
			for _, item := range page.Segment.BlobItems {
				if item == nil || item.Name == nil {
					continue
				}
				key, ok := strings.CutPrefix(*item.Name, s.keyPrefix)
				if !ok || providers.ValidateKey(key) != nil {
					continue
				}
				info := providers.ObjectInfo{Key: key}
				if p := item.Properties; p != nil {
					if p.ContentLength != nil {
						info.Size = *p.ContentLength
					}
					if p.LastModified != nil {
						info.ModTime = *p.LastModified
					}
				}
				if !yield(info, nil) {
					return
				}
			}
		}
	}
}
