package testserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// LocalKMS is a running local-kms, an emulator of the AWS KMS API that
// encrypts for real under keys it makes and keeps in its data directory.
// It accepts any credentials and does not check signatures.
type LocalKMS struct {
	// Endpoint is the server's base URL, e.g. http://127.0.0.1:4599.
	Endpoint string
	// Region is the region its key ARNs name.
	Region string
}

// StartLocalKMS starts local-kms from .cache/bin on a free port with a
// fresh data directory, and stops it when the test ends.
//
// local-kms takes only a port (PORT); upstream listens on every
// interface, so scripts/deps/local-kms.sh builds it to listen on
// 127.0.0.1 only.
func StartLocalKMS(t testing.TB) *LocalKMS {
	t.Helper()
	bin := Binary(t, "bin/local-kms")
	const region = "eu-west-2"
	dir := t.TempDir()
	var endpoint string
	startOnFreePort(t, func(port int) (*Process, error) {
		endpoint = "http://" + Addr(port)
		p := Start(t, "local-kms", []string{
			fmt.Sprintf("PORT=%d", port),
			"KMS_REGION=" + region,
			"KMS_DATA_PATH=" + dir + "/data",
			"KMS_SEED_PATH=" + dir + "/no-seed.yaml",
		}, bin)
		// It answers GET / with 405 once it listens.
		return p, p.waitUp(endpoint+"/", 30*time.Second, listening)
	})
	return &LocalKMS{Endpoint: endpoint, Region: region}
}

// CreateKey makes a symmetric encryption key and returns its id.
func (k *LocalKMS) CreateKey(t testing.TB) string {
	t.Helper()
	var out struct {
		KeyMetadata struct {
			KeyID string `json:"KeyId"`
		} `json:"KeyMetadata"`
	}
	k.call(t, "CreateKey", map[string]string{"Description": "pgstow test"}, &out)
	if out.KeyMetadata.KeyID == "" {
		t.Fatal("testserver: local-kms CreateKey returned no key id")
	}
	return out.KeyMetadata.KeyID
}

// CreateAlias names keyID alias/<name>.
func (k *LocalKMS) CreateAlias(t testing.TB, name, keyID string) {
	t.Helper()
	k.call(t, "CreateAlias", map[string]string{"AliasName": "alias/" + name, "TargetKeyId": keyID}, nil)
}

// UpdateAlias moves alias/<name> to keyID, as `aws kms update-alias`
// does when an operator rotates by alias.
func (k *LocalKMS) UpdateAlias(t testing.TB, name, keyID string) {
	t.Helper()
	k.call(t, "UpdateAlias", map[string]string{"AliasName": "alias/" + name, "TargetKeyId": keyID}, nil)
}

// DisableKey disables a key: KMS then refuses to encrypt or decrypt
// with it, as for a key an operator revoked.
func (k *LocalKMS) DisableKey(t testing.TB, keyID string) {
	t.Helper()
	k.call(t, "DisableKey", map[string]string{"KeyId": keyID}, nil)
}

// call sends one KMS JSON request directly, so that the tests' own setup
// does not go through the code under test.
func (k *LocalKMS) call(t testing.TB, op string, in, out any) {
	t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.Endpoint+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService."+op)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("testserver: local-kms %s: %v", op, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("testserver: local-kms %s: %s: %s", op, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("testserver: local-kms %s: %v in %s", op, err, data)
		}
	}
}
