package kms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"
)

// gcpStandIn speaks the Cloud KMS v1 REST API's cryptoKeys.encrypt and
// decrypt as documented (https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/encrypt):
// POST /v1/{name}:encrypt with base64 plaintext and
// additionalAuthenticatedData, answering {name, ciphertext}; decrypt the
// reverse; errors as {"error": {code, message, status}}. Google has no
// local KMS emulator, so this stands in for one; it encrypts for real
// (AES-GCM, one key per crypto key), so a wrong key or AAD fails.
type gcpStandIn struct {
	mu       sync.Mutex
	keys     map[string]cipher.AEAD
	disabled map[string]bool
	token    string
}

func newGCPStandIn(t *testing.T, names ...string) (*gcpStandIn, *httptest.Server) {
	s := &gcpStandIn{keys: map[string]cipher.AEAD{}, disabled: map[string]bool{}, token: "gcp-test-token"}
	for _, n := range names {
		secret := make([]byte, 32)
		rand.Read(secret)
		block, _ := aes.NewCipher(secret)
		s.keys[n], _ = cipher.NewGCM(block)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

func (s *gcpStandIn) fail(w http.ResponseWriter, code int, status, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg, "status": status}})
}

func (s *gcpStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path == "/token" {
		// Google's OAuth token endpoint, for an authorized_user
		// credentials file's refresh token.
		if r.PostFormValue("grant_type") != "refresh_token" || r.PostFormValue("refresh_token") != "gcp-test-refresh" {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"invalid_grant"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, s.token)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.token {
		s.fail(w, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
		return
	}
	name, method, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/"), ":")
	aead := s.keys[name]
	if r.Method != http.MethodPost || !ok || aead == nil {
		s.fail(w, 404, "NOT_FOUND", fmt.Sprintf("CryptoKey %s not found.", name))
		return
	}
	if s.disabled[name] {
		s.fail(w, 400, "FAILED_PRECONDITION", name+"/cryptoKeyVersions/1 is not enabled, current state is: DISABLED.")
		return
	}
	var in struct {
		Plaintext, Ciphertext, AdditionalAuthenticatedData []byte
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		s.fail(w, 400, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch method {
	case "encrypt":
		nonce := make([]byte, 12)
		rand.Read(nonce)
		json.NewEncoder(w).Encode(map[string]any{
			"name":            name + "/cryptoKeyVersions/1",
			"ciphertext":      aead.Seal(nonce, nonce, in.Plaintext, in.AdditionalAuthenticatedData),
			"protectionLevel": "SOFTWARE",
		})
	case "decrypt":
		var plain []byte
		var err error
		if len(in.Ciphertext) < 12 {
			err = fmt.Errorf("short")
		} else {
			plain, err = aead.Open(nil, in.Ciphertext[:12], in.Ciphertext[12:], in.AdditionalAuthenticatedData)
		}
		if err != nil {
			s.fail(w, 400, "INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"plaintext": plain, "usedPrimary": true, "protectionLevel": "SOFTWARE"})
	default:
		s.fail(w, 404, "NOT_FOUND", "unknown method "+method)
	}
}

func TestGCPWrapper(t *testing.T) {
	const a, b = "projects/p/locations/europe-west1/keyRings/r/cryptoKeys/a", "projects/p/locations/europe-west1/keyRings/r/cryptoKeys/b"
	s, srv := newGCPStandIn(t, a, b)
	uri := func(name string) string { return "gcpkms://" + name + "?endpoint=" + srv.URL }
	open := func(t *testing.T, u string, token string) Wrapper {
		w, err := Open(t.Context(), u, Options{GCPTokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token})})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	runWrapperSuite(t, harness{
		open:    func(t *testing.T, u string) Wrapper { return open(t, u, s.token) },
		keyA:    uri(a),
		keyB:    uri(b),
		disable: func(t *testing.T, _ string) { s.mu.Lock(); s.disabled[a] = true; s.mu.Unlock() },
	})
	t.Run("bad credentials", func(t *testing.T) {
		_, _, err := open(t, uri(b), "wrong").Wrap(t.Context(), make([]byte, 32))
		if err == nil || !strings.Contains(err.Error(), "UNAUTHENTICATED") {
			t.Fatalf("wrap with a bad token: %v", err)
		}
	})
}

// Application default credentials, the default: a credentials file named
// by GOOGLE_APPLICATION_CREDENTIALS whose token endpoint is the stand-in.
func TestGCPWrapperDefaultCredentials(t *testing.T) {
	const name = "projects/p/locations/l/keyRings/r/cryptoKeys/k"
	_, srv := newGCPStandIn(t, name)
	creds := filepath.Join(t.TempDir(), "adc.json")
	data := fmt.Sprintf(`{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"gcp-test-refresh","token_uri":%q}`, srv.URL+"/token")
	if err := os.WriteFile(creds, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", creds)
	w, err := Open(t.Context(), "gcpkms://"+name+"?endpoint="+srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dk := []byte("0123456789abcdef0123456789abcdef")
	_, ct, err := w.Wrap(t.Context(), dk)
	if err != nil {
		t.Fatal(err)
	}
	got, err := w.Unwrap(t.Context(), ct)
	if err != nil || string(got) != string(dk) {
		t.Fatalf("unwrap: %q, %v", got, err)
	}
}
