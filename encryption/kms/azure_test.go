package kms

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// azureStandIn speaks Key Vault's keys REST API wrapkey/unwrapkey as
// documented (https://learn.microsoft.com/rest/api/keyvault/keys/wrap-key/wrap-key):
// POST /keys/{name}[/{version}]/wrapkey?api-version=7.4 with
// {"alg": "RSA-OAEP-256", "value": base64url}, answering {kid, value};
// errors as {"error": {code, message}}. Azure has no Key Vault emulator;
// this one wraps for real with RSA-OAEP-256 under an RSA key per version.
type azureStandIn struct {
	mu       sync.Mutex
	versions map[string][]string // key name → versions, newest last
	rsa      map[string]*rsa.PrivateKey
	disabled map[string]bool // by name/version
	host     string
}

func newAzureStandIn(t *testing.T, names ...string) (*azureStandIn, *httptest.Server) {
	s := &azureStandIn{versions: map[string][]string{}, rsa: map[string]*rsa.PrivateKey{}, disabled: map[string]bool{}}
	for _, n := range names {
		s.newVersion(t, n)
	}
	srv := httptest.NewTLSServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

// newVersion rotates key name in the vault, as Key Vault's rotation does.
func (s *azureStandIn) newVersion(t *testing.T, name string) string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := fmt.Sprintf("%032x", len(s.rsa)+1)
	s.versions[name] = append(s.versions[name], v)
	s.rsa[name+"/"+v] = k
	return v
}

func (s *azureStandIn) fail(w http.ResponseWriter, code int, kvCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": kvCode, "message": msg}})
}

func (s *azureStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer kv-test-token" {
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/tenant", resource="https://vault.azure.net"`)
		s.fail(w, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		s.fail(w, 400, "BadParameter", "The api-version query parameter is required.")
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/keys/"), "/")
	if r.Method != http.MethodPost || len(parts) < 2 || len(parts) > 3 {
		s.fail(w, 404, "NotFound", "no such operation")
		return
	}
	name, op := parts[0], parts[len(parts)-1]
	var version string
	if len(parts) == 3 {
		version = parts[1]
	} else if vs := s.versions[name]; len(vs) > 0 {
		version = vs[len(vs)-1]
	}
	key := s.rsa[name+"/"+version]
	if key == nil {
		s.fail(w, 404, "KeyNotFound", fmt.Sprintf("A key with (name/id) %s (version %s) was not found in this key vault.", name, version))
		return
	}
	if s.disabled[name+"/"+version] {
		s.fail(w, 403, "Forbidden", "Operation "+op+" is not allowed on a disabled key.")
		return
	}
	var in struct{ Alg, Value string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Alg != "RSA-OAEP-256" {
		s.fail(w, 400, "BadParameter", fmt.Sprintf("Invalid request: alg %q", in.Alg))
		return
	}
	value, err := base64.RawURLEncoding.DecodeString(in.Value)
	if err != nil {
		s.fail(w, 400, "BadParameter", "Property value has invalid value")
		return
	}
	var out []byte
	switch op {
	case "wrapkey":
		out, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, value, nil)
	case "unwrapkey":
		out, err = rsa.DecryptOAEP(sha256.New(), nil, key, value, nil)
	default:
		s.fail(w, 404, "NotFound", "no such operation "+op)
		return
	}
	if err != nil {
		s.fail(w, 400, "BadParameter", "Error decrypting the value: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"kid": "https://" + s.host + "/keys/" + name + "/" + version, "value": base64.RawURLEncoding.EncodeToString(out)})
}

// staticCredential is an azcore.TokenCredential with a fixed token, which
// it hands out only for Key Vault's scope.
type staticCredential struct{ token string }

func (c staticCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(o.Scopes) != 1 || o.Scopes[0] != "https://vault.azure.net/.default" {
		return azcore.AccessToken{}, fmt.Errorf("token for scopes %v: want Key Vault's", o.Scopes)
	}
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestAzureWrapper(t *testing.T) {
	s, srv := newAzureStandIn(t, "a", "b")
	s.host = "pgstow-test.vault.azure.net"
	uri := func(name string) string {
		return "azurekv://pgstow-test.vault.azure.net/keys/" + name + "?endpoint=" + srv.URL
	}
	open := func(t *testing.T, u, token string) Wrapper {
		w, err := Open(t.Context(), u, Options{HTTPClient: srv.Client(), AzureCredential: staticCredential{token}})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	t.Run("a copy names its version and outlives a rotation", func(t *testing.T) {
		dk := make([]byte, 32)
		w := open(t, uri("b"), "kv-test-token")
		got, ct, err := w.Wrap(t.Context(), dk)
		if err != nil {
			t.Fatal(err)
		}
		want := "azurekv://pgstow-test.vault.azure.net/keys/b/" + s.versions["b"][0] + "?endpoint=" + srv.URL
		if got != want {
			t.Fatalf("Wrap URI %s, want %s", got, want)
		}
		s.newVersion(t, "b")
		if _, err := open(t, got, "kv-test-token").Unwrap(t.Context(), ct); err != nil {
			t.Fatalf("unwrap with the version that wrapped, after a rotation: %v", err)
		}
		if _, err := open(t, uri("b"), "kv-test-token").Unwrap(t.Context(), ct); err == nil {
			t.Fatal("unwrap with the newest version succeeded")
		}
	})
	runWrapperSuite(t, harness{
		open:    func(t *testing.T, u string) Wrapper { return open(t, u, "kv-test-token") },
		keyA:    uri("a"),
		keyB:    uri("b"),
		disable: func(t *testing.T, _ string) { s.mu.Lock(); s.disabled["a/"+s.versions["a"][0]] = true; s.mu.Unlock() },
	})
	t.Run("bad credentials", func(t *testing.T) {
		_, _, err := open(t, uri("a"), "wrong").Wrap(t.Context(), make([]byte, 32))
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("wrap with a bad token: %v", err)
		}
	})
}
