package testserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// AzuriteAccount and AzuriteKey are the emulator's well-known development
// account. They are public (Microsoft documents them) and only ever valid
// for an emulator on this machine.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// azuriteBinary is where scripts/deps/azurite.sh installs the blob
// service of Azurite, relative to .cache/.
const azuriteBinary = "azurite/node_modules/.bin/azurite-blob"

// AzureServer is a running Azurite blob service.
type AzureServer struct {
	// ConnectionString addresses the emulator's development account, in
	// the form AZURE_STORAGE_CONNECTION_STRING takes.
	ConnectionString string
	// Endpoint is the blob service URL including the account, without a
	// trailing slash: http://127.0.0.1:P/devstoreaccount1, the form
	// AZURE_STORAGE_ENDPOINT takes.
	Endpoint string
}

// StartAzurite starts Azurite's blob service on a free loopback port,
// keeping everything in memory, and waits until it answers. The process
// ends with the test.
func StartAzurite(t testing.TB) *AzureServer {
	t.Helper()
	bin := Binary(t, azuriteBinary)
	var endpoint string
	startOnFreePort(t, func(port int) (*Process, error) {
		// --skipApiVersionCheck: the Go SDK speaks a newer API version
		// than this Azurite release knows. In memory mode Azurite writes
		// no files (and refuses --location). Without --loose it checks
		// the MD5 of every upload and refuses headers it does not
		// implement, which is what the provider tests want.
		p := Start(t, "azurite", nil, bin,
			"--blobHost", "127.0.0.1",
			"--blobPort", strconv.Itoa(port),
			"--inMemoryPersistence",
			"--disableTelemetry",
			"--silent",
			"--skipApiVersionCheck",
		)
		endpoint = fmt.Sprintf("http://%s/%s", Addr(port), AzuriteAccount)
		// An unsigned request is refused with 403, which proves it listens.
		return p, p.waitUp(endpoint+"?comp=list", 30*time.Second, listening)
	})
	return &AzureServer{
		ConnectionString: fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;",
			AzuriteAccount, AzuriteKey, endpoint),
		Endpoint: endpoint,
	}
}

// NewContainer creates a container with a new random name (lowercase, 23
// characters, within Azure's 3–63) and returns the name. The request is
// signed with the account key by hand, so that this package needs no
// Azure SDK: only the provider packages import one.
func (s *AzureServer) NewContainer(t testing.TB) string {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "pgstow-" + hex.EncodeToString(b[:])
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, s.Endpoint+"/"+name+"?restype=container", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := signSharedKey(req, AzuriteAccount, AzuriteKey); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("testserver: create container %s: %v", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("testserver: create container %s: %s\n%s", name, resp.Status, body)
	}
	return name
}

// signSharedKey signs a request without a body or conditional headers
// with the Shared Key scheme of the Blob service: an HMAC-SHA256, keyed
// with the account key, over the verb, the standard headers (all empty
// here), the x-ms- headers and the account-qualified path with its query
// parameters.
func signSharedKey(req *http.Request, account, key string) error {
	secret, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return fmt.Errorf("account key: %w", err)
	}
	date := time.Now().UTC().Format(http.TimeFormat)
	const version = "2021-12-02"
	req.Header.Set("x-ms-date", date)
	req.Header.Set("x-ms-version", version)
	resource := "/" + account + req.URL.EscapedPath()
	// Only one query parameter in the requests made here; a general
	// signer would sort them by lower-cased name.
	for name, values := range req.URL.Query() {
		resource += "\n" + name + ":" + values[0]
	}
	// VERB, then eleven standard headers (Content-Encoding through
	// Range), then the canonicalized x-ms- headers sorted by name.
	stringToSign := req.Method + "\n\n\n\n\n\n\n\n\n\n\n\n" +
		"x-ms-date:" + date + "\n" +
		"x-ms-version:" + version + "\n" +
		resource
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(stringToSign))
	req.Header.Set("Authorization", "SharedKey "+account+":"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return nil
}
