package azblob

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/pgstow/pgstow/manifest"
	"github.com/pgstow/pgstow/providers"
)

// Limits of the Blob service (API version 2019-12-12 and later) and our
// defaults.
const (
	mib = 1 << 20
	// DefaultBlockSize is the block size, and the default multipart
	// threshold, when Config leaves them zero: large enough that a
	// request's overhead is small, small enough that four blocks in
	// flight per upload stay within a modest memory budget.
	DefaultBlockSize = 16 * mib
	// MaxBlockCount is the service's limit of committed blocks per blob.
	MaxBlockCount = 50_000
	// maxBlockBytes is the service's limit for one Put Block.
	maxBlockBytes = 4000 * mib
)

// Config says which container and prefix a Store uses and how it
// uploads. Only Container is required.
type Config struct {
	// Container is the blob container; it must exist.
	Container string
	// Prefix is prepended, with a slash, to every key: "" or a
	// slash-separated path without empty, "." or ".." elements.
	Prefix string
	// BlockSize is the size of the staged blocks of a large upload,
	// rounded up to a whole MiB (default DefaultBlockSize, at most
	// 4000 MiB). An object too large for MaxBlocks blocks of this size
	// gets larger blocks.
	BlockSize int64
	// MaxBlocks caps the number of blocks per object (default and at
	// most MaxBlockCount).
	MaxBlocks int
	// MultipartThreshold is the largest object sent in one Put Blob
	// request; larger ones are staged in blocks. Default and maximum:
	// the block size, since the single request is read into one block
	// buffer.
	MultipartThreshold int64
	// ConnectionString, when set, names the account and its credentials
	// (tests use it). When empty they come from the environment: see
	// Open.
	ConnectionString string
}

// withDefaults validates cfg and fills in the defaults.
func (cfg Config) withDefaults() (Config, error) {
	if err := validateContainer(cfg.Container); err != nil {
		return cfg, err
	}
	cfg.Prefix = strings.TrimSuffix(cfg.Prefix, "/")
	if cfg.Prefix != "" {
		if err := providers.ValidateKey(cfg.Prefix); err != nil {
			return cfg, fmt.Errorf("prefix %q: must be a slash-separated path without empty, '.' or '..' elements", cfg.Prefix)
		}
	}
	switch {
	case cfg.BlockSize == 0:
		cfg.BlockSize = DefaultBlockSize
	case cfg.BlockSize < 0:
		return cfg, fmt.Errorf("block size %d: must be positive", cfg.BlockSize)
	case cfg.BlockSize > maxBlockBytes:
		return cfg, fmt.Errorf("block size %d: Azure allows at most %d (4000 MiB)", cfg.BlockSize, maxBlockBytes)
	}
	cfg.BlockSize = roundUp(cfg.BlockSize, mib)
	switch {
	case cfg.MaxBlocks == 0:
		cfg.MaxBlocks = MaxBlockCount
	case cfg.MaxBlocks < 1 || cfg.MaxBlocks > MaxBlockCount:
		return cfg, fmt.Errorf("max blocks %d: must be between 1 and %d", cfg.MaxBlocks, MaxBlockCount)
	}
	switch {
	case cfg.MultipartThreshold == 0:
		cfg.MultipartThreshold = cfg.BlockSize
	case cfg.MultipartThreshold < 0:
		return cfg, fmt.Errorf("multipart threshold %d: must be positive", cfg.MultipartThreshold)
	case cfg.MultipartThreshold > cfg.BlockSize:
		return cfg, fmt.Errorf("multipart threshold %d: must not exceed the block size %d, since a single-request upload is read into one block buffer", cfg.MultipartThreshold, cfg.BlockSize)
	}
	return cfg, nil
}

// validateContainer applies Azure's container naming rules, so that a
// typo fails with an explanation instead of a 400 from the service.
func validateContainer(name string) error {
	if name == "" {
		return fmt.Errorf("no container given: use azblob://container/prefix")
	}
	if name == "$root" || name == "$web" {
		return nil
	}
	ok := len(name) >= 3 && len(name) <= 63 && name[0] != '-' && name[len(name)-1] != '-' && !strings.Contains(name, "--")
	for _, c := range name {
		ok = ok && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-')
	}
	if !ok {
		return fmt.Errorf("container name %q: must be 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit", name)
	}
	return nil
}

// queryParams are the repository URL's options, in the order the error
// message lists them.
var queryParams = []string{"block_size", "max_blocks", "multipart_threshold"}

// urlExample is quoted in URL errors.
const urlExample = "azblob://container/prefix?block_size=16MiB"

// ParseURL checks an azblob:// URL without contacting anything and
// returns the Config it names, for callers that want a bad URL told apart
// from a store that cannot be reached (Open does the rest).
func ParseURL(u *url.URL) (Config, error) { return configFromURL(u) }

// configFromURL parses azblob://container/prefix?block_size=…&max_blocks=…&multipart_threshold=….
// Anything else in the URL is refused, since each form suggests the user
// meant something this store would silently not do.
func configFromURL(u *url.URL) (Config, error) {
	if u == nil {
		return Config{}, fmt.Errorf("open azblob store: no URL")
	}
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("repository URL %q: %s", providers.RedactURL(u), fmt.Sprintf(format, args...))
	}
	if u.Scheme != "azblob" {
		return bad("scheme %q is not azblob", u.Scheme)
	}
	if u.Opaque != "" {
		return bad("use the form %s", urlExample)
	}
	if u.User != nil {
		return bad("user information is not supported: the account and its credentials come from AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN or an Azure identity")
	}
	if u.Fragment != "" {
		return bad("fragments are not supported")
	}
	if u.Port() != "" {
		return bad("a port is not supported; the host is the container name (set AZURE_STORAGE_ENDPOINT for another endpoint)")
	}
	cfg := Config{Container: u.Hostname()}
	if err := validateContainer(cfg.Container); err != nil {
		return bad("%v", err)
	}
	prefix := strings.TrimPrefix(u.Path, "/")
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		if err := providers.ValidateKey(prefix); err != nil {
			return bad("prefix %q: must be a slash-separated path without empty, '.' or '..' elements", prefix)
		}
	}
	cfg.Prefix = prefix

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	err = providers.EachURLParam(q, queryParams, "query parameter", func(name, v string) error {
		var err error
		switch name {
		case "block_size":
			cfg.BlockSize, err = manifest.ParseSize(v)
		case "multipart_threshold":
			cfg.MultipartThreshold, err = manifest.ParseSize(v)
		case "max_blocks":
			var n int
			n, err = strconv.Atoi(v)
			if err == nil && (n < 1 || n > MaxBlockCount) {
				err = fmt.Errorf("must be between 1 and %d", MaxBlockCount)
			}
			cfg.MaxBlocks = n
		}
		if err != nil {
			return fmt.Errorf("%s=%q: %v", name, v, err)
		}
		return nil
	})
	if err != nil {
		return bad("%v", err)
	}
	if _, err := cfg.withDefaults(); err != nil {
		return bad("%v", err)
	}
	return cfg, nil
}

func roundUp(n, multiple int64) int64 { return (n + multiple - 1) / multiple * multiple }

// blockSizeFor adapts the block size to the block-count limit
// (providers.PartSize) and refuses objects Azure cannot hold.
func blockSizeFor(size, configured int64, maxBlocks int) (int64, error) {
	bs := roundUp(providers.PartSize(size, configured, maxBlocks), mib)
	if bs > maxBlockBytes {
		return 0, fmt.Errorf("object of %d bytes is too large: it would need blocks of %d bytes to stay within %d blocks, and Azure allows at most %d per block", size, bs, maxBlocks, maxBlockBytes)
	}
	return bs, nil
}
