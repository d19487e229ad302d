package azblob

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/pgstow/pgstow/providers"
)

// The environment variables the account and its credentials come from.
const (
	envConnectionString = "AZURE_STORAGE_CONNECTION_STRING"
	envAccount          = "AZURE_STORAGE_ACCOUNT"
	envKey              = "AZURE_STORAGE_KEY"
	envSASToken         = "AZURE_STORAGE_SAS_TOKEN"
	envEndpoint         = "AZURE_STORAGE_ENDPOINT"
)

// credentialHint is appended to access-denied errors.
const credentialHint = "check the credentials (" + envConnectionString + ", or " + envAccount +
	" with " + envKey + ", " + envSASToken + " or an Azure identity) and their permissions on the container"

// credentials is where the account and its credentials come from, in the
// order of precedence resolveCredentials applies.
type credentials struct {
	// source names the setting for messages, never its value.
	source           string
	connectionString string
	account          string
	key              string // shared key
	sasToken         string // without a leading "?"
	identity         bool   // azidentity.DefaultAzureCredential
	serviceURL       string // ends in "/"; empty with a connection string
}

// resolveCredentials picks the credentials: a connection string given in
// Config, then from the environment AZURE_STORAGE_CONNECTION_STRING;
// AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY (shared key); with
// AZURE_STORAGE_SAS_TOKEN; or alone, with DefaultAzureCredential (managed
// identity, workload identity, Azure CLI login, …). The service URL is
// https://<account>.blob.core.windows.net/ unless AZURE_STORAGE_ENDPOINT
// names another (an emulator, a sovereign cloud, a private endpoint).
func resolveCredentials(connectionString string, getenv func(string) string) (credentials, error) {
	if connectionString != "" {
		return credentials{source: "the configured connection string", connectionString: connectionString}, nil
	}
	if cs := getenv(envConnectionString); cs != "" {
		return credentials{source: envConnectionString, connectionString: cs}, nil
	}
	account := getenv(envAccount)
	if account == "" {
		return credentials{}, fmt.Errorf("no Azure credentials: set %s, or %s with %s, %s or an Azure identity: %w",
			envConnectionString, envAccount, envKey, envSASToken, providers.ErrAccessDenied)
	}
	if !validAccount(account) {
		return credentials{}, fmt.Errorf("%s=%q: an account name is 3 to 24 lowercase letters and digits", envAccount, account)
	}
	c := credentials{account: account, serviceURL: "https://" + account + ".blob.core.windows.net/"}
	if ep := getenv(envEndpoint); ep != "" {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.User != nil {
			return credentials{}, fmt.Errorf("%s=%q: want the blob service URL, e.g. https://%s.blob.core.windows.net/", envEndpoint, ep, account)
		}
		c.serviceURL = strings.TrimSuffix(ep, "/") + "/"
	}
	switch key, sas := getenv(envKey), getenv(envSASToken); {
	case key != "":
		c.source, c.key = envAccount+" and "+envKey, key
	case sas != "":
		c.source, c.sasToken = envAccount+" and "+envSASToken, strings.TrimPrefix(sas, "?")
	default:
		c.source, c.identity = envAccount+" with an Azure identity (DefaultAzureCredential)", true
	}
	return c, nil
}

func validAccount(name string) bool {
	if len(name) < 3 || len(name) > 24 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// newHTTPClient returns the client all requests of a Store go through.
// The dial timeout makes an unreachable endpoint fail in seconds rather
// than after the kernel's minutes; the response header timeout bounds a
// server that accepted a request and went silent. Neither bounds a whole
// transfer: a large block may take long on a slow link.
func newHTTPClient() (*http.Client, *http.Transport) {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32, // parallel blocks and Puts reuse connections
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
	}
	return &http.Client{Transport: tr}, tr
}

// newContainerClient builds the SDK client for cfg.Container with the
// given credentials. The SDK's retries are off: one retry layer above all
// providers (providers/retry) decides, within one budget, and replays
// the body; retries here would multiply with it.
func newContainerClient(cfg Config, c credentials, hc *http.Client) (*container.Client, error) {
	opts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Retry:     policy.RetryOptions{MaxRetries: -1},
		Transport: hc,
		Telemetry: policy.TelemetryOptions{ApplicationID: "pgstow"},
	}}
	containerURL := c.serviceURL + url.PathEscape(cfg.Container)
	switch {
	case c.connectionString != "":
		cl, err := container.NewClientFromConnectionString(c.connectionString, cfg.Container, opts)
		if err != nil {
			// The SDK's messages do not quote the string, which may
			// hold a key.
			return nil, fmt.Errorf("%s: %w", c.source, err)
		}
		return cl, nil
	case c.key != "":
		cred, err := container.NewSharedKeyCredential(c.account, c.key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.source, err)
		}
		return container.NewClientWithSharedKeyCredential(containerURL, cred, opts)
	case c.sasToken != "":
		return container.NewClientWithNoCredential(containerURL+"?"+c.sasToken, opts)
	default:
		cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions: azcore.ClientOptions{Transport: hc},
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.source, err)
		}
		return container.NewClient(containerURL, cred, opts)
	}
}

// serviceEndpoint derives the account's blob service URL, for messages,
// from the container client's URL: without the container and without a
// query, which may hold a SAS token.
func serviceEndpoint(cl *container.Client, containerName string) string {
	u := cl.URL()
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	u = strings.TrimSuffix(u, "/")
	return strings.TrimSuffix(u, url.PathEscape(containerName))
}
