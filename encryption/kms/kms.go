// Package kms wraps a repository's data key with a key held in a key
// management service — AWS KMS, Google Cloud KMS or Azure Key Vault — so
// that no key material need sit on the backup host: the host's cloud
// identity unwraps the data key when a command needs it, and revoking that
// identity (or disabling the KMS key) locks the repository. Each provider
// authenticates with its SDK's default credentials. The wrapped copies and
// their use live in package repository (keys.go); this package only
// speaks to the services.
package kms

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"golang.org/x/oauth2"
)

// Wrapper wraps and unwraps a data key with one KMS key. It satisfies
// repository.KeyWrapper.
type Wrapper interface {
	// URI names the wrapping key as it was given.
	URI() string
	// Wrap encrypts dataKey; the URI returned unwraps it (for Azure it
	// names the key version that wrapped it).
	Wrap(ctx context.Context, dataKey []byte) (uri string, wrapped []byte, err error)
	// Unwrap decrypts what Wrap returned.
	Unwrap(ctx context.Context, wrapped []byte) ([]byte, error)
}

// ErrBadURI is returned for a KMS key URI that names no provider or is
// malformed.
var ErrBadURI = errors.New("invalid KMS key URI")

// Options replace the default credentials and transport, for tests and
// for callers that hold credentials of their own. The zero value uses
// each SDK's default chain.
type Options struct {
	// HTTPClient carries the GCP and Azure requests (default
	// http.DefaultClient's transport).
	HTTPClient *http.Client
	// GCPTokenSource replaces Google application default credentials.
	GCPTokenSource oauth2.TokenSource
	// AzureCredential replaces azidentity.DefaultAzureCredential.
	AzureCredential azcore.TokenCredential
}

// Schemes lists the URI schemes Open knows, as messages name them.
const Schemes = "awskms://, gcpkms:// or azurekv://"

// Open returns the Wrapper of a KMS key URI:
//
//	awskms://<key id, key ARN, alias/<name> or alias ARN>[?region=R&endpoint=URL&key=ARN]
//	gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K[?endpoint=URL]
//	azurekv://<vault>.vault.azure.net/keys/<name>[/<version>][?endpoint=URL]
//
// key is the key ARN an alias named when a copy was made, which Wrap
// records: the copy still opens after the alias moves (awsWrapper.Unwrap).
// endpoint replaces the service's address (a local emulator, a private
// endpoint): https, or http to a loopback address only, since the
// request carries a bearer token (GCP, Azure). The repository never takes
// an endpoint from a stored copy (repository.UnwrapDataKey): give it in
// the pinned URI each time. Open makes no request: a wrong or
// unreachable key shows on the first Wrap or Unwrap.
func Open(ctx context.Context, uri string, opts Options) (Wrapper, error) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return nil, fmt.Errorf("%w %q: want %s", ErrBadURI, uri, Schemes)
	}
	path, rawQuery, _ := strings.Cut(rest, "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadURI, uri, err)
	}
	allowed := map[string][]string{"awskms": {"region", "endpoint", "key"}, "gcpkms": {"endpoint"}, "azurekv": {"endpoint"}}[scheme]
	if allowed == nil {
		return nil, fmt.Errorf("%w %q: unknown scheme %q, want %s", ErrBadURI, uri, scheme, Schemes)
	}
	for k := range q {
		if !slices.Contains(allowed, k) {
			return nil, fmt.Errorf("%w %q: unknown parameter %q (%s takes %s)", ErrBadURI, uri, k, scheme, strings.Join(allowed, ", "))
		}
	}
	switch scheme {
	case "awskms":
		return openAWS(ctx, uri, path, q)
	case "gcpkms":
		return openGCP(ctx, uri, path, q, opts)
	default:
		return openAzure(uri, path, q, opts)
	}
}

// checkEndpoint refuses an endpoint that is not an http(s) base URL, and
// plain http but to this host (an emulator): credentials and keys cross
// it.
func checkEndpoint(uri, endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%w %q: endpoint %q is not an http(s) URL", ErrBadURI, uri, endpoint)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return "", fmt.Errorf("%w %q: endpoint %q is plain http to another host: use https", ErrBadURI, uri, endpoint)
	}
	return strings.TrimSuffix(endpoint, "/"), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// dataKeyContext binds a wrap to its purpose where the KMS takes
// additional authenticated data (AWS encryption context, GCP AAD): a
// ciphertext wrapped for something else does not unwrap as a data key.
const dataKeyContext = "pgstow repository data key"

// serviceError is a KMS's refusal: its status and message, on one line.
type serviceError struct {
	service string
	status  int
	code    string
	msg     string
}

func (e *serviceError) Error() string {
	return fmt.Sprintf("%s: %d %s: %s", e.service, e.status, e.code, strings.Join(strings.Fields(e.msg), " "))
}

// readAnswer reads a REST KMS's answer (at most 1 MiB): the body of a
// 200, else a *serviceError from the {"error": {...}} both Google and
// Azure send (Google names the code "status", Azure "code").
func readAnswer(resp *http.Response, service string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		return data, nil
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &e)
	code := cmp.Or(e.Error.Status, e.Error.Code)
	if e.Error.Message == "" {
		e.Error.Message = string(data)
	}
	return nil, &serviceError{service, resp.StatusCode, code, e.Error.Message}
}
