package gcs

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/pgstow/pgstow/providers"
)

// writeKeyFile writes a service-account key whose token endpoint is
// tokenURL and points GOOGLE_APPLICATION_CREDENTIALS at it.
func writeKeyFile(t *testing.T, tokenURL string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	file, err := json.Marshal(map[string]string{
		"type":             "service_account",
		"project_id":       "pgstow-test",
		"private_key_id":   "1",
		"private_key":      string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":     "backup@pgstow-test.iam.gserviceaccount.com",
		"token_uri":        tokenURL,
		"quota_project_id": "quota-from-file",
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(emulatorEnv, "")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
}

// TestTokenEndpointRefuses checks Open with a service-account key whose
// token endpoint refuses it (a revoked key: 400 invalid_grant) or is
// unavailable: the first is denied access, the second transient. Neither
// reaches Google, since no token means no request.
func TestTokenEndpointRefuses(t *testing.T) {
	for _, tc := range []struct {
		status    int
		body      string
		class     error
		transient bool
	}{
		{http.StatusBadRequest, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`, providers.ErrAccessDenied, false},
		{http.StatusServiceUnavailable, `{"error":"unavailable"}`, nil, true},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			var mu sync.Mutex
			var requests []bool
			tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.ParseForm()
				mu.Lock()
				requests = append(requests, r.Form.Get("assertion") != "" && r.Form.Get("grant_type") != "")
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.body)
			}))
			defer tokens.Close()
			writeKeyFile(t, tokens.URL)
			_, err := Open(t.Context(), Config{Bucket: "some-bucket"})
			if err == nil {
				t.Fatal("Open with a refused key succeeded")
			}
			if tc.class != nil && !errors.Is(err, tc.class) {
				t.Errorf("Open = %v, want %v", err, tc.class)
			}
			if errors.Is(err, providers.ErrTransient) != tc.transient {
				t.Errorf("Open = %v, want transient %v", err, tc.transient)
			}
			if tc.class == providers.ErrAccessDenied {
				for _, want := range []string{"check the Google credentials", "Invalid JWT Signature."} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
			}
			if len(requests) != 1 || !requests[0] {
				t.Errorf("the token endpoint got %d requests (a JWT grant: %v), want 1 JWT grant", len(requests), requests)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
		})
	}
}

// TestAuthorization checks that requests to the API's host carry the
// access token and the quota project, and that requests elsewhere (an
// upload session's URL is the server's to choose) do not.
func TestAuthorization(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{}
	record := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[name] = r.Header.Get("Authorization") + "|" + r.Header.Get("X-Goog-User-Project")
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		})
	}
	api := httptest.NewServer(record("api"))
	defer api.Close()
	other := httptest.NewServer(record("other"))
	defer other.Close()

	s := &Store{client: http.DefaultClient, tokens: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "tok", TokenType: "Bearer"}), quotaProject: "quota"}
	var err error
	if s.api, err = url.Parse(api.URL + "/storage/v1/"); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{api.URL + "/storage/v1/b/x/o/k", other.URL + "/session?upload_id=1"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := s.do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if seen["api"] != "Bearer tok|quota" || seen["other"] != "|" {
		t.Errorf("Authorization|X-Goog-User-Project: to the API %q, elsewhere %q; want both to the API only", seen["api"], seen["other"])
	}
}

// TestQuotaProject checks where the quota project comes from: the
// environment, else the credentials file.
func TestQuotaProject(t *testing.T) {
	writeKeyFile(t, "http://127.0.0.1:1/token")
	for _, tc := range []struct{ env, want string }{
		{"", "quota-from-file"},
		{"quota-from-env", "quota-from-env"},
	} {
		t.Setenv(quotaProjectEnv, tc.env)
		_, got, err := googleTokens(newTransport())
		if err != nil || got != tc.want {
			t.Errorf("with %s=%q: quota project %q, %v; want %q", quotaProjectEnv, tc.env, got, err, tc.want)
		}
	}
}
